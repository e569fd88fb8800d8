"""Distillation benchmark on real Fashion-MNIST: every scheme against its fair twin.

What distillation alone buys, per precision (ternary W2A8, W4A8, all-low W4A4):

- schemes A and B against ``none``: the same student, same epochs, from random weights, no
  teacher;
- scheme C against ``finetune``: the same student from the same trained fp32 weights,
  fine-tuned for the same epochs without a teacher.

Each configuration runs with every seed (a seed fixes the training subset, the initial weights
and the batch order, shared by a scheme and its twin), so a gain is a paired difference per
seed: its mean and a 95 % t-interval over the seeds. Per seed the fp32 teacher and the fp32
twin of the student (the "fp32 network" the paper's Figures 3/4 subtract from) are trained once
and reused. Before any training, one process times the step of each scheme against the plain
quantization-aware step of the same student (medians, nothing else running).

Results: ``benchmarks/results/distill.json`` and the figures next to it
(``distill-precision.png``: Figures 3/4 style, ``distill-epochs.png``: Figure 5 style).

Resumable: ``--work`` (default ``build/distill-bench``) keeps every finished run and the
per-epoch checkpoints of unfinished ones; the same command run again continues where it
stopped (a different configuration in the same folder is refused).

    python benchmarks/distill.py                         # the committed run (about 1.5 h, 2 cores)
    python benchmarks/distill.py --quick --work /tmp/q   # a 2-minute smoke run of everything
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from apprentice_hw.atomic import atomic_path, write_json, write_text

RESULTS = Path(__file__).parent / "results"
PRECISIONS = ((2, 8), (4, 8), (4, 4))  # (weight bits, activation bits)
SCHEMES = ("none", "A", "B", "finetune", "C")
# The all-low-precision student runs without scheme A: A trains the teacher every step (2.8x a
# QAT step) and its question, joint training, is answered at W2A8 and W4A8.
SCHEMES_AT = {(4, 4): ("none", "B", "finetune", "C")}
TWIN = {"A": "none", "B": "none", "C": "finetune"}  # each distillation scheme's fair baseline
# What a scheme needs from its seed's shared training, and the phase checkpoints that hold it.
NEEDS = {"none": (), "A": (), "B": ("teacher",), "finetune": ("fp32-student",),
         "C": ("teacher", "fp32-student")}  # fmt: skip
T_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}  # two-sided 95 % Student t quantiles by degrees of freedom


@dataclass(frozen=True)
class Settings:
    """Everything that fixes the benchmark's numbers; a resumed run must use the same."""

    recipe: str
    train_limit: int
    student_epochs: int
    teacher_epochs: int
    seeds: tuple[int, ...]
    precisions: tuple[tuple[int, int], ...]
    beta: float
    gamma: float
    tau: float
    augment: bool


@dataclass(frozen=True)
class Job:
    seed: int
    weight_bits: int
    act_bits: int
    scheme: str

    @property
    def name(self) -> str:
        return f"seed{self.seed}-w{self.weight_bits}a{self.act_bits}-{self.scheme}"


def recipe_for(settings: Settings, job: Job | None = None):
    """The recipe a run trains with: the named recipe with the benchmark's settings."""
    from apprentice_hw.config import load_recipe

    recipe = load_recipe(settings.recipe)
    recipe = dataclasses.replace(
        recipe,
        train_limit=settings.train_limit,
        augment=settings.augment,
        teacher_train=dataclasses.replace(recipe.teacher_train, epochs=settings.teacher_epochs),
        student_train=dataclasses.replace(recipe.student_train, epochs=settings.student_epochs),
        distill=dataclasses.replace(
            recipe.distill, beta=settings.beta, gamma=settings.gamma, tau=settings.tau
        ),
    )
    if job is None:
        return recipe
    return recipe.with_overrides(weight_bits=job.weight_bits, act_bits=job.act_bits,
                                 scheme=job.scheme, seed=job.seed)  # fmt: skip


# -- one run (in a worker process) ------------------------------------------------------------
def run_job(settings: Settings, job: Job, work: Path) -> dict:
    """Train one configuration, resuming its own checkpoints and reusing the seed's shared
    teacher and fp32 twin; returns what the summary needs."""
    from apprentice_hw.data import load_dataset
    from apprentice_hw.outputs import CHECKPOINTS
    from apprentice_hw.progress import Progress
    from apprentice_hw.training import train_models

    recipe = recipe_for(settings, job)
    data = load_dataset(recipe.dataset, recipe.data_path, job.seed, recipe.train_limit)
    shared = work / f"seed{job.seed}"
    run_dir = work / "runs" / job.name
    (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    for phase in NEEDS[job.scheme]:  # absent only for the run that trains them
        if (shared / f"{phase}.ckpt").exists():
            shutil.copy(shared / f"{phase}.ckpt", run_dir / CHECKPOINTS / f"{phase}.ckpt")
    start = time.perf_counter()
    trained = train_models(recipe, data, run_dir, Progress(quiet=True), resume=True)
    seconds = time.perf_counter() - start
    for phase in ("teacher", "fp32-student"):  # the first run of a seed that trained them
        made, kept = run_dir / CHECKPOINTS / f"{phase}.ckpt", shared / f"{phase}.ckpt"
        if made.exists() and not kept.exists():
            shared.mkdir(exist_ok=True)
            with atomic_path(kept) as tmp:
                shutil.copy(made, tmp)
    # The student's own epochs: its phase in every scheme ("joint" in A, with the teacher).
    student = [m for m in trained.history if m.phase in ("student", "joint")]
    return {
        **dataclasses.asdict(job),
        "student_top1": student[-1].test_top1["student"],
        "curve": [m.test_top1["student"] for m in student],
        "seconds": seconds,
    }


# -- scheduling -------------------------------------------------------------------------------
def all_jobs(settings: Settings) -> list[Job]:
    return [Job(seed, w, a, scheme) for seed in settings.seeds for w, a in settings.precisions
            for scheme in SCHEMES_AT.get((w, a), SCHEMES)]  # fmt: skip


def provides(job: Job, settings: Settings) -> bool:
    """The seed's first scheme-C run trains its teacher and fp32 twin for the others."""
    return job.scheme == "C" and (job.weight_bits, job.act_bits) == settings.precisions[0]


def ready(job: Job, work: Path, settings: Settings) -> bool:
    """The job trains what it needs itself, or its seed's shared checkpoints exist."""
    shared = work / f"seed{job.seed}"
    return provides(job, settings) or all(
        (shared / f"{phase}.ckpt").exists() for phase in NEEDS[job.scheme]
    )


def load_runs(work: Path) -> dict[str, dict]:
    path = work / "runs.jsonl"
    if not path.exists():
        return {}
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {Job(r["seed"], r["weight_bits"], r["act_bits"], r["scheme"]).name: r for r in runs}


def check_settings(work: Path, settings: Settings) -> None:
    """A work folder belongs to one configuration: resuming another would mix results."""
    path = work / "settings.json"
    mine = json.loads(json.dumps(dataclasses.asdict(settings)))
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            differ = ", ".join(k for k in mine if mine[k] != theirs.get(k))
            sys.exit(f"error: {work} holds a run with other settings ({differ}); give another "
                     "--work folder or delete it")  # fmt: skip
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, mine)


def run_all(settings: Settings, work: Path, jobs: int) -> dict[str, dict]:
    """Every configuration not yet finished, ``jobs`` at a time, each in its own process."""
    done = load_runs(work)
    pending = [job for job in all_jobs(settings) if job.name not in done]
    pending.sort(key=lambda job: not provides(job, settings))  # shared training first
    total, finished = len(all_jobs(settings)), len(done)
    print(f"{finished} of {total} runs already done in {work}", flush=True)
    running: dict[Future, Job] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        while pending or running:
            for job in list(pending):
                if len(running) >= jobs:
                    break
                if ready(job, work, settings):
                    pending.remove(job)
                    running[pool.submit(run_job, settings, job, work)] = job
            if not running:
                sys.exit("error: runs wait for a seed's teacher that no run trains")
            finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished_now:
                job = running.pop(future)
                result = future.result()
                done[job.name] = result
                with (work / "runs.jsonl").open("a") as log:
                    log.write(json.dumps(result) + "\n")
                finished += 1
                print(f"[{finished}/{total}] {job.name}: top-1 {result['student_top1']:.2%} in "
                      f"{result['seconds']:.0f} s", flush=True)  # fmt: skip
    return done


# -- step cost --------------------------------------------------------------------------------
def step_costs(settings: Settings, steps: int) -> list[dict]:
    """Median time of one training step per scheme against the plain QAT step, per precision.

    The steps are the trainer's own: its (augmented) batches and each phase's loss function,
    with backward and the optimizer step, on one thread as in the runs. Kinds alternate over
    three rounds so a slow moment of the machine does not land on one kind only. ``distill`` is
    a B/C step on augmented images (the teacher runs every step); ``cached`` a B/C step on fixed
    images, where the frozen teacher's logits are computed once per phase (its ratio includes
    that pass, spread over the phase's steps). The plain QAT and scheme A steps use the
    recipe's augmentation setting.
    """
    import torch

    from apprentice_hw.data import load_dataset
    from apprentice_hw.distill import TrainContext
    from apprentice_hw.distill.schemes import SchemeInputs, distill_phase, joint_phase
    from apprentice_hw.distill.trainer import cross_entropy_phase, epoch_batches
    from apprentice_hw.progress import Progress
    from apprentice_hw.quant.calibration import calibrate_activations
    from apprentice_hw.training import build_student, build_teacher

    torch.set_num_threads(1)
    costs = []
    for w, a in settings.precisions:
        recipe = recipe_for(settings, Job(0, w, a, "B"))
        data = load_dataset(recipe.dataset, recipe.data_path, 0, recipe.train_limit)
        spec = recipe.student_train
        times: dict[str, list[float]] = {"qat": [], "distill": [], "cached": [], "joint": []}
        cache_seconds = []
        for _ in range(3):
            for kind in times:
                teacher, student = build_teacher(recipe, data), build_student(recipe, data)
                calibrate_activations(student, data.train_x[: 4 * spec.batch_size],
                                      spec.batch_size)  # fmt: skip
                # "distill": a teacher forward every step (augmented images, never cached);
                # "cached": fixed images, logits once per phase; the others as the recipe runs.
                augmentation = {"distill": data.augmentation, "cached": "none"}.get(
                    kind, data.augmentation if recipe.augment else "none"
                )
                context = TrainContext((data.train_x, data.train_y), (data.test_x, data.test_y),
                                       augmentation, 0, Progress(quiet=True))  # fmt: skip
                inputs = SchemeInputs(
                    teacher=teacher, student=student, teacher_spec=recipe.teacher_train,
                    student_spec=spec, distill=recipe.distill, context=context,
                    same_architecture=False, build_fp32_student=lambda: None,
                )  # fmt: skip
                start = time.perf_counter()
                if kind == "qat":
                    phase = cross_entropy_phase("student", student, spec)
                elif kind == "joint":
                    phase = joint_phase(inputs)
                else:
                    phase = distill_phase(teacher, student, inputs)
                if kind == "cached":
                    cache_seconds.append(time.perf_counter() - start)
                generator = torch.Generator().manual_seed(0)
                batches = epoch_batches(context, spec.batch_size, generator)
                times[kind].append(median_step_ms(phase, batches, steps))
        ms = {kind: statistics.median(values) for kind, values in times.items()}
        steps_per_phase = settings.student_epochs * math.ceil(len(data.train_x) / spec.batch_size)
        cached_total = ms["cached"] + 1000 * statistics.median(cache_seconds) / steps_per_phase
        costs.append({
            "weight_bits": w, "act_bits": a, "steps_timed": 3 * steps,
            "qat_ms": ms["qat"], "distill_ms": ms["distill"], "cached_ms": ms["cached"],
            "joint_ms": ms["joint"],
            "cache_pass_s": statistics.median(cache_seconds),
            "distill_ratio": ms["distill"] / ms["qat"],
            "cached_ratio": cached_total / ms["qat"],
            "joint_ratio": ms["joint"] / ms["qat"],
        })  # fmt: skip
        print(f"step cost {precision_name(w, a)}: QAT {ms['qat']:.1f} ms, B/C "
              f"{ms['distill']:.1f} ms ({ms['distill'] / ms['qat']:.2f}x), cached "
              f"{cached_total / ms['qat']:.2f}x, A {ms['joint'] / ms['qat']:.2f}x",
              flush=True)  # fmt: skip
    return costs


def median_step_ms(phase, batches, steps: int) -> float:
    """Median wall time of ``steps`` training steps of ``phase`` after two warm-up steps."""
    import torch

    parameters = [p for name in phase.trainable for p in phase.networks[name].parameters()
                  if p.requires_grad]  # fmt: skip
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9)
    for network in phase.networks.values():
        network.train()
    times = []
    for count, (xb, yb, index) in enumerate(batches):
        if count == steps + 2:
            break
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = phase.loss_fn(xb, yb, index)
        loss.backward()
        optimizer.step()
        if count >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


# -- summary ----------------------------------------------------------------------------------
def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % t-interval (0 half-width for one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    t = T_975.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


def shared_accuracy(work: Path, seed: int, phase: str) -> float | None:
    """The last test top-1 of a seed's shared phase (the teacher, the fp32 twin)."""
    import torch

    path = work / f"seed{seed}" / f"{phase}.ckpt"
    if not path.exists():
        return None
    history = torch.load(path, map_location="cpu", weights_only=True)["history"]
    return history[-1]["test_top1"][phase]


def summarize(settings: Settings, runs: dict[str, dict], work: Path) -> dict:
    fp32 = {s: shared_accuracy(work, s, "fp32-student") for s in settings.seeds}
    teacher = {s: shared_accuracy(work, s, "teacher") for s in settings.seeds}
    rows = []
    for w, a in settings.precisions:
        for scheme in SCHEMES:
            found = [runs[Job(s, w, a, scheme).name] for s in settings.seeds
                     if Job(s, w, a, scheme).name in runs]  # fmt: skip
            if not found:
                continue
            top1 = [r["student_top1"] for r in found]
            mean, half = interval(top1)
            vs_fp32 = [r["student_top1"] - fp32[r["seed"]] for r in found
                       if fp32[r["seed"]] is not None]  # fmt: skip
            row = {"weight_bits": w, "act_bits": a, "scheme": scheme, "seeds": len(found),
                   "top1_mean": mean, "top1_ci95": half, "top1_min": min(top1),
                   "top1_max": max(top1),
                   "seconds_mean": statistics.mean(r["seconds"] for r in found)}  # fmt: skip
            if vs_fp32:
                row["vs_fp32_mean"], row["vs_fp32_ci95"] = interval(vs_fp32)
            if scheme in TWIN:
                gains = [r["student_top1"] - runs[Job(r["seed"], w, a, TWIN[scheme]).name][
                    "student_top1"] for r in found
                    if Job(r["seed"], w, a, TWIN[scheme]).name in runs]  # fmt: skip
                if gains:
                    row["twin"] = TWIN[scheme]
                    row["gain_mean"], row["gain_ci95"] = interval(gains)
                    row["gain_seeds"] = len(gains)
            rows.append(row)
    known = [v for v in fp32.values() if v is not None]
    teachers = [v for v in teacher.values() if v is not None]
    return {
        "rows": rows,
        "fp32_student_top1": interval(known)[0] if known else None,
        "teacher_top1": interval(teachers)[0] if teachers else None,
    }


def precision_name(w: int, a: int) -> str:
    return f"{'ternary ' if w == 2 else ''}W{w}A{a}"


def markdown(summary: dict, costs: list[dict]) -> str:
    lines = [
        "| student | scheme | top-1 mean ± 95% CI | vs fp32 net | gain over twin ± 95% CI | "
        "wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        gain = (f"{100 * r['gain_mean']:+.2f} ± {100 * r['gain_ci95']:.2f} pts "
                f"(vs {r['twin']})") if "gain_mean" in r else ""  # fmt: skip
        vs = f"{100 * r['vs_fp32_mean']:+.2f} pts" if "vs_fp32_mean" in r else ""
        lines.append(
            f"| {precision_name(r['weight_bits'], r['act_bits'])} | {r['scheme']} | "
            f"{r['top1_mean']:.2%} ± {100 * r['top1_ci95']:.2f} | {vs} | {gain} | "
            f"{r['seconds_mean']:.0f} |"
        )
    if costs:
        lines += ["", "| student | QAT step | B/C step (ratio) | B/C step, cached teacher "
                  "(ratio) | A step (ratio) |", "|---|---|---|---|---|"]  # fmt: skip
        for c in costs:
            lines.append(
                f"| {precision_name(c['weight_bits'], c['act_bits'])} | {c['qat_ms']:.1f} ms | "
                f"{c['distill_ms']:.1f} ms ({c['distill_ratio']:.2f}x) | "
                f"{c['cached_ms']:.1f} ms ({c['cached_ratio']:.2f}x) | "
                f"{c['joint_ms']:.1f} ms ({c['joint_ratio']:.2f}x) |"
            )
    return "\n".join(lines)


# -- figures ----------------------------------------------------------------------------------
def plot_precision(summary: dict, path: Path) -> None:
    """Figures 3/4 style: top-1 difference from the fp32 network per precision, each scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if "vs_fp32_mean" in r]
    groups = list(dict.fromkeys((r["weight_bits"], r["act_bits"]) for r in rows))
    width = 0.8 / len(SCHEMES)
    figure, axis = plt.subplots(figsize=(8, 4), dpi=100)
    for k, scheme in enumerate(SCHEMES):
        xs, ys, errs = [], [], []
        for g, (w, a) in enumerate(groups):
            for r in rows:
                if (r["weight_bits"], r["act_bits"], r["scheme"]) == (w, a, scheme):
                    xs.append(g + (k - (len(SCHEMES) - 1) / 2) * width)
                    ys.append(100 * r["vs_fp32_mean"])
                    errs.append(100 * r["vs_fp32_ci95"])
        label = {"none": "no distillation", "finetune": "fp32 init, no distillation",
                 "C": "C (fp32 init)"}.get(scheme, scheme)  # fmt: skip
        axis.bar(xs, ys, width, yerr=errs, capsize=3, label=label)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(groups)), [precision_name(w, a) for w, a in groups])
    axis.set_ylabel("top-1 difference from fp32 network (points)")
    axis.set_title("Distillation by precision (mean over seeds, 95% CI)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def plot_epochs(settings: Settings, runs: dict[str, dict], path: Path) -> None:
    """Figure 5 style: test top-1 error per epoch for schemes A, B and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = len(settings.precisions)
    figure, axes = plt.subplots(1, columns, figsize=(4.5 * columns, 3.8), dpi=100, sharey=True,
                                squeeze=False)  # fmt: skip
    for axis, (w, a) in zip(axes[0], settings.precisions, strict=True):
        for scheme in ("none", "A", "B"):
            curves = [runs[Job(s, w, a, scheme).name]["curve"] for s in settings.seeds
                      if Job(s, w, a, scheme).name in runs]  # fmt: skip
            if not curves:
                continue
            epochs = range(1, len(curves[0]) + 1)
            mean = [100 * (1 - statistics.mean(c[e - 1] for c in curves)) for e in epochs]
            low = [100 * (1 - max(c[e - 1] for c in curves)) for e in epochs]
            high = [100 * (1 - min(c[e - 1] for c in curves)) for e in epochs]
            label = "no distillation" if scheme == "none" else f"scheme {scheme}"
            colour = {"none": "C0", "A": "C1", "B": "C2"}[scheme]  # the same in every panel
            axis.plot(epochs, mean, marker="o", color=colour, label=label)
            axis.fill_between(epochs, low, high, color=colour, alpha=0.15)
        axis.set(title=precision_name(w, a), xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 error (%)")
    figure.suptitle("Top-1 error per epoch (mean over seeds, band: min..max)")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


# -- main -------------------------------------------------------------------------------------
def parse_settings(args: argparse.Namespace) -> Settings:
    from apprentice_hw.config import load_recipe

    loss = load_recipe(args.recipe).distill
    args.beta = loss.beta if args.beta is None else args.beta
    args.gamma = loss.gamma if args.gamma is None else args.gamma
    args.tau = loss.tau if args.tau is None else args.tau
    augment = load_recipe(args.recipe).augment
    if args.quick:
        return Settings(args.recipe, 600, 1, 1, (0, 1), ((2, 8),), args.beta, args.gamma, args.tau,
                        augment)  # fmt: skip
    return Settings(args.recipe, args.train_limit, args.epochs, args.teacher_epochs,
                    tuple(args.seeds), PRECISIONS, args.beta, args.gamma, args.tau,
                    augment)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion-mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=5, help="student epochs, every scheme")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--beta", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--gamma", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--tau", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs at once, each in its own process with one thread")  # fmt: skip
    parser.add_argument("--step-steps", type=int, default=30, help="steps timed per scheme")
    parser.add_argument("--work", type=Path, default=Path("build/distill-bench"))
    parser.add_argument("--out", type=Path, default=RESULTS / "distill.json")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, 600 images")
    args = parser.parse_args()
    settings = parse_settings(args)
    check_settings(args.work, settings)
    costs_path = args.work / "step_costs.json"
    if not costs_path.exists():  # timed first, alone on the machine
        write_json(costs_path, step_costs(settings, 5 if args.quick else args.step_steps))
    costs = json.loads(costs_path.read_text())
    runs = run_all(settings, args.work, args.jobs)
    summary = summarize(settings, runs, args.work)
    report = {
        "benchmark": "distill",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "jobs": args.jobs,
        },
        "settings": dataclasses.asdict(settings),
        "recipe": recipe_for(settings).to_dict(),
        "step_costs": costs,
        "summary": summary,
        "runs": [runs[job.name] for job in all_jobs(settings)],
    }
    write_json(args.out, report)
    stem = args.out.with_suffix("")
    plot_precision(summary, stem.parent / f"{stem.name}-precision.png")
    plot_epochs(settings, runs, stem.parent / f"{stem.name}-epochs.png")
    table = markdown(summary, costs)
    write_text(stem.parent / f"{stem.name}.md", table + "\n")
    print(table)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
