"""Pre-tune the zoo students on this machine and write the knob table apprentice-hw ships.

Tunes the conv kernels of the ResNet-20 (32x32) and ResNet-18 (224x224) students that
``latency.py`` measures (W8A8, W2A8, W4A4, W2A2) at batch 1 and 8 for ``x86-host``, and writes the
best knob settings to ``targets/tuned/x86-host/<cpu>.json`` (``<cpu>`` is LLVM's name for this
CPU, e.g. ``znver4``; only kernels where a setting measured faster than the default). Builds on
a machine with that CPU model apply them with no tuning; other CPU models ignore them (the
timings that chose them say nothing about another CPU).

Records depend on a kernel's shapes, bit widths, zero point and fused epilogue, not on weight
values: one set serves every trained student of the same architecture and input size.

    python benchmarks/pretune.py               # everything, at most 4 min per student and batch
    python benchmarks/pretune.py --models resnet20 --batches 1 --budget 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["resnet20", "resnet18"])
    parser.add_argument("--students", nargs="*", default=["W8A8", "W2A8", "W4A4", "W2A2"])
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per student and batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["APPRENTICE_HW_CACHE"] = str(Path(tmp) / "cache")  # start from nothing
        from latency import student_onnx

        from apprentice_hw.backends import prepare_module
        from apprentice_hw.compiler import tuning
        from apprentice_hw.compiler.schedules import fused_module
        from apprentice_hw.hardware import cpu_model_name, get_target
        from apprentice_hw.torch_backend import configure_torch

        configure_torch()
        target = get_target("x86-host")
        tvm_target = target.tvm_target()
        results = []
        for name in args.models:
            for label in args.students:
                exported = student_onnx(name, label, Path(tmp))
                for batch in args.batches:
                    prepared = prepare_module(exported, target, batch=batch)
                    fused = fused_module(prepared.mod, tvm_target)
                    result = tuning.tune(fused, target, time_budget_s=args.budget)
                    results += result.tasks
                    gains = [t.speedup for t in result.tasks if t.speedup is not None]
                    print(
                        f"{name} {label} b{batch}: {result.measured} settings of "
                        f"{len(result.tasks)} kernels in {result.seconds:.0f} s; kernel speedups "
                        f"{min(gains, default=1):.2f}-{max(gains, default=1):.2f}x",
                        flush=True,
                    )
        path = ROOT / "targets" / tuning.SHIPPED_FOLDER / target.name
        path = path / f"{tuning.cpu_key(tvm_target)}.json"
        kept = tuning.write_shipped_knobs(path, results, tvm_target, cpu_model_name())
        print(f"{kept} kernels with faster knobs written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
