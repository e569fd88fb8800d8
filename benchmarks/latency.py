"""Latency: apprentice-hw against the runtimes a user already has, each in its own process.

For ResNet-20 (32x32, 10 classes) and ResNet-18 (224x224, 1000 classes), batch 1 and 8, all on
the same fp32 network from the zoo (untrained; latency does not depend on weight values):

* ONNX Runtime on the fp32 model (all graph optimizations, one intra-op thread per core);
* ONNX Runtime on its **own** int8 model: ``onnxruntime.quantization.quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations) calibrated on the images the students are
  calibrated on: what a user who wants a fast quantized CNN on x86 runs first;
* OpenVINO (``pip install 'apprentice-hw[bench]'``) on the fp32 file and on that int8 QDQ file
  (latency hint, one thread per core);
* TVM's own fp32 pipeline, untuned (context: what ``tvm.compile`` gives);
* apprentice-hw W8A8, W4A4, W2A8 and W2A2 students (calibrated, untrained), untuned (default
  schedules) and pre-tuned (the knob table shipped in ``targets/tuned/x86-host/<cpu>.json``
  where this CPU model has one; the user's own tuning cache is not read).

**Each runtime in its own process.** ONNX Runtime's and OpenVINO's worker threads keep spinning
after a call returns, and TVM's pool does too: whatever runs next in the same process loses the
cores (a TVM module timed between ORT calls looked 2.5x slower than alone, design notes §7).
So phase 1 (this process) exports, quantizes and compiles everything to files, and phase 2
starts a **fresh process per runtime per round** (``timing.py``, which imports numpy and the
one runtime it times, no torch or compiler): it loads one model, warms up, times ``RUNS`` runs
of ``NUMBER`` calls and exits. The rounds alternate between the runtimes of one
model and batch (``ROUNDS`` of them), so a slow spell of the machine hits all alike. Each
number is the median over every round's runs (``ROUNDS x RUNS`` = 30); the spread is the
interquartile range. TVM's untuned fp32, over 50x slower, gets one round of 3 single calls.

Results: ``benchmarks/results/latency.json`` and a Markdown table with each time's ratio to
the best int8 peer (the faster of ONNX Runtime int8 and OpenVINO int8; below 1 = faster) and to
ONNX Runtime fp32.

    python benchmarks/latency.py                       # everything (about 35 minutes here)
    python benchmarks/latency.py --models resnet20 --batches 1 --profile
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from timing import summary  # beside this script (python puts its folder on the path)

from apprentice_hw.atomic import write_json
from apprentice_hw.export import export_qcdq
from apprentice_hw.hardware import cpu_model_name
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers, QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained

RESULTS = Path(__file__).parent / "results" / "latency.json"
MODELS = {"resnet20": (32, 10), "resnet18": (224, 1000)}  # input size, classes
STUDENTS = {"W8A8": (8, 8), "W4A4": (4, 4), "W2A8": (2, 8), "W2A2": (2, 2)}
CALIBRATION_IMAGES = 32
ROUNDS = 5  # fresh processes per runtime, alternating between the runtimes of one group
RUNS = 6  # timed runs per round
NUMBER = {1: 10, 8: 3}  # calls averaged per timed run, by batch
SLOW_CALL_S = 0.2  # slower per call than this (TVM's naive fp32): one round of 3 single calls
BUILDS = (("untuned", False), ("pretuned", True))  # apprentice-hw variant, use_tuning
PEERS_INT8 = ("onnxruntime int8", "openvino int8")


# -- phase 1: export, quantize and compile ------------------------------------------------
def calibration_images(name: str) -> torch.Tensor:
    """The images every quantized model of ``name`` is calibrated on (seeded)."""
    size, _ = MODELS[name]
    torch.manual_seed(0)
    return torch.rand(64, 3, size, size)[:CALIBRATION_IMAGES]


def student_onnx(name: str, label: str, tmp: Path) -> onnx.ModelProto:
    """The calibrated, untrained ``label`` student of ``name`` as QCDQ ONNX (also pretune.py)."""
    _, classes = MODELS[name]
    images = calibration_images(name)
    weight_bits, act_bits = STUDENTS[label]
    layers = QuantLayers.from_bits(weight_bits, act_bits, 8, "per-channel")
    student = build_model(ModelSpec(name), layers, 3, classes)
    calibrate_untrained(student, images, batch_size=16)
    return export_qcdq(student, images[:1], tmp / f"{name}_{label}.onnx")


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """``model`` with its input and output batch dimension fixed to ``batch``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in [*fixed.graph.input, *fixed.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    return fixed


def export_float(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> onnx.ModelProto:
    model.eval()
    torch.onnx.export(
        model, (sample,), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    return onnx.load(str(path))


def quantize_with_onnxruntime(fp32_path: Path, images: torch.Tensor, out: Path) -> onnx.ModelProto:
    """ONNX Runtime's own int8 model of the fp32 network: what its documentation recommends for
    CPUs (QDQ, per-channel int8 weights, uint8 activations), calibrated on ``images``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": image[None].numpy()} for image in images])

        def get_next(self):
            return next(self.batches, None)

    prepared = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    quantize_static(
        str(prepared), str(out), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    return onnx.load(str(out))


def compile_default_tvm(model: onnx.ModelProto, batch: int):
    """The fp32 model through TVM's own ONNX import and default pipeline, untuned."""
    import tvm

    from apprentice_hw.compiler.tvm_build import import_onnx
    from apprentice_hw.hardware import get_target

    target = get_target("x86-host").tvm_target()
    return tvm.compile(import_onnx(model, batch), target)


def build_cases(name: str, batches: list[int], tmp: Path) -> list[dict]:
    """Every runtime of ``name`` as a file to time: ONNX models, ``.so`` modules."""
    from apprentice_hw.backends import compile_module, prepare_module
    from apprentice_hw.hardware import get_target

    size, classes = MODELS[name]
    torch.manual_seed(0)
    target = get_target("x86-host")
    fp32 = build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()
    fp32_path = tmp / f"{name}_fp32.onnx"
    fp32_onnx = export_float(fp32, torch.rand(1, 3, size, size), fp32_path)
    int8_onnx = quantize_with_onnxruntime(fp32_path, calibration_images(name),
                                          tmp / f"{name}_ort_int8.onnx")  # fmt: skip
    students = {label: student_onnx(name, label, tmp) for label in STUDENTS}
    cases = []

    def add(batch: int, runtime: str, precision: str, path: Path, **extra) -> None:
        cases.append({"model": name, "input": size, "batch": batch, "runtime": runtime,
                      "precision": precision, "path": str(path), **extra})  # fmt: skip
        print(f"built {name} b{batch} {runtime} {precision}", flush=True)

    for batch in batches:
        for label, model in (("fp32", fp32_onnx), ("int8", int8_onnx)):
            path = tmp / f"{name}_{label}_b{batch}.onnx"
            onnx.save(with_batch(model, batch), str(path))
            add(batch, "onnxruntime", label, path)
            add(batch, "openvino", label, path)
        start = time.perf_counter()
        library = tmp / f"{name}_fp32_b{batch}_tvm.so"
        compile_default_tvm(fp32_onnx, batch).export_library(str(library))
        add(batch, "tvm-default", "fp32", library, compile_s=_since(start))
        for label, exported in students.items():
            for variant, tuned in BUILDS:
                start = time.perf_counter()
                prepared = prepare_module(exported, target, batch=batch)
                library = tmp / f"{name}_{label}_b{batch}_{variant}.so"
                compile_module(prepared.mod, target, use_tuning=tuned).export_library(str(library))
                strategies = sorted({layer.strategy for layer in prepared.layers})
                add(batch, f"apprentice-hw {variant}", label, library, compile_s=_since(start),
                    strategies=strategies)  # fmt: skip
    return cases


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


# -- phase 2: one fresh process per runtime and round (timing.py, which imports only it) --
def _in_fresh_process(case: dict, runs: int, number: int) -> list[float]:
    command = [sys.executable, str(Path(__file__).with_name("timing.py")), json.dumps(case),
               str(runs), str(number)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"timing {case['runtime']} {case['precision']} failed: "
                           f"{done.stderr.strip()[-2000:]}")  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_tvm(path: str, batch_input: np.ndarray, top: int = 8) -> list[dict]:
    """The ``top`` slowest functions of one module: where its time goes (own process)."""
    import tvm
    from tvm import relax

    from apprentice_hw.compiler.runtime import profile_functions

    vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    ranked = profile_functions(vm, tvm.runtime.tensor(batch_input))
    return [
        {"function": f.name[:80], "ms": round(f.ms_per_inference, 4),
         "calls": f.calls_per_inference}
        for f in ranked[:top]
    ]  # fmt: skip


def time_group(cases: list[dict]) -> None:
    """Time the cases of one model and batch in alternating rounds of fresh processes."""
    batch = cases[0]["batch"]
    runs: list[list[float]] = [[] for _ in cases]
    numbers = [NUMBER[batch]] * len(cases)
    slow = [False] * len(cases)
    for round_index in range(ROUNDS):
        for index, case in enumerate(cases):
            if slow[index]:
                continue
            runs[index] += _in_fresh_process(case, RUNS, numbers[index])
            if round_index == 0 and np.median(runs[index]) > SLOW_CALL_S:
                slow[index], numbers[index] = True, 1  # TVM's naive fp32: 3 single calls
                runs[index] = _in_fresh_process(case, 3, 1)
    for case, case_runs, number in zip(cases, runs, numbers, strict=True):
        case.update(summary(case_runs, number))
        print(f"{case['model']} b{batch} {case['runtime']:<24} {case['precision']:<6} "
              f"{case['median_ms']:9.3f} ms (IQR {case['iqr_ms']:.3f})", flush=True)  # fmt: skip


# -- results ---------------------------------------------------------------------------------
def _label(row: dict) -> str:
    return f"{row['runtime']} {row['precision']}"


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's time over ORT fp32's and over the best int8 peer's (same model and batch)."""
    groups: dict[tuple, dict[str, float]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["batch"]), {})[_label(row)] = row["median_ms"]
    for row in rows:
        times = groups[(row["model"], row["batch"])]
        best_int8 = min(times[peer] for peer in PEERS_INT8)
        row.pop("path", None)
        row["vs_onnxruntime_fp32"] = round(row["median_ms"] / times["onnxruntime fp32"], 3)
        row["vs_best_int8_peer"] = round(row["median_ms"] / best_int8, 3)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | batch | runtime | precision | median ms | IQR ms | vs best int8 peer | "
        "vs ORT fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} {r['input']}x{r['input']} | {r['batch']} | {r['runtime']} "
            f"| {r['precision']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} "
            f"| {r['vs_best_int8_peer']:.2f} | {r['vs_onnxruntime_fp32']:.2f} |"
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    found = {}
    for package in ("onnxruntime", "openvino", "apache-tvm", "torch", "brevitas"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--profile", action="store_true", help="Record each build's slowest functions too."
    )
    args = parser.parse_args()

    import openvino  # noqa: F401 - fail now, not after the builds: pip install '.[bench]'

    from apprentice_hw.compiler import tuning
    from apprentice_hw.hardware import get_target
    from apprentice_hw.torch_backend import configure_torch

    configure_torch()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["APPRENTICE_HW_CACHE"] = str(Path(tmp) / "cache")  # shipped knobs only
        rows = []
        for name in args.models:
            cases = build_cases(name, args.batches, Path(tmp))
            for batch in args.batches:
                group = [case for case in cases if case["batch"] == batch]
                time_group(group)
                if args.profile:
                    size = group[0]["input"]
                    sample = np.random.default_rng(0).random((batch, 3, size, size), np.float32)
                    for case in group:
                        if case["runtime"].startswith("apprentice-hw"):
                            case["profile"] = profile_tvm(case["path"], sample)
            rows += with_ratios(cases)
    target = get_target("x86-host")
    shipped = [str(p.relative_to(p.parents[3])) for p in tuning.shipped_files(target)]
    result = {
        "benchmark": "latency",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu": cpu_model_name(),
            "llvm_cpu": tuning.cpu_key(target.tvm_target()),
            "cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
        },
        "versions": _versions(),
        "method": "one fresh process per runtime per round; rounds alternate between runtimes",
        "pretuned_knobs": shipped,
        "rounds": ROUNDS,
        "runs_per_round": RUNS,
        "rows": rows,
    }
    write_json(args.out, result)
    print(markdown(rows))


if __name__ == "__main__":
    main()
