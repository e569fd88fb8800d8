"""``verify``: one set of inputs through Brevitas, ONNX Runtime and the compiled module.

Every difference is counted in output quantization steps (one step = one integer level of the
output quantizer). The compiled module computes its quantized layers in exact integer
arithmetic and the requantization between them in float64 (``lowering/precision.py``). The
reference is the Brevitas model in exact arithmetic: a float64 copy that holds the float32
model's own quantization scales and weight codes (``brevitas_outputs``), i.e. the trained
integer codes times float32 scales with no rounding error that matters. Against it the module
is expected to be identical; the check passes when every input is within ``tolerance`` steps
on every output and the top-1 agreement is at least 99%.

The float32 evaluations (Brevitas, ONNX Runtime) are reported beside it. They move an
intermediate code by one level whenever a value lands within float32 noise of a rounding
boundary, and a deep network carries that to the output: on deep students 1-30% of inputs
differ from the exact model by a step, a few by tens of steps (one flipped 2- or 4-bit code
carried through 20 layers). So a bare ONNX file, whose only reference is ONNX Runtime in
float32, passes when at least 99% of inputs are within ``tolerance`` steps and the top-1
agreement is at least 99%; the largest difference is always reported.

On a failure the model is rebuilt with every activation tensor as an extra output, and ONNX
Runtime and the compiled module are compared layer by layer, in graph order, to name the first
layer that diverges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from apprentice_hw.artifacts import INPUTS_FILE, MODULE_FILE, QCDQ_FILE
from apprentice_hw.backends import backend_for, compile_module, prepare_module
from apprentice_hw.errors import UserError
from apprentice_hw.export.onnx_export import output_quant_step
from apprentice_hw.hardware import Target
from apprentice_hw.output_steps import (
    OutputComparison,
    compare_outputs,
    max_steps,
    steps_per_sample,
)

DEFAULT_SAMPLES = 100
MIN_OPSET = 10  # QuantizeLinear / DequantizeLinear exist from opset 10 on
MAX_INPUT_BYTES = 2**30  # random verification inputs: 1 GiB (ResNet-18 at 224: ~1700 images)
MIN_AGREEMENT = 0.99
LABELS = {
    "compiled_vs_brevitas": "compiled vs Brevitas (exact)",
    "compiled_vs_brevitas_float32": "compiled vs Brevitas (float32)",
    "compiled_vs_onnxruntime": "compiled vs ONNX Runtime",
    "onnxruntime_vs_brevitas": "ONNX Runtime vs Brevitas (float32)",
}
WEIGHT_QUANTIZER = "weight_quant.tensor_quant"
ACT_QUANT_SUFFIX = "/act_quant/export_handler/QuantizeLinear"


@dataclass(frozen=True)
class BrevitasOutputs:
    """A Brevitas model's outputs on the verification inputs, in float32 and float64.

    ``float64`` is the model computed in exact arithmetic with its own float32 quantization
    scales (see ``brevitas_outputs``).
    """

    float32: np.ndarray
    float64: np.ndarray


def _quantizers(model) -> dict[str, Any]:
    """name -> every rescaling integer quantizer (weights and activations) in ``model``."""
    from brevitas.core.quant.int import RescalingIntQuant

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, RescalingIntQuant)
    }


@dataclass
class _HeldQuantization:
    """What the float32 model's quantizers computed, to be reused by the float64 copy."""

    scales: dict[str, Any]  # quantizer -> its scale, where the same on every input
    weight_codes: dict[str, Any]  # quantizer -> integer codes, where its input never changes


def _float32_quantization(model, inputs) -> tuple[np.ndarray, _HeldQuantization]:
    """``model``'s float32 outputs, and the scales and weight codes its quantizers used.

    In eval mode weight scales come from the weights and activation scales from trained
    parameters, so they do not depend on the input; a scale that does (runtime statistics) is
    not held and is recomputed in float64. Weight quantizers' integer codes are held too.
    """
    import torch

    from apprentice_hw.distill.trainer import predict

    scales: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    varying: set[str] = set()  # recorded values that changed between calls

    def record(store, name, value):
        if name not in store:
            store[name] = value.detach().clone()
        elif not torch.equal(store[name], value):
            varying.add(name)

    hooks = []
    for name, quantizer in _quantizers(model).items():
        hooks.append(quantizer.scaling_impl.register_forward_hook(
            lambda _m, _i, out, name=name: record(scales, name, out)
        ))  # fmt: skip
        if name.endswith(WEIGHT_QUANTIZER):  # activations' outputs would cost memory per input
            hooks.append(quantizer.register_forward_hook(
                lambda _m, _i, out, name=name: record(outputs, name, out[0] / out[1])
            ))  # fmt: skip
    try:
        with torch.no_grad():
            logits = predict(model, inputs).numpy()
    finally:
        for hook in hooks:
            hook.remove()

    held_scales = {name: v for name, v in scales.items() if name not in varying}
    codes = {
        name: torch.round(v.double())
        for name, v in outputs.items()
        if name in held_scales and name not in varying
    }
    return logits, _HeldQuantization(held_scales, codes)


def _hold_quantization(model, held: _HeldQuantization) -> list:
    """Make ``model``'s (float64) quantizers use the held float32 scales and weight codes."""
    hooks = []
    for name, quantizer in _quantizers(model).items():
        scale = held.scales.get(name)
        if scale is None:
            continue
        hooks.append(quantizer.scaling_impl.register_forward_hook(
            lambda _m, _i, _out, s=scale: s.double()
        ))  # fmt: skip
        codes = held.weight_codes.get(name)
        if codes is not None:
            hooks.append(quantizer.register_forward_hook(
                lambda _m, _i, out, c=codes, s=scale: (c * s.double(), *out[1:])
            ))  # fmt: skip
    return hooks


def brevitas_outputs(model, inputs) -> BrevitasOutputs:
    """Evaluate ``model`` (a torch module) on ``inputs`` in float32 and in exact arithmetic.

    The exact evaluation runs a float64 copy whose quantizers hold what the float32 model
    computed: its scales and its weights' integer codes. Brevitas derives a weight scale from
    the weights (max / 127) and an activation scale from a parameter (value / 255); the same
    divisions in float64 give scales 1e-8 off the float32 ones that training, export and the
    compiled module use, and ``round(w / s)`` in float64 moves a weight code now and then.
    Either moves codes at rounding boundaries just like float32 noise. With them held, float64
    computes the trained quantized model itself: integer codes times float32 scales,
    accumulated without rounding error that matters.
    """
    import copy

    import torch

    from apprentice_hw.distill.trainer import predict

    single, held = _float32_quantization(model, inputs)
    double = copy.deepcopy(model).double()
    hooks = _hold_quantization(double, held)
    try:
        with torch.no_grad():
            exact = predict(double, inputs.double()).float().numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return BrevitasOutputs(single, exact)


@dataclass(frozen=True)
class Divergence:
    """The first activation tensor, in graph order, where two runtimes disagree."""

    layer: str
    tensor: str
    max_diff_steps: float  # in steps of that tensor's own quantizer

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass
class VerifyResult:
    samples: int
    output_step: float
    tolerance_steps: float
    comparisons: dict[str, OutputComparison]
    module: str  # which compiled module ran
    layers: list[dict] = field(default_factory=list)
    first_divergence: Divergence | None = None
    compiled_outputs: np.ndarray | None = None  # not serialized: the raw outputs, for callers
    gate_steps_per_sample: np.ndarray | None = None  # not serialized: per-input max difference

    @property
    def gate(self) -> str:
        """The comparison that decides pass or fail."""
        return "compiled_vs_brevitas" if "compiled_vs_brevitas" in self.comparisons else (
            "compiled_vs_onnxruntime"
        )  # fmt: skip

    @property
    def passed(self) -> bool:
        """Exact reference: every input within tolerance; float32 reference: 99% of inputs."""
        check = self.comparisons[self.gate]
        within = float(np.mean(self.gate_steps_per_sample <= self.tolerance_steps))
        needed = 1.0 if self.gate == "compiled_vs_brevitas" else MIN_AGREEMENT
        return within >= needed and check.prediction_agreement >= MIN_AGREEMENT

    def summary(self) -> str:
        """Human-readable lines for the terminal."""
        verdict = "PASS" if self.passed else "FAIL"
        lines = [
            f"verify: {verdict} ({self.samples} inputs, output step {self.output_step:.6g}, "
            f"tolerance {self.tolerance_steps:g} step)",
            f"  module: {self.module}",
        ]
        for name, check in self.comparisons.items():
            label = LABELS.get(name, name) + (" (gate)" if name == self.gate else "")
            lines.append(
                f"  {label:<44} max {check.max_diff_steps:.2f} steps, "
                f"{check.fraction_exact:.1%} identical, {check.fraction_within_one_step:.1%} "
                f"within 1 step, top-1 agreement "
                f"{check.prediction_agreement:.1%}"
            )
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer["strategy"]] = counts.get(layer["strategy"], 0) + 1
        kinds = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        lines.append(f"  layers: {len(self.layers)} ({kinds})")
        if self.first_divergence is not None:
            d = self.first_divergence
            lines.append(
                f"  first divergence: layer {d.layer} (tensor {d.tensor}), "
                f"max {d.max_diff_steps:g} steps of its quantizer"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "gate": self.gate,
            "samples": self.samples,
            "output_step": self.output_step,
            "tolerance_steps": self.tolerance_steps,
            "module": self.module,
            "comparisons": {k: v.to_dict() for k, v in self.comparisons.items()},
            "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
            "layers": self.layers,
        }


def run_module_outputs(executable, inputs: np.ndarray) -> list[np.ndarray]:
    """Run a (possibly multi-output) batch-1 module over ``inputs``; one array per output."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    per_sample = []
    for sample in inputs:
        result = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(sample[None])))
        items = list(result) if not hasattr(result, "numpy") else [result]
        per_sample.append([item.numpy() for item in items])
    return [np.concatenate(parts) for parts in zip(*per_sample, strict=True)]


def run_onnxruntime_outputs(model: onnx.ModelProto, inputs: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    from apprentice_hw.export.onnx_export import reference_session_options
    from apprentice_hw.lowering import graph_input

    session = ort.InferenceSession(
        model.SerializeToString(), reference_session_options(), ["CPUExecutionProvider"]
    )
    return session.run(None, {graph_input(model).name: inputs.astype(np.float32)})


def activation_probes(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[tuple[str, str, float]]]:
    """A copy of ``model`` that also outputs every dequantized activation.

    Returns the copy and, per extra output, (layer name, tensor name, quantization step).
    """
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    graph = probed.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    probes = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] in initializers:
            continue
        scale = initializers.get(node.input[1])
        if scale is None or numpy_helper.to_array(scale).size != 1:
            continue
        source = producers.get(node.input[0])
        while source is not None and source.op_type not in ("QuantizeLinear",):
            source = producers.get(source.input[0]) if source.input else None
        layer = (source.name if source is not None else node.name) or node.output[0]
        layer = layer.removesuffix(ACT_QUANT_SUFFIX) or layer
        step = float(numpy_helper.to_array(scale).reshape(-1)[0])
        probes.append((layer, node.output[0], step))
        graph.output.append(helper.make_empty_tensor_value_info(node.output[0]))
    return probed, probes


def locate_divergence(
    model: onnx.ModelProto, inputs: np.ndarray, target: Target, kernel: str | None
) -> Divergence | None:
    """Compare every activation of ONNX Runtime and the compiled module; first bad one wins."""
    from apprentice_hw.lowering import canonicalize

    probed, probes = activation_probes(canonicalize(model))
    expected = run_onnxruntime_outputs(probed, inputs)[1:]
    prepared = prepare_module(probed, target, batch=1, kernel=kernel)
    actual = run_module_outputs(compile_module(prepared.mod, target), inputs)[1:]
    differing = []
    for (layer, tensor, step), ref, got in zip(probes, expected, actual, strict=True):
        steps = max_steps(ref[None], got[None], step)
        if steps > 1.0:
            return Divergence(layer, tensor, steps)
        if steps > 0 and not differing:
            differing.append(Divergence(layer, tensor, steps))
    return differing[0] if differing else None


def verify_model(
    model: onnx.ModelProto,
    inputs: np.ndarray,
    target: Target,
    kernel: str | None = None,
    brevitas: BrevitasOutputs | None = None,
    tolerance: float = 1.0,
    module_path: Path | None = None,
) -> VerifyResult:
    """Compare Brevitas (when given), ONNX Runtime and the integer-lowered module on ``inputs``."""
    import tvm

    from apprentice_hw.lowering import canonicalize

    canonical = canonicalize(model)  # QONNX runs in ONNX Runtime only after conversion
    step = output_quant_step(canonical)
    ort_out = run_onnxruntime_outputs(canonical, inputs)[0]
    prepared = prepare_module(model, target, batch=1, kernel=kernel)
    if module_path is not None:
        executable, module = tvm.runtime.load_module(str(module_path)), str(module_path)
    else:
        executable, module = compile_module(prepared.mod, target), f"compiled for {target.name}"
    compiled = run_module_outputs(executable, inputs)[0]
    comparisons = {"compiled_vs_onnxruntime": compare_outputs(ort_out, compiled, step)}
    if brevitas is not None:
        comparisons["compiled_vs_brevitas"] = compare_outputs(brevitas.float64, compiled, step)
        comparisons["compiled_vs_brevitas_float32"] = compare_outputs(
            brevitas.float32, compiled, step
        )
        comparisons["onnxruntime_vs_brevitas"] = compare_outputs(brevitas.float32, ort_out, step)
    result = VerifyResult(
        samples=len(inputs), output_step=step, tolerance_steps=tolerance,
        comparisons=comparisons, module=module,
        layers=[layer.to_dict() for layer in prepared.layers], compiled_outputs=compiled,
    )  # fmt: skip
    gate_reference = brevitas.float64 if brevitas is not None else ort_out
    result.gate_steps_per_sample = steps_per_sample(gate_reference, compiled, step)
    if not result.passed:
        result.first_divergence = locate_divergence(model, inputs, target, kernel)
    return result


def float_output_hint(error: Exception) -> str:
    """What to do about a model whose output is float (no output quantizer), or nothing."""
    if "DequantizeLinear" not in str(error):
        return ""
    return (
        "; end the model with an output quantizer (Brevitas: a QuantIdentity or QuantLinear "
        "with an output quant; ONNX Runtime's quantize_static quantizes the output) so outputs "
        "can be compared in steps"
    )


def load_inputs(path: Path | None, shape: tuple[int, ...], samples: int, seed: int) -> np.ndarray:
    """Inputs from a ``.npy`` file, or seeded uniform [0, 1) images of the model's shape."""
    if path is None:
        image_bytes = 4 * int(np.prod(shape[1:]))
        if samples * image_bytes > MAX_INPUT_BYTES:
            most = max(1, MAX_INPUT_BYTES // image_bytes)
            raise UserError(
                f"--samples {samples} would need {samples * image_bytes / 2**30:.1f} GiB of "
                f"random inputs for this model; use at most {most}"
            )
        return np.random.default_rng(seed).random((samples, *shape[1:]), dtype=np.float32)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read inputs from {path}: {exc}; pass a .npy array") from exc
    if tuple(array.shape[1:]) != tuple(shape[1:]):
        raise UserError(
            f"inputs in {path} have shape {array.shape}; the model wants (N, "
            f"{', '.join(str(d) for d in shape[1:])})"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise UserError(f"inputs in {path} are {array.dtype}, not numbers; pass float pixels")
    if not np.all(np.isfinite(array)):
        raise UserError(f"inputs in {path} contain NaN or infinite values; pass finite pixels")
    if len(array) == 0:
        raise UserError(f"inputs in {path} hold no images (shape {array.shape}); pass at least one")
    return array[:samples].astype(np.float32)


@dataclass
class BuildInputs:
    """What a build directory provides for verification."""

    model: onnx.ModelProto
    inputs: np.ndarray
    brevitas: BrevitasOutputs | None
    target_name: str
    module_path: Path | None


def read_build(build_dir: Path, samples: int) -> BuildInputs:
    """The QCDQ model, test images and the Brevitas student's outputs from a build directory."""
    from apprentice_hw.build_dir import is_compiled_build, load_student, read_manifest
    from apprentice_hw.compiler.tvm_build import input_shape

    manifest = read_manifest(build_dir)
    model = load_onnx(build_dir / QCDQ_FILE)
    if is_compiled_build(manifest):  # its check inputs; ONNX Runtime is the reference
        inputs = load_inputs(build_dir / INPUTS_FILE, input_shape(model, 1), samples, seed=0)
        return BuildInputs(model, inputs, None, manifest["target"]["name"],
                           build_dir / MODULE_FILE)  # fmt: skip
    student, data = load_student(build_dir)
    inputs = data.test_x[:samples]
    module = build_dir / MODULE_FILE
    outputs = brevitas_outputs(student, inputs)
    return BuildInputs(model, inputs.numpy(), outputs, manifest["target"]["name"], module)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file, with a one-line error for anything unreadable."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError as exc:
        raise UserError(f"{path} does not exist") from exc
    except Exception as exc:  # protobuf and the checker raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a valid ONNX model ({first})") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise UserError(
            f"{path} uses ONNX opset {opset}; apprentice-hw reads opsets {MIN_OPSET} to {newest}: "
            "export the model again with an opset in that range (e.g. opset_version=17)"
        )
    return model


def run_verify(
    path: Path,
    samples: int = DEFAULT_SAMPLES,
    inputs_path: Path | None = None,
    target_name: str | None = None,
    kernel: str | None = None,
    tolerance: float = 1.0,
) -> VerifyResult:
    """The ``verify`` command: a build directory or an ONNX file."""
    import math

    from apprentice_hw.compiler.tvm_build import input_shape
    from apprentice_hw.hardware import get_target, host_target_name, host_twin
    from apprentice_hw.lowering import KERNEL_STRATEGIES, canonicalize

    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise UserError(f"--tolerance must be a number of output steps >= 0, got {tolerance}")
    if kernel is not None:
        KERNEL_STRATEGIES.get(kernel)
    if path.is_dir():
        if inputs_path is not None:
            raise UserError(
                "--inputs goes with an .onnx file; a build directory is verified on its own "
                "test images"
            )
        build = read_build(path, samples)
        target = get_target(target_name or build.target_name)
        backend_for(target).check_target_file(target)
        use_built = (
            target.runs_on_this_machine and target_name is None and kernel is None
            and build.module_path is not None and build.module_path.exists()
        )  # fmt: skip
        if not target.runs_on_this_machine:
            target = host_twin(target)
        return verify_model(
            build.model, build.inputs, target, kernel, build.brevitas, tolerance,
            module_path=build.module_path if use_built else None,
        )  # fmt: skip
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a build directory or an .onnx file")
    model = load_onnx(path)
    target = get_target(target_name or host_target_name())
    backend_for(target).check_target_file(target)
    if not target.runs_on_this_machine:
        target = host_twin(target)
    try:
        canonical = canonicalize(model)
        shape = input_shape(canonical, 1)
        output_quant_step(canonical)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}{float_output_hint(exc)}") from exc
    inputs = load_inputs(inputs_path, shape, samples, seed=0)
    return verify_model(model, inputs, target, kernel, None, tolerance)
