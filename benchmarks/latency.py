"""Latency: apprentice-hw integer builds against ONNX Runtime and TVM on this CPU, in one run.

For ResNet-20 (32x32, 10 classes) and ResNet-18 (224x224, 1000 classes), batch 1 and 8:

* ONNX Runtime on the fp32 model (default session options: all graph optimizations, one
  intra-op thread per core),
* ONNX Runtime on each student's QCDQ export (the same file apprentice-hw compiles; ORT fuses
  the QDQ pairs into its int8 kernels),
* TVM on the fp32 model with its default CPU pipeline (what ``tvm.compile`` gives untuned),
* apprentice-hw builds of the W2A8, W4A4 and W2A2 (ternary weights, 2-bit activations)
  students, untuned (default schedules) and pre-tuned (the knob table shipped in
  ``targets/tuned/x86-host/<cpu>.json`` by ``pretune.py``, where this CPU model has one; the
  user's own tuning cache is not read).

Two phases. This process exports and compiles everything to shared libraries; a fresh Python
process then loads them and times them. Timing right after compiling in the same process was
measured 0.61 ms where the same ``.so`` loaded fresh ran 0.46 ms (ResNet-20 W4A4,
2026-11-25): what a long compile leaves behind (heap, threads) distorts small kernels. In the
timing process every runtime of one model and batch is timed in ``ROUNDS`` interleaved rounds
of ``REPEATS // ROUNDS`` runs, so a slow spell of the machine hits all of them alike. Each
number is the median of ``REPEATS`` (30) timed runs after warm-up, each run averaging
``NUMBER`` calls; the spread is the interquartile range. TVM's untuned fp32 baseline, over 100x
slower, gets 5 single-call runs where one call takes more than 0.2 s (ResNet-18).

Students are untrained but calibrated (BatchNorm statistics and activation scales from random
images): latency does not depend on the weight values. Results:
``benchmarks/results/latency.json`` and a Markdown table with ratios to ONNX Runtime fp32
(below 1 = faster than ORT fp32).

    python benchmarks/latency.py                       # everything (about 15 minutes here)
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
STUDENTS = {"W2A8": (2, 8), "W4A4": (4, 4), "W2A2": (2, 2)}
REPEATS = 30
ROUNDS = 3  # interleaved rounds of REPEATS // ROUNDS timed runs each
NUMBER = {1: 10, 8: 3}  # calls averaged per timed run, by batch
WARMUP = 3
SLOW_CALL_S = 0.2  # a runtime slower than this per call (TVM's naive fp32) gets SLOW_REPEATS
BUILDS = (("apprentice-hw-untuned", False), ("apprentice-hw-pretuned", True))  # use_tuning
SLOW_REPEATS = 5  # single calls: 30 x 10 calls of a 1.5 s ResNet-18 would take over an hour


# -- phase 1: export and compile ------------------------------------------------------------
def student_onnx(name: str, label: str, tmp: Path) -> onnx.ModelProto:
    """The calibrated, untrained ``label`` student of ``name`` as QCDQ ONNX (also pretune.py)."""
    size, classes = MODELS[name]
    torch.manual_seed(0)
    images = torch.rand(64, 3, size, size)
    weight_bits, act_bits = STUDENTS[label]
    layers = QuantLayers.from_bits(weight_bits, act_bits, 8, "per-channel")
    student = build_model(ModelSpec(name), layers, 3, classes)
    calibrate_untrained(student, images[:32], batch_size=16)
    return export_qcdq(student, images[:1], tmp / f"{name}_{label}.onnx")


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """``model`` with its input and output batch dimension fixed to ``batch`` (for ORT too)."""
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


def compile_default_tvm(model: onnx.ModelProto, batch: int):
    """The fp32 model through TVM's own ONNX import and default pipeline, untuned."""
    import tvm

    from apprentice_hw.compiler.tvm_build import import_onnx
    from apprentice_hw.hardware import get_target

    target = get_target("x86-host").tvm_target()
    return tvm.compile(import_onnx(model, batch), target)


def build_cases(name: str, batches: list[int], tmp: Path) -> list[dict]:
    """Every runtime of ``name`` as a file to time: ONNX models for ORT, ``.so`` for TVM."""
    from apprentice_hw.compiler import compile_module, prepare_module
    from apprentice_hw.hardware import get_target

    size, classes = MODELS[name]
    torch.manual_seed(0)
    target = get_target("x86-host")
    fp32 = build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()
    fp32_onnx = export_float(fp32, torch.rand(1, 3, size, size), tmp / f"{name}_fp32.onnx")
    students = {label: student_onnx(name, label, tmp) for label in STUDENTS}
    cases = []

    def add(batch: int, runtime: str, precision: str, path: Path, **extra) -> None:
        cases.append({"model": name, "input": size, "batch": batch, "runtime": runtime,
                      "precision": precision, "path": str(path), **extra})  # fmt: skip
        print(f"built {name} b{batch} {runtime} {precision}", flush=True)

    for batch in batches:
        path = tmp / f"{name}_fp32_b{batch}.onnx"
        onnx.save(with_batch(fp32_onnx, batch), str(path))
        add(batch, "onnxruntime", "fp32", path)
        start = time.perf_counter()
        library = tmp / f"{name}_fp32_b{batch}_tvm.so"
        compile_default_tvm(fp32_onnx, batch).export_library(str(library))
        add(batch, "tvm-default", "fp32", library, compile_s=_since(start))
        for label, exported in students.items():
            path = tmp / f"{name}_{label}_b{batch}.onnx"
            onnx.save(with_batch(exported, batch), str(path))
            add(batch, "onnxruntime-qdq", label, path)
            for runtime, tuned in BUILDS:
                start = time.perf_counter()
                prepared = prepare_module(exported, target, batch=batch)
                library = tmp / f"{name}_{label}_b{batch}_{runtime}.so"
                compile_module(prepared.mod, target, use_tuning=tuned).export_library(str(library))
                strategies = sorted({layer.strategy for layer in prepared.layers})
                add(batch, runtime, label, library, compile_s=_since(start), strategies=strategies)
    return cases


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


# -- phase 2: timing in a fresh process ---------------------------------------------------
class Timer:
    """One runtime ready to call: ``run(repeats, number)`` returns seconds per call per run."""

    def __init__(self, case: dict, batch_input: np.ndarray) -> None:
        if case["path"].endswith(".onnx"):
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = os.cpu_count() or 1
            providers = ["CPUExecutionProvider"]
            session = ort.InferenceSession(case["path"], options, providers=providers)
            name = session.get_inputs()[0].name
            self.call = lambda: session.run(None, {name: batch_input})
            self.vm = None
        else:
            import tvm
            from tvm import relax

            self.vm = relax.VirtualMachine(tvm.runtime.load_module(case["path"]), tvm.cpu())
            self.data = tvm.runtime.tensor(batch_input)
            self.call = lambda: self.vm["main"](self.data)

    def run(self, repeats: int, number: int) -> list[float]:
        if self.vm is not None:
            import tvm

            timer = self.vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeats,
                                           min_repeat_ms=0)  # fmt: skip
            return list(timer(self.data).results)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                self.call()
            runs.append((time.perf_counter() - start) / number)
        return runs


def profile_tvm(path: str, batch_input: np.ndarray, top: int = 8) -> list[dict]:
    """The ``top`` slowest functions of one module: where its time goes."""
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


def time_group(cases: list[dict], profile: bool) -> None:
    """Time the cases of one model and batch, interleaved; adds the results to each case."""
    import apprentice_hw.compiler.runtime  # noqa: F401 - sets TVM_NUM_THREADS to the cores

    size, batch = cases[0]["input"], cases[0]["batch"]
    batch_input = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    timers, slow, runs = [], [], [[] for _ in cases]
    for case in cases:
        timer = Timer(case, batch_input)
        start = time.perf_counter()
        for _ in range(WARMUP):
            timer.call()
        timers.append(timer)
        slow.append((time.perf_counter() - start) / WARMUP > SLOW_CALL_S)
    for round_index in range(ROUNDS):
        for index, timer in enumerate(timers):
            if not slow[index]:
                runs[index] += timer.run(REPEATS // ROUNDS, NUMBER[batch])
            elif round_index == 0:  # TVM's naive fp32: a few single calls, once
                runs[index] += timer.run(SLOW_REPEATS, 1)
    numbers = [1 if is_slow else NUMBER[batch] for is_slow in slow]
    for case, case_runs, number in zip(cases, runs, numbers, strict=True):
        case.update(summary(case_runs, number))
        if profile and case["runtime"].startswith("apprentice-hw"):
            case["profile"] = profile_tvm(case["path"], batch_input)
        print(f"{case['model']} b{batch} {case['runtime']:<24} {case['precision']:<6} "
              f"{case['median_ms']:9.3f} ms", flush=True)  # fmt: skip


def time_all(cases_file: Path, profile: bool) -> None:
    cases = json.loads(cases_file.read_text())
    groups: dict[tuple, list[dict]] = {}
    for case in cases:
        groups.setdefault((case["model"], case["batch"]), []).append(case)
    for group in groups.values():
        time_group(group, profile)
    cases_file.write_text(json.dumps(cases))


# -- results --------------------------------------------------------------------------------
def with_ratios(rows: list[dict]) -> list[dict]:
    base = {
        (r["model"], r["batch"]): r["median_ms"]
        for r in rows
        if r["runtime"] == "onnxruntime" and r["precision"] == "fp32"
    }
    for row in rows:
        row.pop("path", None)
        row["vs_onnxruntime_fp32"] = round(row["median_ms"] / base[(row["model"], row["batch"])], 3)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | batch | runtime | precision | median ms | IQR ms | runs | vs ORT fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} {r['input']}x{r['input']} | {r['batch']} | {r['runtime']} "
            f"| {r['precision']} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['repeats']} "
            f"| {r['vs_onnxruntime_fp32']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--profile", action="store_true", help="Record each build's slowest functions too."
    )
    parser.add_argument("--time-cases", type=Path, help=argparse.SUPPRESS)  # phase 2 (internal)
    args = parser.parse_args()
    if args.time_cases is not None:
        time_all(args.time_cases, args.profile)
        return

    from apprentice_hw.compiler import tuning
    from apprentice_hw.hardware import get_target
    from apprentice_hw.torch_backend import configure_torch

    configure_torch()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["APPRENTICE_HW_CACHE"] = str(Path(tmp) / "cache")  # shipped knobs only
        cases = []
        for name in args.models:
            cases += build_cases(name, args.batches, Path(tmp))
        cases_file = Path(tmp) / "cases.json"
        cases_file.write_text(json.dumps(cases))
        command = [sys.executable, __file__, "--time-cases", str(cases_file)]
        subprocess.run(command + (["--profile"] if args.profile else []), check=True)
        rows = with_ratios(json.loads(cases_file.read_text()))
    target = get_target("x86-host")
    shipped = [str(p.relative_to(p.parents[3])) for p in tuning.shipped_files(target)]
    result = {
        "benchmark": "latency",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu": cpu_model_name(),
            "llvm_cpu": tuning.cpu_key(target.tvm_target()),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "pretuned_knobs": shipped,
        "repeats": REPEATS,
        "rounds": ROUNDS,
        "rows": rows,
    }
    write_json(args.out, result)
    print(markdown(rows))


if __name__ == "__main__":
    main()
