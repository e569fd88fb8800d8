"""Latency: apprentice-hw integer builds against ONNX Runtime and TVM on this CPU, in one run.

For ResNet-20 (32x32, 10 classes) and ResNet-18 (224x224, 1000 classes), batch 1 and 8:

* ONNX Runtime on the fp32 model (default session options: all graph optimizations, one
  intra-op thread per core),
* ONNX Runtime on each student's QCDQ export (the same file apprentice-hw compiles; ORT fuses
  the QDQ pairs into its int8 kernels),
* TVM on the fp32 model with its default CPU pipeline (what ``tvm.compile`` gives untuned),
* apprentice-hw builds of the W2A8, W4A4 and W2A2 (ternary weights, 2-bit activations)
  students: integer kernels with the default schedules (untuned).

Students are untrained but calibrated (BatchNorm statistics and activation scales from random
images): latency does not depend on the weight values. Each number is the median of
``REPEATS`` (30) timed runs after warm-up, each run averaging ``NUMBER`` calls; the spread is
the interquartile range. TVM's untuned fp32 baseline, over 100x slower, gets 5 single-call
runs where one call takes more than 0.2 s (ResNet-18). Results:
``benchmarks/results/latency.json`` and a Markdown table with ratios to ONNX Runtime fp32
(below 1 = faster than ORT fp32).

    python benchmarks/latency.py                       # everything (about 15 minutes here)
    python benchmarks/latency.py --models resnet20 --batches 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from apprentice_hw.atomic import write_json
from apprentice_hw.compiler import compile_module, prepare_module
from apprentice_hw.compiler.tvm_build import import_onnx
from apprentice_hw.export import export_qcdq
from apprentice_hw.hardware import cpu_model_name, get_target
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers, QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained
from apprentice_hw.torch_backend import configure_torch

RESULTS = Path(__file__).parent / "results" / "latency.json"
MODELS = {"resnet20": (32, 10), "resnet18": (224, 1000)}  # input size, classes
STUDENTS = {"W2A8": (2, 8), "W4A4": (4, 4), "W2A2": (2, 2)}
REPEATS = 30
NUMBER = {1: 10, 8: 3}  # calls averaged per timed run, by batch
WARMUP = 3
SLOW_CALL_S = 0.2  # a runtime slower than this per call (TVM's naive fp32) gets SLOW_REPEATS
SLOW_REPEATS = 5  # single calls: 30 x 10 calls of a 1.5 s ResNet-18 would take over an hour


def summary(times_s: list[float], number: int) -> dict:
    ms = np.asarray(times_s) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": round(float(median), 4),
        "iqr_ms": round(float(q3 - q1), 4),
        "repeats": len(times_s),
        "calls_per_repeat": number,
    }


def time_calls(call, number: int) -> dict:
    for _ in range(WARMUP):
        call()
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(number):
            call()
        runs.append((time.perf_counter() - start) / number)
    return summary(runs, number)


def time_onnxruntime(path: Path, batch_input: np.ndarray, number: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return time_calls(lambda: session.run(None, {name: batch_input}), number)


def profile_tvm(executable, batch_input: np.ndarray, top: int = 8) -> list[dict]:
    """The ``top`` slowest functions of one module: where its time goes."""
    import tvm
    from tvm import relax

    from apprentice_hw.compiler.runtime import profile_functions

    vm = relax.VirtualMachine(executable, tvm.cpu())
    ranked = profile_functions(vm, tvm.runtime.tensor(batch_input))
    return [
        {
            "function": f.name[:80],
            "ms": round(f.ms_per_inference, 4),
            "calls": f.calls_per_inference,
        }
        for f in ranked[:top]
    ]


def time_tvm(executable, batch_input: np.ndarray, number: int) -> dict:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    data = tvm.runtime.tensor(batch_input)
    start = time.perf_counter()
    vm["main"](data)  # warm-up, and how slow one call is
    repeats = REPEATS
    if time.perf_counter() - start > SLOW_CALL_S:
        number, repeats = 1, SLOW_REPEATS
    timer = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeats, min_repeat_ms=0)
    return summary(list(timer(data).results), number)


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


def run_model(name: str, batches: list[int], tmp: Path, profile: bool = False) -> list[dict]:
    size, classes = MODELS[name]
    torch.manual_seed(0)
    images = torch.rand(64, 3, size, size)
    sample = images[:1]
    target = get_target("x86-host")
    rows = []
    fp32 = build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()
    fp32_onnx = export_float(fp32, sample, tmp / f"{name}_fp32.onnx")
    students = {label: student_onnx(name, label, tmp) for label in STUDENTS}
    for batch in batches:
        number = NUMBER[batch]
        batch_input = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)

        def add(runtime: str, precision: str, timing: dict, batch: int = batch, **extra) -> None:
            rows.append({"model": name, "input": size, "batch": batch, "runtime": runtime,
                         "precision": precision, **timing, **extra})  # fmt: skip
            print(f"{name} b{batch} {runtime:<22} {precision:<6} {timing['median_ms']:9.3f} ms")

        path = tmp / f"{name}_fp32_b{batch}.onnx"
        onnx.save(with_batch(fp32_onnx, batch), str(path))
        add("onnxruntime", "fp32", time_onnxruntime(path, batch_input, number))
        start = time.perf_counter()
        tvm_fp32 = compile_default_tvm(fp32_onnx, batch)
        compile_s = round(time.perf_counter() - start, 1)
        add("tvm-default", "fp32", time_tvm(tvm_fp32, batch_input, number), compile_s=compile_s)
        for label, exported in students.items():
            path = tmp / f"{name}_{label}_b{batch}.onnx"
            onnx.save(with_batch(exported, batch), str(path))
            add("onnxruntime-qdq", label, time_onnxruntime(path, batch_input, number))
            start = time.perf_counter()
            prepared = prepare_module(exported, target, batch=batch)
            executable = compile_module(prepared.mod, target)
            compile_s = round(time.perf_counter() - start, 1)
            strategies = sorted({layer.strategy for layer in prepared.layers})
            extra = {"profile": profile_tvm(executable, batch_input)} if profile else {}
            add("apprentice-hw-untuned", label, time_tvm(executable, batch_input, number),
                compile_s=compile_s, strategies=strategies, **extra)  # fmt: skip
    return rows


def compile_default_tvm(model: onnx.ModelProto, batch: int):
    """The fp32 model through TVM's own ONNX import and default pipeline, untuned."""
    import tvm

    target = get_target("x86-host").tvm_target()
    return tvm.compile(import_onnx(model, batch), target)


def with_ratios(rows: list[dict]) -> list[dict]:
    base = {
        (r["model"], r["batch"]): r["median_ms"]
        for r in rows
        if r["runtime"] == "onnxruntime" and r["precision"] == "fp32"
    }
    for row in rows:
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
    args = parser.parse_args()
    configure_torch()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += run_model(name, args.batches, Path(tmp), args.profile)
    rows = with_ratios(rows)
    result = {
        "benchmark": "latency",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu": cpu_model_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
        },
        "repeats": REPEATS,
        "rows": rows,
    }
    write_json(args.out, result)
    print(markdown(rows))


if __name__ == "__main__":
    main()
