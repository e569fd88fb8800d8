"""GPU latency: apprentice-hw CUDA builds against ONNX Runtime on the same GPU machine.

A GPU machine here is lent for minutes, has no package registry and no room for the training
stack, so the benchmark runs in three phases:

1. ``--prepare DIR`` (this machine): exports the ResNet-20 fp32 model and its W2A8 / W4A4
   students (calibrated, untrained: latency does not depend on weight values), compiles each
   student for the CUDA target (cubin embedded, as a build does) and for the x86 host, and
   saves the host build's outputs for a fixed input: the reference the GPU must reproduce
   within one output quantization step. ``DIR`` also gets ``cases.json``.
2. ``--time DIR`` (the GPU machine; needs numpy, the TVM runtime - the runtime-only wheel is
   enough - and onnxruntime, with CUDA if its CUDA provider is installed): checks each module
   against the reference, then times every runtime in interleaved rounds (medians of
   ``REPEATS`` runs) and writes ``DIR/gpu_latency.json``.
3. ``--report FILE`` (this machine): copies that JSON to ``benchmarks/results/`` and prints
   the Markdown table.

    python benchmarks/gpu_latency.py --prepare .device/gpu --target h100
    python3 benchmarks/gpu_latency.py --time .device/gpu            # on the GPU machine
    python benchmarks/gpu_latency.py --report /path/to/gpu_latency.json

``--prepare DIR --target x86-host`` makes the same cases for this CPU: a dry run of phase 2
without a GPU (its numbers are not GPU results and ``--report`` refuses them).

ONNX Runtime rows name the provider that ran (CUDAExecutionProvider where onnxruntime-gpu is
installed, CPUExecutionProvider otherwise), so a table never claims a GPU run it did not make.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from timing import summary  # beside this script (python puts its folder on the path)

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "gpu_latency.json"
MODEL, SIZE, CLASSES = "resnet20", 32, 10
STUDENTS = ("W2A8", "W4A4")
BATCHES = (1, 8)
REPEATS, ROUNDS, NUMBER, WARMUP = 30, 3, 20, 5
TOLERANCE_STEPS = 1.0  # GPU vs host build, in output quantization steps


# -- phase 1: this machine ------------------------------------------------------------------
def prepare(folder: Path, target_name: str) -> None:
    import onnx
    import torch
    from latency import STUDENTS as LATENCY_STUDENTS
    from latency import export_float, student_onnx, with_batch

    from apprentice_hw.backends import compile_module, export_module, prepare_module
    from apprentice_hw.deploy.bundle import output_quantization
    from apprentice_hw.hardware import HOST_TARGET, get_target
    from apprentice_hw.models import ModelSpec, build_model
    from apprentice_hw.quant import FloatLayers

    assert set(STUDENTS) <= set(LATENCY_STUDENTS)
    target, host = get_target(target_name), get_target(HOST_TARGET)
    if target.device != "cuda" and not target.runs_on_this_machine:
        raise SystemExit(f"error: {target_name} is neither a CUDA target nor this machine's CPU")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    fp32 = build_model(ModelSpec(MODEL), FloatLayers(), 3, CLASSES).eval()
    fp32_onnx = export_float(fp32, torch.rand(1, 3, SIZE, SIZE), folder / "fp32.onnx")
    students = {label: student_onnx(MODEL, label, folder) for label in STUDENTS}
    for label in STUDENTS:
        (folder / f"{MODEL}_{label}.onnx").unlink()  # saved per batch below
    cases = []
    for batch in BATCHES:
        data = np.random.default_rng(batch).random((batch, 3, SIZE, SIZE), dtype=np.float32)
        np.save(folder / f"input_b{batch}.npy", data)
        onnx.save(with_batch(fp32_onnx, batch), str(folder / f"fp32_b{batch}.onnx"))
        cases.append({"batch": batch, "runtime": "onnxruntime", "precision": "fp32",
                      "file": f"fp32_b{batch}.onnx"})  # fmt: skip
        for label in STUDENTS:
            student = with_batch(students[label], batch)
            onnx.save(student, str(folder / f"{label}_b{batch}.onnx"))
            cases.append({"batch": batch, "runtime": "onnxruntime-qdq", "precision": label,
                          "file": f"{label}_b{batch}.onnx"})  # fmt: skip
            module = folder / f"{label}_b{batch}_{target.name}.so"
            export_module(compile_module(prepare_module(student, target, batch).mod, target),
                          target, module)  # fmt: skip
            reference = _host_outputs(prepare_module(student, host, batch).mod, host, data)
            np.save(folder / f"{label}_b{batch}_reference.npy", reference)
            cases.append({"batch": batch, "runtime": f"apprentice-hw ({target.name})",
                          "precision": label, "file": module.name, "device": target.device,
                          "reference": f"{label}_b{batch}_reference.npy",
                          "quant_step": output_quantization(student)["scale"]})  # fmt: skip
            print(f"prepared {label} b{batch}", flush=True)
    (folder / "cases.json").write_text(json.dumps({"target": target.name, "cases": cases}))


def _host_outputs(mod, host, data: np.ndarray) -> np.ndarray:
    import tvm
    from tvm import relax

    from apprentice_hw.backends import compile_module

    vm = relax.VirtualMachine(compile_module(mod, host), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(data)).numpy()


# -- phase 2: the GPU machine ---------------------------------------------------------------
class Runner:
    """One runtime of one case, ready to call and to time (seconds per call, per run)."""

    def __init__(self, folder: Path, case: dict, data: np.ndarray) -> None:
        if case["file"].endswith(".onnx"):
            import onnxruntime as ort

            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            providers = [p for p in wanted if p in ort.get_available_providers()]
            session = ort.InferenceSession(str(folder / case["file"]), providers=providers)
            case["provider"] = session.get_providers()[0]
            name = session.get_inputs()[0].name
            self.call = lambda: session.run(None, {name: data})
            self.time_evaluator = None
        else:
            import tvm
            from tvm.runtime.vm import VirtualMachine  # tvm.relax needs the compiler library

            if case["device"] == "cuda":
                # The bundle runner's loader; apprentice_hw/__init__ and deploy/__init__ import
                # nothing, so this needs no training stack on the GPU machine.
                sys.path.insert(0, str(HERE.parent))
                from apprentice_hw.deploy.run import load_cuda_runtime

                load_cuda_runtime(tvm)
            device = tvm.device(case["device"])
            vm = VirtualMachine(tvm.runtime.load_module(str(folder / case["file"])), device)
            tensor = tvm.runtime.tensor(data, device)
            self.call = lambda: vm["main"](tensor).numpy()
            self.time_evaluator = lambda repeats: (
                vm.time_evaluator("main", device, number=NUMBER, repeat=repeats)(tensor).results
            )
            case["provider"] = f"TVM {case['device']} ({device.device_name or platform.machine()})"

    def times(self, repeats: int) -> list[float]:
        if self.time_evaluator is not None:  # synchronizes the GPU around each run
            return list(self.time_evaluator(repeats))
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(NUMBER):
                self.call()
            runs.append((time.perf_counter() - start) / NUMBER)
        return runs


def check(folder: Path, case: dict, runner: Runner) -> None:
    """A module's outputs on the GPU against the host build's, in output quantization steps."""
    got = runner.call()
    want = np.load(folder / case["reference"])
    steps = float(np.max(np.abs(got.astype(np.float64) - want)) / case["quant_step"])
    case["max_diff_steps_vs_host_build"] = round(steps, 3)
    case["within_tolerance"] = steps <= TOLERANCE_STEPS + 1e-9


def time_cases(folder: Path) -> Path:
    # TVM's CPU thread pool would take half the cores (dry runs on the CPU; see runtime.py).
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    spec = json.loads((folder / "cases.json").read_text())
    for batch in BATCHES:
        cases = [c for c in spec["cases"] if c["batch"] == batch]
        data = np.load(folder / f"input_b{batch}.npy")
        runners = [Runner(folder, case, data) for case in cases]
        for case, runner in zip(cases, runners, strict=True):
            for _ in range(WARMUP):
                runner.call()
            if "reference" in case:
                check(folder, case, runner)
        runs: list[list[float]] = [[] for _ in cases]
        for _ in range(ROUNDS):  # interleaved: a slow spell hits every runtime alike
            for index, runner in enumerate(runners):
                runs[index] += runner.times(REPEATS // ROUNDS)
        base = None
        for case, case_runs in zip(cases, runs, strict=True):
            case.update(summary(case_runs, NUMBER))
            if case["runtime"] == "onnxruntime":
                base = case["median_ms"]
        for case in cases:
            case["vs_onnxruntime_fp32"] = round(case["median_ms"] / base, 3)
            print(f"b{batch} {case['runtime']:<24} {case['precision']:<5} {case['provider']:<28} "
                  f"{case['median_ms']:8.3f} ms", flush=True)  # fmt: skip
    result = {
        "benchmark": "gpu_latency",
        "date": datetime.date.today().isoformat(),
        "model": f"{MODEL} {SIZE}x{SIZE}, {CLASSES} classes",
        "target": spec["target"],
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "repeats": REPEATS,
        "rounds": ROUNDS,
        "tolerance_steps": TOLERANCE_STEPS,
        "rows": spec["cases"],
    }
    out = folder / "gpu_latency.json"
    out.write_text(json.dumps(result, indent=2))
    return out


# -- phase 3: this machine ------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = [
        "| batch | runtime | precision | ran on | median ms | IQR ms | vs ORT fp32 | max diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        diff = r.get("max_diff_steps_vs_host_build")
        lines.append(
            f"| {r['batch']} | {r['runtime']} | {r['precision']} | {r['provider']} "
            f"| {r['median_ms']:.3f} | {r['iqr_ms']:.3f} | {r['vs_onnxruntime_fp32']:.2f} "
            f"| {'-' if diff is None else f'{diff:g} steps'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    phase = parser.add_mutually_exclusive_group(required=True)
    phase.add_argument("--prepare", type=Path, metavar="DIR", help="phase 1: export, compile")
    phase.add_argument("--time", type=Path, metavar="DIR", help="phase 2: on the GPU machine")
    phase.add_argument("--report", type=Path, metavar="FILE", help="phase 3: record results")
    parser.add_argument("--target", default="h100", help="CUDA target for --prepare")
    args = parser.parse_args()
    if args.prepare is not None:
        prepare(args.prepare, args.target)
    elif args.time is not None:
        print(f"wrote {time_cases(args.time)}")
    else:
        result = json.loads(args.report.read_text())
        if not any("cuda" in r["provider"].lower() for r in result["rows"]):
            raise SystemExit("error: nothing in this file ran on a GPU; not recording it")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(markdown(result))


if __name__ == "__main__":
    main()
