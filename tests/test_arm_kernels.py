"""The AArch64 conv kernels: which NEON instructions each layer gets, and that they are exact.

Every case is one quantized conv layer, cross-compiled for an Arm target. The fast tests
disassemble the module (``aarch64-linux-gnu-objdump``, from the cross toolchain) and require
the instructions its kernel was designed around; the slow ones run it in the emulated Pi's
Python under qemu as the target's core and require ONNX Runtime's outputs bit for bit, with
codes pushed to their clip limits (``make test-pi`` sets the emulated Pi up).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_lowering import _qcdq_layer, _scheduled_functions

from apprentice_hw.backends import compile_module, export_module, prepare_module
from apprentice_hw.compiler.runtime import run_module
from apprentice_hw.deploy.emulated_pi import EmulatedPi, default_dir
from apprentice_hw.hardware import get_target
from apprentice_hw.verify import run_onnxruntime_outputs

PI = EmulatedPi(default_dir())  # read at import, before the session moves the cache
OBJDUMP = "aarch64-linux-gnu-objdump"
QEMU_CPU = {"arm-a72": "cortex-a72", "arm-a76": "cortex-a76"}
LANE_SDOT = r"sdot\s+v\d+\.4s, v\d+\.16b, v\d+\.4b\[[0-3]\]"  # lane-indexed codes

# target, weight bits, activation bits, zero point, the kernel's telltale in TIR, instructions
CASES = {
    # codes <= 127 on a core without SDOT: one product per int16 lane, smlal, widened by saddlp
    "a72-w4a4-smlal": ("arm-a72", 4, 4, 0, "saddlp", ["smlal", "saddlp"]),
    # 8-bit codes: pairs of products per int16 lane, 16-bit mla
    "a72-w2a8-mla16": ("arm-a72", 2, 8, 0, "int16x32", [r"mla\s+v\d+\.8h"]),
    # 8-bit weights and codes: int16 sums are not proven; codes shifted to signed bytes, each
    # product exact in int16 (smull), pairs added into int32 lanes (sadalp), zero point 9
    "a72-w8a8-smull": ("arm-a72", 8, 8, 9, "smull", [r"smull2?\s+v\d+\.8h", r"sadalp"]),
    # a core with SDOT: codes <= 127 as they are (4-bit weights stored as int8: the target
    # prefers it; the codes of a pixel's input blocks from one vector load, lane-indexed
    # SDOT), or with 4-bit weights unpacked in registers (--kernel packed) ...
    "a76-w4a4-sdot": ("arm-a76", 4, 4, 0, "sdot", [LANE_SDOT]),
    "a76-w4a4-packed-sdot": ("arm-a76", 4, 4, 0, "sdot", [r"sdot\s+v\d+\.4s", r"usra\s"]),
    # ... and 8-bit codes shifted by -128 to signed bytes, zero point in the padding
    "a76-w8a8-sdot": ("arm-a76", 8, 8, 9, "sdot", [LANE_SDOT]),
    # an RGB 7x7 stride-2 stem, kernel columns folded into channels (21 codes per kernel
    # row in 6 blocks): smull + sadalp on the A72, SDOT on the A76
    "a72-stem-folded": ("arm-a72", 8, 8, 9, "smull", [r"smull2?\s+v\d+\.8h", r"sadalp"]),
    "a76-stem-folded": ("arm-a76", 8, 8, 9, "sdot", [LANE_SDOT]),
    # 2-bit weights (two's complement planes) and 2-bit codes on a core without SDOT:
    # bit-serial, and + cnt + uadalp on 16-bit counts, bit planes gathered by one multiply
    "a72-w2a2-bitserial": (
        "arm-a72",
        2,
        2,
        0,
        "uaddlp",
        [r"cnt\s+v\d+\.16b", r"uadalp\s+v\d+\.8h", r"ld1r\s"],
    ),
}


# the strategy a case's conv must get: the target's preference, or the one the case forces
STRATEGY = {"a76-w4a4-sdot": "int8", "a76-w8a8-sdot": "int8", "a76-w4a4-packed-sdot": "packed"}
FORCED = {"a76-w4a4-packed-sdot"}
# (input channels, kernel size, stride, padding) of the layer; others: (32, 3, 1, 1)
LAYERS = {"a72-stem-folded": (3, 7, 2, 3), "a76-stem-folded": (3, 7, 2, 3)}


def _layer_model(weight_bits: int, act_bits: int, zero_point: int, case: str = ""):
    in_ch, size, stride, pad = LAYERS.get(case, (32, 3, 1, 1))
    rng = np.random.default_rng(weight_bits * 10 + act_bits)
    high = (1 << (weight_bits - 1)) - 1
    weights = rng.integers(-high - 1, high + 1, size=(24, in_ch, size, size))
    conv = {"kernel_shape": [size, size], "pads": [pad] * 4, "strides": [stride] * 2}
    return _qcdq_layer("conv", weights, act_bits, zero_point=zero_point, conv=conv)


def _build(case: str, tmp_path: Path) -> tuple[object, Path, object]:
    target_name, weight_bits, act_bits, zero_point, telltale, _ = CASES[case]
    target = get_target(target_name)
    model = _layer_model(weight_bits, act_bits, zero_point, case)
    prepared = prepare_module(
        model, target, batch=1, kernel=STRATEGY.get(case) if case in FORCED else None
    )
    if case in STRATEGY:
        assert [layer.strategy for layer in prepared.layers] == [STRATEGY[case]]
    [conv_function] = [
        f for name, f in _scheduled_functions(prepared, target).items() if "conv2d_" in name
    ]
    assert telltale in conv_function.script()  # scheduled as designed, not left naive
    library = tmp_path / f"{case}.so"
    export_module(compile_module(prepared.mod, target, use_tuning=False), target, library)
    return model, library, prepared


@pytest.mark.parametrize("case", list(CASES))
def test_arm_conv_kernels_use_their_neon_instructions(case, tmp_path):
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} not installed (Debian's binutils-aarch64-linux-gnu)")
    _, library, _ = _build(case, tmp_path)
    listing = subprocess.run(
        [OBJDUMP, "-d", str(library)], capture_output=True, text=True, check=True
    ).stdout
    for instruction in CASES[case][5]:
        assert re.search(rf"\t{instruction}", listing), f"no {instruction} in {case}"


def test_neon_layers_get_the_lane_layout_their_codes_allow():
    """The lowering picks the lane layout and the proof for it: smlal lanes where codes fit a
    signed byte, pairs where 8-bit codes do not; SDOT cores take SDOT, no int16 sums."""
    for case, lane_inputs, chunked in (
        ("a72-w4a4-smlal", 1, True),
        ("a72-w2a8-mla16", 2, True),
        ("a72-w8a8-smull", 2, False),
        ("a76-w4a4-sdot", 2, False),
        ("a76-w8a8-sdot", 2, False),
    ):
        target_name, weight_bits, act_bits, zero_point, *_ = CASES[case]
        model = _layer_model(weight_bits, act_bits, zero_point)
        [layer] = prepare_module(model, get_target(target_name)).layers
        assert (layer.int16_chunk > 0, layer.int16_lane_inputs) == (chunked, lane_inputs), case


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_arm_conv_kernels_are_exact_on_the_emulated_core(case, tmp_path):
    if not PI.ready:
        message = f"no emulated Pi in {PI.folder}; 'make test-pi' sets it up"
        if os.environ.get("APPRENTICE_HW_REQUIRE_PI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    model, library, _ = _build(case, tmp_path)
    # codes up to 30 x 16 = 480: most 2- and 4-bit codes and about half the 8-bit ones clip
    in_ch = LAYERS.get(case, (32,))[0]
    inputs = np.random.default_rng(3).random((1, in_ch, 9, 9), dtype=np.float32) * 30
    expected = run_onnxruntime_outputs(model, inputs)[0]
    # the static qemu the emulated Pi runs, as this target's core (SDOT faults on an A72)
    outputs = _run_on_emulated_core(library, inputs, QEMU_CPU[CASES[case][0]], tmp_path)
    np.testing.assert_array_equal(outputs, expected)


def _requantized_conv_model(weight_bits: int):
    """The 8-bit-code conv of ``a76-w8a8-sdot`` with its output quantized to 8-bit codes,
    weight scales that are not powers of two: the codes come from the accumulators by an
    integer line (float32 cannot place 255 levels of accumulators this wide)."""
    from onnx import TensorProto, helper, numpy_helper

    model = _layer_model(weight_bits, 8, 9)
    graph = model.graph
    [scales] = [init for init in graph.initializer if init.name == "ws"]
    values = np.random.default_rng(11).uniform(0.002, 0.01, 24).astype(np.float32)
    scales.CopyFrom(numpy_helper.from_array(values, "ws"))
    graph.initializer.extend([numpy_helper.from_array(np.array(0.0371, np.float32), "ys"),
                              numpy_helper.from_array(np.array(131, np.uint8), "yz")])  # fmt: skip
    quantize = helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"])
    graph.node.extend([quantize, helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["z"])])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    return model


def _run_on_emulated_core(library: Path, inputs: np.ndarray, qemu_cpu: str, folder: Path):
    """The module's outputs for ``inputs`` in the emulated Pi's Python, one thread."""
    np.save(folder / "inputs.npy", inputs)
    script = (
        "import numpy as np, tvm\n"
        "from tvm.runtime.vm import VirtualMachine\n"
        f"vm = VirtualMachine(tvm.runtime.load_module('{library}'), tvm.cpu())\n"
        f"x = tvm.runtime.tensor(np.load('{folder / 'inputs.npy'}'))\n"
        f"np.save('{folder / 'outputs.npy'}', vm['main'](x).numpy())\n"
    )
    root = PI.folder / "root"
    command = ["qemu-aarch64-static", "-cpu", qemu_cpu, "-L", str(root),
               str(root / "usr/bin/python3.11"), "-c", script]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PI.folder / "site"), "TVM_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(folder / "outputs.npy")


@pytest.mark.parametrize(
    "weight_bits, dtype",
    [pytest.param(8, "int32", marks=pytest.mark.slow), (4, "int16")],  # 22 s each under qemu
)
def test_8_bit_requantization_runs_as_sqdmulh_on_aarch64(weight_bits, dtype, tmp_path):
    """AArch64 targets requantize 8-bit codes as the high half of 32 x 32-bit products
    (``sqdmulh``, four lanes per vector), the zero and clip in int16 where the layer's range
    allows (4-bit weights here) and in int32 where not (8-bit weights); x86 keeps the 64-bit
    line. The A76 module is exact on the emulated core: its codes are the x86 module's, bit
    for bit, with the accumulators pushed to both clip limits."""
    model = _requantized_conv_model(weight_bits)
    libraries = {}
    for name in ("arm-a76", "x86-host"):
        target = get_target(name)
        prepared = prepare_module(model, target)
        kind = f"integer sqdmulh {dtype}" if name == "arm-a76" else "integer"
        assert [layer.requantization for layer in prepared.layers] == [kind], name
        libraries[name] = tmp_path / f"{name}.so"
        export_module(compile_module(prepared.mod, target, use_tuning=False), target,
                      libraries[name])  # fmt: skip
    if shutil.which(OBJDUMP) is not None:
        listing = subprocess.run([OBJDUMP, "-d", str(libraries["arm-a76"])],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert re.search(r"\tsqdmulh\s+v\d+\.4s", listing)
    if not PI.ready:
        pytest.skip(f"no emulated Pi in {PI.folder}; 'make test-pi' sets it up")
    inputs = np.random.default_rng(4).random((1, 32, 9, 9), dtype=np.float32) * 16
    expected = run_module(libraries["x86-host"], inputs)
    codes = _run_on_emulated_core(libraries["arm-a76"], inputs, "cortex-a76", tmp_path)
    assert len(np.unique(expected)) > 50  # many levels, both clip limits
    np.testing.assert_array_equal(codes, expected)
