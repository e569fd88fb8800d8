"""Soak: 20 builds back to back in one process, mixed targets and bit widths.

Checks what a long-running service (or a CI job building many models) would hit: memory that
grows from build to build, processes a build leaves behind (timing subprocesses, RPC
helpers, C simulation), and staging or lock files left next to the outputs. Each build is the
real pipeline on the tiny digits recipe (a few seconds each), so the run takes minutes.

    python benchmarks/soak.py                    # 20 builds, writes benchmarks/results/soak.json
    python benchmarks/soak.py --builds 5 --out /tmp/soak

Exit status 1 when memory grew more than --max-growth between the first third of the builds
and the last, or when anything was left behind.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "tests" / "data" / "tiny.toml"
RESULTS = REPO / "benchmarks" / "results" / "soak.json"
TARGETS = ("x86-host", "arm-a72", "x86-avx2", "jetson-orin", "zcu104")
BITS = (2, 4, 8)


def _available(target: str) -> bool:
    """GPU and FPGA builds need a device compiler and hls4ml; the soak skips what is missing."""
    from apprentice_hw.compiler import cuda
    from apprentice_hw.errors import UserError
    from apprentice_hw.hardware import get_target

    spec = get_target(target)
    device = spec.device
    try:
        if device == "cuda":
            cuda.check_device_compiler(spec.tvm, spec.name)
        if device == "fpga":
            import hls4ml  # noqa: F401
    except (UserError, ImportError):
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="where the builds go (temporary)")
    parser.add_argument("--max-growth", type=float, default=0.10,
                        help="allowed RSS growth, first to last third (default 10%%)")  # fmt: skip
    args = parser.parse_args()

    from apprentice_hw.cli import main as cli
    from apprentice_hw.hardware import cpu_model_name

    root = args.out or Path(tempfile.mkdtemp(prefix="apprentice-hw-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    targets = [t for t in TARGETS if _available(t)]
    plan = list(itertools.islice(itertools.cycle(itertools.product(targets, BITS)), args.builds))
    rows = []
    for index, (target, bits) in enumerate(plan, start=1):
        out = root / f"{index:02d}-{target}-w{bits}"
        start = time.perf_counter()
        code = cli(["build", "-t", target, "--bits", str(bits), "-r", str(RECIPE), "-o", str(out),
                    "-q"])  # fmt: skip
        seconds = time.perf_counter() - start
        gc.collect()
        children = [c.name() for c in me.children(recursive=True) if c.is_running()]
        leftovers = [p.name for p in root.iterdir() if p.name.endswith((".partial", ".lock"))]
        rss = me.memory_info().rss
        rows.append({"build": index, "target": target, "bits": bits, "exit": code,
                     "seconds": round(seconds, 1), "rss_mib": round(rss / 2**20, 1),
                     "child_processes": children, "leftover_files": leftovers})  # fmt: skip
        print(f"{index:2d} {target:<12} W{bits}  exit {code}  {seconds:5.1f} s  "
              f"RSS {rss / 2**20:7.1f} MiB  children {len(children)}  leftovers {len(leftovers)}",
              flush=True)  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    third = max(1, len(rows) // 3)
    early = sum(r["rss_mib"] for r in rows[:third]) / third
    late = sum(r["rss_mib"] for r in rows[-third:]) / third
    growth = late / early - 1
    failures = [r for r in rows if r["exit"] != 0 or r["child_processes"] or r["leftover_files"]]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model_name(),
                    "cores": psutil.cpu_count(), "python": platform.python_version()},
        "builds": len(rows),
        "targets": targets,
        "rss_mib_first_third_mean": round(early, 1),
        "rss_mib_last_third_mean": round(late, 1),
        "rss_growth": round(growth, 4),
        "max_growth_allowed": args.max_growth,
        "failed_or_left_something": len(failures),
        "rows": rows,
    }  # fmt: skip
    if args.out is None:
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"RSS {early:.0f} -> {late:.0f} MiB ({growth:+.1%}); {len(failures)} builds failed or "
          f"left something; written to {RESULTS}")  # fmt: skip
    return 1 if failures or growth > args.max_growth else 0


if __name__ == "__main__":
    sys.exit(main())
