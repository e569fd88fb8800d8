"""Distillation benchmark on real Fashion-MNIST: no distillation vs schemes A, B and C.

For a ternary and a 4-bit student (8-bit activations), every scheme trains the student for the
same number of epochs; each configuration runs with several seeds. Within one seed the fp32
teacher (and scheme C's fp32 student twin) is trained once and reused through the trainer's
checkpoints, exactly as a resumed run would reuse it. Results: mean and spread of test top-1
and wall time, printed as Markdown and written to ``benchmarks/results/distill.json``.

    python benchmarks/distill.py                    # the committed configuration
    python benchmarks/distill.py --seeds 0 --epochs 1 --train-limit 1000   # a quick look
    python benchmarks/distill.py --seeds 1 --out /tmp/s1.json &             # seeds in parallel,
    python benchmarks/distill.py --merge /tmp/s0.json /tmp/s1.json ...      # then one table
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from apprentice_hw.atomic import write_json
from apprentice_hw.config import load_recipe
from apprentice_hw.data import load_dataset
from apprentice_hw.distill import evaluate
from apprentice_hw.progress import Progress
from apprentice_hw.training import CHECKPOINTS, train_models

SCHEMES = ("none", "A", "B", "C")
WEIGHT_BITS = (2, 4)
SHARED_PHASES = ("teacher.ckpt", "fp32-student.ckpt")
RESULTS = Path(__file__).parent / "results" / "distill.json"


def run_one(recipe, data, workdir: Path, cache: Path) -> dict:
    """Train one configuration, reusing the seed's cached teacher phases."""
    (workdir / CHECKPOINTS).mkdir(parents=True)
    for name in SHARED_PHASES:
        if (cache / name).exists():
            shutil.copy(cache / name, workdir / CHECKPOINTS / name)
    start = time.perf_counter()
    trained = train_models(recipe, data, workdir, Progress(quiet=True), resume=True)
    seconds = time.perf_counter() - start
    for name in SHARED_PHASES:
        if (workdir / CHECKPOINTS / name).exists() and not (cache / name).exists():
            shutil.copy(workdir / CHECKPOINTS / name, cache / name)
    result = {
        "student_top1": evaluate(trained.student, data.test_x, data.test_y),
        "seconds": seconds,
    }
    if trained.teacher_trained:
        result["teacher_top1"] = evaluate(trained.teacher, data.test_x, data.test_y)
    return result


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for bits in WEIGHT_BITS:
        for scheme in SCHEMES:
            sel = [r for r in runs if r["weight_bits"] == bits and r["scheme"] == scheme]
            if not sel:
                continue
            acc = [r["student_top1"] for r in sel]
            rows.append({
                "weight_bits": bits,
                "scheme": scheme,
                "seeds": len(sel),
                "top1_mean": statistics.mean(acc),
                "top1_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "top1_min": min(acc),
                "top1_max": max(acc),
                "seconds_mean": statistics.mean(r["seconds"] for r in sel),
            })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| student | scheme | top-1 mean | std | min..max | wall s (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = "ternary W2A8" if r["weight_bits"] == 2 else f"W{r['weight_bits']}A8"
        lines.append(
            f"| {name} | {r['scheme']} | {r['top1_mean']:.2%} | {r['top1_std']:.2%} | "
            f"{r['top1_min']:.2%}..{r['top1_max']:.2%} | {r['seconds_mean']:.0f} |"
        )
    return "\n".join(lines)


def merge(paths: list[Path], out: Path) -> None:
    """Combine the runs of several result files (e.g. one per seed) into one report."""
    reports = [json.loads(p.read_text()) for p in paths]
    runs = sorted(
        (run for r in reports for run in r["runs"]),
        key=lambda r: (r["seed"], r["weight_bits"], SCHEMES.index(r["scheme"])),
    )
    report = {**reports[0], "runs": runs, "summary": summarize(runs), "merged_from": len(paths)}
    write_json(out, report)
    print(markdown(report["summary"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override all epochs")
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", type=Path, nargs="+", help="combine result files, run nothing")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    base = load_recipe(args.recipe).with_overrides(epochs=args.epochs)
    limit = base.train_limit if args.train_limit is None else args.train_limit
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        for seed in args.seeds:
            data = load_dataset(base.dataset, base.data_path, seed, limit)
            cache = Path(tmp) / f"seed{seed}-cache"
            cache.mkdir()
            for bits in WEIGHT_BITS:
                for scheme in SCHEMES:
                    recipe = base.with_overrides(
                        weight_bits=bits, act_bits=8, scheme=scheme, seed=seed
                    )
                    workdir = Path(tmp) / f"seed{seed}-w{bits}-{scheme}"
                    result = run_one(recipe, data, workdir, cache)
                    runs.append({"seed": seed, "weight_bits": bits, "scheme": scheme, **result})
                    print(
                        f"seed {seed} W{bits}A8 scheme {scheme:>4}: top-1 "
                        f"{result['student_top1']:.2%} in {result['seconds']:.0f} s",
                        flush=True,
                    )
    rows = summarize(runs)
    report = {
        "benchmark": "distill",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
        },
        "threads": base.threads,
        "recipe": base.to_dict() | {"train_limit": limit},
        "runs": runs,
        "summary": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(markdown(rows))


if __name__ == "__main__":
    main()
