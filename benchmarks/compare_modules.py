"""A/B comparison of compiled modules while developing kernels: ratios, not README numbers.

Loads every module in one process, one TVM thread, and times them in short interleaved bursts
(``ROUNDS`` rounds, each module once per round), so that the machine's slow spells hit all of
them alike. On the development VM the same module's fresh-process timings scatter by about
25% from process to process, while the ratios this prints repeat to about 1% (design notes:
``docs/pitfalls.md``, "Measuring speed"). The README's latency table comes from ``latency.py``
(every runtime in its own process, both cores), never from here.

    python benchmarks/compare_modules.py --input 32 --batch 1 old.so new.so
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROUNDS = 150
BURST_S = 0.01  # about this long per module and round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="+", type=Path, help="compiled .so files (first: base)")
    parser.add_argument("--input", type=int, default=32, help="image size (3 x N x N)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    import tvm
    from tvm import relax

    shape = (args.batch, 3, args.input, args.input)
    sample = tvm.runtime.tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    calls = []
    for path in args.modules:
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        calls.append(vm["main"])
    start = time.perf_counter()
    for call in calls:  # warm-up, and the length of one burst
        for _ in range(5):
            call(sample)
    per_call = (time.perf_counter() - start) / (5 * len(calls))
    number = max(1, round(BURST_S / per_call))
    times = np.zeros((args.rounds, len(calls)))
    for round_ in range(args.rounds):
        for index, call in enumerate(calls):
            begin = time.perf_counter()
            for _ in range(number):
                call(sample)
            times[round_, index] = (time.perf_counter() - begin) / number
    ratios = times / times[:, :1]
    for index, path in enumerate(args.modules):
        median_ms = float(np.median(times[:, index])) * 1e3
        print(f"{median_ms:9.4f} ms  {float(np.median(ratios[:, index])):.3f}x  {path.name}")


if __name__ == "__main__":
    main()
