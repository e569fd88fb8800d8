"""Timing one runtime in a process of its own, and the summary every latency benchmark reports.

Kept apart from ``latency.py``, and importing nothing but numpy and the runtime it times, so
that (1) ``latency.py`` times each runtime in a fresh process that holds no other runtime, no
torch and no compiler (``python timing.py CASE_JSON RUNS NUMBER`` prints the per-call seconds),
(2) phase 2 of ``gpu_latency.py`` can use the summary on a GPU machine that has numpy but not
the training stack, and (3) ``arm_cost.py`` runs it under qemu in the emulated Pi's Python
(``python timing.py --calls N CASE_JSON``: untimed calls whose instructions qemu counts).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

WARMUP_S = 0.5  # calls before timing, at least this long (and at least 3 calls)


def summary(times_s: list[float], number: int) -> dict:
    """Median and interquartile range in ms of per-call times, one per run of ``number`` calls."""
    ms = np.asarray(times_s) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": round(float(median), 4),
        "iqr_ms": round(float(q3 - q1), 4),
        "repeats": len(times_s),
        "calls_per_repeat": number,
    }


def _onnxruntime(path: str, batch_input: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: batch_input})


def _openvino(path: str, batch_input: np.ndarray):
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}  # fmt: skip
    request = ov.Core().compile_model(path, "CPU", config).create_infer_request()
    return lambda: request.infer({0: batch_input})


def _litert(path: str, batch_input: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter  # XNNPACK, LiteRT's default delegate

    interpreter = Interpreter(model_path=path, num_threads=len(os.sched_getaffinity(0)))
    interpreter.allocate_tensors()
    source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    data = np.ascontiguousarray(batch_input.transpose(0, 2, 3, 1))  # its models take NHWC

    def call():
        interpreter.set_tensor(source["index"], data)
        interpreter.invoke()
        return interpreter.get_tensor(result["index"])

    return call


def _tvm(path: str, batch_input: np.ndarray):
    # as apprentice-hw's runtime does: one TVM worker per usable core (TVM halves it on x86)
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    import tvm
    from tvm.runtime.vm import VirtualMachine  # the runtime alone, as on a board

    vm = VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
    data = tvm.runtime.tensor(batch_input)
    return lambda: vm["main"](data)


def _loader(runtime: str):
    if runtime == "onnxruntime":
        return _onnxruntime
    if runtime == "openvino":
        return _openvino
    if runtime == "litert":
        return _litert
    return _tvm  # "tvm-default" and the apprentice-hw builds


def time_case(case: dict, runs: int, number: int) -> list[float]:
    """Seconds per call of ``runs`` timed runs of ``number`` calls, after a warm-up."""
    size, batch = case["input"], case["batch"]
    batch_input = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    call = _loader(case["runtime"])(case["path"], batch_input)
    start, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - start < WARMUP_S:
        call()
        calls += 1
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - begin) / number)
    return times


def run_case(case: dict, calls: int) -> None:
    """One warm-up call, then ``calls`` more, untimed: ``arm_cost.py`` counts what they execute
    under qemu (the difference between two call counts is the cost of the extra calls)."""
    size, batch = case["input"], case["batch"]
    batch_input = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    call = _loader(case["runtime"])(case["path"], batch_input)
    for _ in range(1 + calls):
        call()


if __name__ == "__main__":
    if sys.argv[1] == "--calls":  # timing.py --calls N CASE_JSON
        run_case(json.loads(sys.argv[3]), int(sys.argv[2]))
    else:  # timing.py CASE_JSON RUNS NUMBER
        case, runs, number = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        print(json.dumps(time_case(case, runs, number)))
