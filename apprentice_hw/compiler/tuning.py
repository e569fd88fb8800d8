"""MetaSchedule tuning of the heaviest kernels, with a per-target database every build reuses.

The default schedules (``schedules.py``) are the starting point: a first round measures each
task's default schedule (a ``ScheduleFn`` space, one trial) into the database, then
MetaSchedule's own post-order-apply space is searched. A build applies a task's best record,
so tuning keeps the default unless it measured something faster.
Only the ``top`` heaviest conv tasks are tuned: on a 2-core host MetaSchedule spends about a
minute per task per round on its own bookkeeping (measured 2026-11-25), and its generic
candidates for the blocked int8 conv are rarely better than the default.

The database lives in ``$APPRENTICE_HW_CACHE/tuning/<target>/`` (default ``~/.cache/
apprentice-hw``): MetaSchedule's two JSON files, guarded by a file lock so concurrent builds
and tunes never read or write half a record. ``compile_module`` applies it automatically.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apprentice_hw.hardware import Target

EVOLUTIONARY_MIN_TRIALS = 32  # below this, random replay of the design space is cheaper
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"


def cache_root() -> Path:
    return Path(os.environ.get("APPRENTICE_HW_CACHE", Path.home() / ".cache" / "apprentice-hw"))


def tuning_dir(target: Target) -> Path:
    return cache_root() / "tuning" / target.name


@contextmanager
def locked(target: Target) -> Iterator[Path]:
    """The target's tuning directory, held under an exclusive file lock."""
    directory = tuning_dir(target)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _database(directory: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(
        path_workload=str(directory / WORKLOAD_FILE),
        path_tuning_record=str(directory / RECORD_FILE),
        allow_missing=True,
    )


def has_records(target: Target) -> bool:
    return (tuning_dir(target) / RECORD_FILE).is_file()


def apply_records(mod, target: Target, tvm_target):
    """``mod`` (fused TIR + Relax) with every function the database has a record for scheduled."""
    from tvm import relax

    from apprentice_hw.compiler.intrinsics import register_avx2, register_vnni

    register_vnni()  # replaying a record may tensorize with either intrinsic
    register_avx2()
    with locked(target) as directory:
        database = _database(directory)
        with database, tvm_target:
            return relax.transform.MetaScheduleApplyDatabase()(mod)


@dataclass(frozen=True)
class TuneResult:
    tasks_tuned: list[str]
    trials: int
    best_us: dict[str, float]  # task -> best measured latency in microseconds
    database: Path


def _default_space(tvm_target):
    from apprentice_hw.compiler.schedules import rule_for

    def space(sch):
        rule_for(sch).apply(sch, tvm_target)
        return [sch]

    return space


def _build(mod, target, _params):
    """MetaSchedule's default build without importing all of TVM's tensor intrinsics."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def tune(fused, target: Target, trials: int, top: int = 3, progress=None) -> TuneResult:
    """Tune the ``top`` heaviest conv tasks of ``fused`` with ``trials`` trials each.

    ``fused`` is a module after TVM's legalization and fusion (``schedules.fused_module``);
    ``progress`` is called once per task, after tuning, with (task name, best microseconds or
    None). The database stays locked while tuning runs: a build for the same target waits.
    """
    from tvm.s_tir import meta_schedule as ms

    from apprentice_hw.compiler.intrinsics import register_avx2, register_vnni

    register_vnni()
    register_avx2()
    tvm_target = target.tvm_target()
    tasks = ms.relax_integration.extract_tasks(fused, tvm_target)
    convs = [task for task in tasks if "conv2d_int" in task.task_name]
    convs.sort(key=lambda task: -_flops(task.dispatched[0]) * task.weight)
    chosen = convs[:top]

    def contexts(space, strategy: str):
        return [
            ms.TuneContext(
                mod=task.dispatched[0], target=tvm_target, space_generator=space,
                search_strategy=strategy, task_name=task.task_name, num_threads=1,
            ).clone()
            for task in chosen
        ]  # fmt: skip

    # Round 1 measures the default schedule of every task (one trial each, replayed: nothing to
    # search), so the database's best record can only be the default or something measured
    # faster. Round 2 searches; the evolutionary search only pays off with enough trials.
    search = "evolutionary" if trials >= EVOLUTIONARY_MIN_TRIALS else "replay-trace"
    rounds = [
        (contexts(ms.space_generator.ScheduleFn(_default_space(tvm_target)), "replay-trace"), 1),
        (contexts(ms.space_generator.PostOrderApply(), search), trials),
    ]
    with locked(target) as directory, tempfile.TemporaryDirectory() as work:
        database = _database(directory)
        for round_contexts, round_trials in rounds:
            ms.tune.tune_tasks(
                tasks=round_contexts, task_weights=[task.weight for task in chosen],
                work_dir=work, max_trials_global=round_trials * len(chosen),
                max_trials_per_task=round_trials, num_trials_per_iter=min(round_trials, 8),
                builder=ms.builder.LocalBuilder(f_build=_build, timeout_sec=300, max_workers=1),
                runner=ms.runner.LocalRunner(timeout_sec=120), database=database,
            )  # fmt: skip
        context_of = dict(zip([t.task_name for t in chosen], rounds[0][0], strict=True))
        best = {}
        for task in chosen:
            context = context_of[task.task_name]
            records = database.get_top_k(database.commit_workload(context.mod), 1)
            if records and records[0].run_secs:
                best[task.task_name] = float(sum(records[0].run_secs) / len(records[0].run_secs))
                best[task.task_name] *= 1e6
            if progress is not None:
                progress(task.task_name, best.get(task.task_name))
    return TuneResult([t.task_name for t in chosen], trials, best, directory)


def _flops(func) -> float:
    from tvm import s_tir

    try:
        return float(s_tir.analysis.estimate_tir_flops(func))
    except Exception:  # no estimate for an exotic function: rank it last
        return 0.0
