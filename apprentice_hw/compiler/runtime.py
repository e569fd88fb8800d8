"""Loading a compiled module back, running it, and timing it on this machine."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


def use_all_cores() -> None:
    """Give TVM's thread pool one worker per usable core unless TVM_NUM_THREADS says otherwise.

    TVM's default assumes two hardware threads per core on x86 and halves the count; on this
    2-core VM (one thread per core) that left ResNet-20 W2A8 at 1.30 ms against 0.54 ms with
    both cores (measured 2026-11-25). Must run before the first parallel kernel starts the pool.
    """
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))


use_all_cores()


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference latency over ``repeats`` timed runs (each the mean of ``number`` calls)."""

    median_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float
    repeats: int
    number: int
    kind: str = "measured"
    threads: int | None = None  # TVM worker threads it ran with (None: not recorded)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.threads is None:
            del data["threads"]
        return data

    @classmethod
    def from_times(cls, times_ms: list[float], number: int,
                   threads: int | None = None) -> LatencyStats:  # fmt: skip
        """Summary of per-call milliseconds, one value per timed run of ``number`` calls."""
        return cls(
            median_ms=statistics.median(times_ms),
            min_ms=min(times_ms),
            max_ms=max(times_ms),
            stdev_ms=statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
            repeats=len(times_ms),
            number=number,
            threads=threads,
        )


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def _virtual_machine(path: Path):
    import tvm
    from tvm import relax

    library = tvm.runtime.load_module(str(path))
    return relax.VirtualMachine(library, tvm.cpu()), tvm


def run_module(path: Path, inputs: np.ndarray, batch: int = 1) -> np.ndarray:
    """Run the module at ``path`` over ``inputs`` in chunks of its compiled ``batch`` size."""
    vm, tvm = _virtual_machine(path)
    if len(inputs) % batch:
        raise ValueError(f"{len(inputs)} inputs do not split into batches of {batch}")
    outputs = [
        vm["main"](tvm.runtime.tensor(np.ascontiguousarray(inputs[i : i + batch]))).numpy()
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(outputs)


def measure_latency(path: Path, sample: np.ndarray, repeats: int = 30, number: int = 10,
                    threads: int | None = None) -> LatencyStats:  # fmt: skip
    """Time the module on ``sample`` with TVM's time evaluator, in a fresh Python process, with
    ``threads`` TVM workers (default: every usable core).

    A fresh process because timing right after a compile in the same one is distorted: the
    same ResNet-20 ``.so`` measured 0.61 ms there and 0.46 ms loaded fresh (2026-11-25); and
    the thread pool's size is fixed when it starts.
    """
    threads = threads or usable_cores()
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "sample.npy", np.ascontiguousarray(sample))
        command = [sys.executable, "-m", "apprentice_hw.compiler.runtime", str(path),
                   str(Path(tmp) / "sample.npy"), str(repeats), str(number)]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, check=False,
                                   env=env)  # fmt: skip
    if completed.returncode != 0:
        raise RuntimeError(f"timing {path} failed: {completed.stderr.strip()[-500:]}")
    times_ms = json.loads(completed.stdout.strip().splitlines()[-1])
    return LatencyStats.from_times(times_ms, number, threads)


def fastest_latency(path: Path, sample: np.ndarray) -> LatencyStats:
    """The module timed with 1 thread and with every usable core; the faster of the two.

    Small models lose to the thread pool's wake-ups: the digits student ran 0.011 ms on one
    thread against 0.054 ms on two (2026-12-08); large ones gain from every core. Each count
    is one full measurement in its own process (the pool's size is fixed when it starts).
    """
    counts = sorted({1, usable_cores()})
    timed = [measure_latency(path, sample, threads=n) for n in counts]
    return min(timed, key=lambda stats: stats.median_ms)


def _time_here(path: Path, sample: np.ndarray, repeats: int, number: int) -> list[float]:
    """Milliseconds per call of ``repeats`` timed runs of ``number`` calls (warm-up excluded)."""
    vm, tvm = _virtual_machine(path)
    timer = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeats, min_repeat_ms=0)
    return [t * 1e3 for t in timer(tvm.runtime.tensor(sample)).results]


@dataclass(frozen=True)
class FunctionTime:
    """Time one compiled function takes per inference (all its calls together)."""

    name: str
    ms_per_inference: float
    calls_per_inference: int

    def to_dict(self) -> dict:
        return asdict(self)


def profile_functions(vm, sample, runs: int = 20) -> list[FunctionTime]:
    """Per-function wall time of ``runs`` inferences, slowest first: where the time goes.

    Uses the Relax VM's instrument hook, which wraps every call the VM makes (kernels and
    runtime builtins such as allocation); the hook's own cost is included, so the total is a
    little above the plain latency.
    """
    import time

    started: dict[str, float] = {}
    totals: dict[str, float] = {}
    calls: dict[str, int] = {}

    def instrument(_func, name, before_run, _ret, *_args):
        if before_run:
            started[name] = time.perf_counter()
        else:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started[name]
            calls[name] = calls.get(name, 0) + 1
        return 0

    vm["main"](sample)  # warm-up, not counted
    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            vm["main"](sample)
    finally:
        vm.set_instrument(lambda *_args: 0)
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [FunctionTime(name, total * 1e3 / runs, calls[name] // runs) for name, total in ranked]


if __name__ == "__main__":  # python -m apprentice_hw.compiler.runtime MODULE SAMPLE REPEATS NUMBER
    module, sample_file, repeats_text, number_text = sys.argv[1:5]
    times = _time_here(Path(module), np.load(sample_file), int(repeats_text), int(number_text))
    print(json.dumps(times))
