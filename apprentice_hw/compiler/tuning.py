"""Tuning the conv kernels over the knobs of their schedule, with databases every build reuses.

The blocked conv schedule (``schedules.py``) has a few free choices (``ConvKnobs``: register
tile width, output blocks per tile, whether the prologue runs on threads). Tuning measures
every setting of them for each conv kernel of a model, the default first, and keeps the
fastest as a MetaSchedule tuning record. MetaSchedule's generic search is not used: its
candidates for these kernels measured 20-200x slower than the default schedule or failed to
build (2026-11-25, see the design notes), while the knob space is small enough (at most a few
dozen settings per kernel) to measure completely.

MetaSchedule does the rest: ``LocalBuilder`` compiles candidates in worker processes (with a
build function that skips TVM's 70 s tensor-intrinsic import), ``LocalRunner`` or
``RPCRunner`` (a board behind a TVM tracker; modules cross-linked as ``.so``) times them, and
the records live in a ``JSONDatabase`` that ``compile_module`` applies through
``MetaScheduleApplyDatabase``, so a later build runs zero new trials.

Databases, per target and per CPU model (a record replays instructions, e.g. VNNI, that only
that CPU family has, and timings chose it):

* ``$APPRENTICE_HW_CACHE/tuning/<target>/<mcpu>/`` (default ``~/.cache/apprentice-hw``): what
  this user tuned. Every read and every commit happens under a file lock and reopens the
  files, so builds and tunes running at once always see whole records and consistent indices.
* ``targets/tuned/<target>/<mcpu>.json`` (shipped, read-only, like TVM's old TopHub): the
  best knobs per conv kernel of the zoo students, keyed by ``schedules.kernel_key``; one line
  per kernel instead of MetaSchedule's full workload modules (~400 KB each). Kernels the
  user's database has a record for use that record instead.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from apprentice_hw.atomic import uninterrupted
from apprentice_hw.compiler.runtime import use_all_cores
from apprentice_hw.compiler.schedules import kernel_key
from apprentice_hw.errors import UserError, summarize
from apprentice_hw.hardware import TARGETS_ENV, Target, find_cross_compiler
from apprentice_hw.remote import RemoteDevice
from apprentice_hw.resources import CACHE_ENV, cache_root, data_dirs

LOG = logging.getLogger(__name__)
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
SHIPPED_FOLDER = "tuned"  # inside each targets/ folder
BUILD_CHUNK = 8  # candidates compiled per builder call (one worker pool per call)
MEASURE_REPEATS = 5  # timings per candidate; the database ranks by their mean
MEASURE_MIN_MS = 20  # each timing calls the kernel for at least this long


# -- databases -----------------------------------------------------------------------------
def cpu_key(tvm_target) -> str:
    """The CPU model a record is valid for: the target's ``mcpu`` (LLVM's name)."""
    return str(tvm_target.attrs.get("mcpu", "generic") or "generic")


def tuning_dir(target: Target, tvm_target=None) -> Path:
    tvm_target = tvm_target or target.tvm_target()
    return cache_root() / "tuning" / target.name / cpu_key(tvm_target)


def shipped_files(target: Target, tvm_target=None) -> list[Path]:
    """Pre-tuned knob tables for ``target`` on its CPU model, highest priority first."""
    tvm_target = tvm_target or target.tvm_target()
    name = f"{cpu_key(tvm_target)}.json"
    return [
        folder / SHIPPED_FOLDER / target.name / name
        for folder in data_dirs("targets", TARGETS_ENV)
        if (folder / SHIPPED_FOLDER / target.name / name).is_file()
    ]


def shipped_knobs(target: Target, tvm_target=None) -> dict:
    """kernel key -> ConvKnobs from the shipped tables (earlier folders win).

    A table written by another TVM version is skipped: its keys hash that version's IR.
    """
    import tvm

    from apprentice_hw.compiler.schedules import ConvKnobs

    table: dict = {}
    for path in reversed(shipped_files(target, tvm_target)):
        try:
            data = json.loads(path.read_text())
            if data.get("tvm") != tvm.__version__:
                LOG.warning("%s was tuned with TVM %s, not %s: ignored", path, data.get("tvm"),
                            tvm.__version__)  # fmt: skip
                continue
            for key, entry in data["kernels"].items():
                table[key] = ConvKnobs(**entry["knobs"])
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            raise UserError(
                f"the pre-tuned table {path} is damaged ({summarize(exc, 120)}); delete it or "
                "restore it from the package"
            ) from exc
    return table


def write_shipped_knobs(path: Path, results: list, tvm_target, measured_on: str) -> int:
    """Write the best knobs of ``results`` (TaskResults) where they beat the default."""
    import datetime
    from dataclasses import asdict

    import tvm

    from apprentice_hw.atomic import write_json

    kernels = {
        task.key: {
            "kernel": task.name, "knobs": asdict(task.best_knobs),
            "default_us": round(task.default_us, 2), "best_us": round(task.best_us, 2),
        }
        for task in results
        if task.speedup is not None and task.speedup > 1
    }  # fmt: skip
    write_json(path, {
        "tvm": tvm.__version__, "cpu": cpu_key(tvm_target), "measured_on": measured_on,
        "date": datetime.date.today().isoformat(), "kernels": dict(sorted(kernels.items())),
    })  # fmt: skip
    return len(kernels)


@contextmanager
def locked(directory: Path) -> Iterator[Path]:
    """``directory`` (created if needed) held under an exclusive file lock."""
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


def _damaged(directory: Path, why: str) -> UserError:
    return UserError(
        f"the tuning database in {directory} is damaged ({why}); delete that folder "
        f"('rm -r {directory}') and tune again: builds meanwhile use the default schedules"
    )


def check_database(target: Target, writing: bool = False) -> None:
    """Refuse, before any work, a damaged tuning database (or, to tune, an unwritable one).

    A record file cut short (a full disk, a killed process) would otherwise stop every later
    build for the target with a C++ traceback from MetaSchedule's JSON reader. Every line of
    both files must be JSON, and every record must name a workload that exists.
    """
    directory = tuning_dir(target)
    if writing:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
                pass
        except OSError as exc:
            raise UserError(
                f"cannot write the tuning database in {directory} ({exc.strerror or exc}); "
                f"set {CACHE_ENV} to a writable folder"
            ) from exc
    shipped_knobs(target)
    workloads = _json_lines(directory / WORKLOAD_FILE, directory)
    for record in _json_lines(directory / RECORD_FILE, directory):
        if not (isinstance(record, list) and record and isinstance(record[0], int)
                and 0 <= record[0] < len(workloads)):  # fmt: skip
            raise _damaged(directory, f"a record in {RECORD_FILE} names no known workload")


def _json_lines(path: Path, directory: Path) -> list:
    """Every line of a MetaSchedule JSON database file, parsed (missing file: empty)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise _damaged(directory, f"{path.name}: {summarize(exc, 120)}") from exc
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError as exc:
            raise _damaged(directory, f"{path.name} line {number} is not JSON") from exc
    return parsed


def apply_records(mod, target: Target, tvm_target):
    """``mod`` (fused TIR + Relax) with every function the user's database knows scheduled."""
    from tvm import relax

    from apprentice_hw.compiler.intrinsics import register_avx2, register_vnni

    register_vnni()  # replaying a record may tensorize with either intrinsic
    register_avx2()
    with locked(tuning_dir(target, tvm_target)) as directory, _database(directory), tvm_target:
        return relax.transform.MetaScheduleApplyDatabase()(mod)


# -- tasks and candidates ------------------------------------------------------------------
@dataclass
class ConvTask:
    """One conv kernel of the model (with its fused epilogue) and the knob settings to try."""

    name: str
    mod: object  # tvm.IRModule with the unscheduled function as "main"
    weight: int  # how many times the model calls it
    flops: float
    space: list = field(default_factory=list)  # ConvKnobs, default first


def conv_tasks(fused, tvm_target) -> list[ConvTask]:
    """The blocked conv kernels of ``fused``, heaviest (flops x calls) first."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from apprentice_hw.compiler.schedules import conv_knob_space, rule_for

    tasks = []
    for task in ms.relax_integration.extract_tasks(fused, tvm_target):
        mod = task.dispatched[0]
        sch = s_tir.Schedule(mod)
        if rule_for(sch).name != "blocked_conv":
            continue
        tasks.append(
            ConvTask(task.task_name, mod, int(task.weight), _flops(mod["main"]),
                     conv_knob_space(sch, tvm_target))
        )  # fmt: skip
    tasks.sort(key=lambda t: -t.flops * t.weight)
    return tasks


def scheduled(task: ConvTask, knobs, tvm_target):
    """``task``'s function scheduled with ``knobs``: the schedule (with its trace), or None."""
    from tvm import s_tir

    from apprentice_hw.compiler.schedules import schedule_blocked_conv

    sch = s_tir.Schedule(task.mod, error_render_level="none")
    try:
        schedule_blocked_conv(sch, tvm_target, knobs)
    except Exception as exc:  # a knob setting the schedule cannot take: skip it
        LOG.info("%s: %s does not apply (%s)", task.name, knobs, exc)
        return None
    return sch


# -- building and measuring ----------------------------------------------------------------
def _build(mod, target, _params):
    """MetaSchedule's default build without importing all of TVM's tensor intrinsics."""
    import tvm

    return tvm.tirx.build(mod, target=target)


def _export(mod, target: Target) -> str:
    """Link a kernel as a build links a model (cross-linked for a board), in a temporary folder."""
    from apprentice_hw.compiler.tvm_build import link_library

    path = Path(tempfile.mkdtemp(prefix="apprentice-hw-tune-")) / "kernel.so"
    return str(link_library(mod, path, find_cross_compiler(target)))


@contextmanager
def _quiet_workers() -> Iterator[None]:
    """Worker processes started in the block write their stderr to /dev/null.

    MetaSchedule's builder and RPC runner workers share the terminal's stderr: on Ctrl-C each
    prints a KeyboardInterrupt traceback over the progress bar. Their failures reach us as
    error messages in the build and run results instead, so nothing is lost.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Measurer:
    """Compiles scheduled kernels and times them here or on a board (MetaSchedule workers)."""

    def __init__(self, target: Target, remote: RemoteDevice | None = None) -> None:
        with _quiet_workers():
            self._setup(target, remote)

    def _setup(self, target: Target, remote: RemoteDevice | None) -> None:
        from tvm.s_tir import meta_schedule as ms

        use_all_cores()  # runner workers inherit the thread count
        evaluator = ms.runner.EvaluatorConfig(
            number=1, repeat=MEASURE_REPEATS, min_repeat_ms=MEASURE_MIN_MS
        )
        find_cross_compiler(target)  # a missing cross compiler fails here, in one line
        self.device_type = "cpu"
        self.builder = ms.builder.LocalBuilder(
            f_build=_build, f_export=functools.partial(_export, target=target),
            timeout_sec=300, max_workers=max(1, min(BUILD_CHUNK, len(os.sched_getaffinity(0)))),
        )  # fmt: skip
        if remote is None:
            self.runner = ms.runner.LocalRunner(timeout_sec=120, evaluator_config=evaluator)
        else:
            config = ms.runner.RPCConfig(
                tracker_host=remote.host, tracker_port=remote.port, tracker_key=remote.key,
                session_timeout_sec=remote.session_timeout_s,
            )  # fmt: skip
            self.runner = ms.runner.RPCRunner(config, evaluator_config=evaluator)

    def measure(self, schedules: list, tvm_target) -> list[list[float] | None]:
        """Seconds per run of each schedule's kernel, or None where it failed (logged)."""
        with _quiet_workers():
            return self._measure(schedules, tvm_target)

    def _measure(self, schedules: list, tvm_target) -> list[list[float] | None]:
        from tvm.s_tir import meta_schedule as ms

        built = self.builder.build([ms.builder.BuilderInput(s.mod, tvm_target) for s in schedules])
        inputs, positions, results = [], [], [None] * len(schedules)
        for index, (sch, build) in enumerate(zip(schedules, built, strict=True)):
            if build.error_msg:
                LOG.info("candidate did not build: %s", build.error_msg.splitlines()[-1])
                continue
            info = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
            inputs.append(ms.runner.RunnerInput(build.artifact_path, self.device_type, info))
            positions.append(index)
        for index, future in zip(positions, self.runner.run(inputs), strict=True):
            result = future.result()
            if result.error_msg:
                LOG.info("candidate did not run: %s", result.error_msg.splitlines()[-1])
                continue
            results[index] = [float(s) for s in result.run_secs]
        for build in built:
            if build.artifact_path:
                _remove_artifact(build.artifact_path)
        return results


def _remove_artifact(path: str) -> None:
    import shutil

    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _commit(target: Target, tvm_target, task: ConvTask, measured: list[tuple]) -> None:
    """Append (schedule, seconds) records for ``task`` to the user's database, under the lock."""
    from tvm.s_tir import meta_schedule as ms

    with locked(tuning_dir(target, tvm_target)) as directory, uninterrupted():
        database = _database(directory)
        workload = database.commit_workload(task.mod)
        info = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
        for sch, seconds in measured:
            record = ms.database.TuningRecord(sch.trace, workload, seconds, tvm_target, info)
            database.commit_tuning_record(record)


# -- the tuning loop -----------------------------------------------------------------------
@dataclass(frozen=True)
class TuneProgress:
    """Where tuning is, reported after every batch of measurements."""

    task: str
    task_index: int  # 1-based
    tasks: int
    measured: int  # candidates measured so far, all tasks
    candidates: int  # candidates to measure, all tasks
    best_us: float | None  # this task's fastest so far
    default_us: float | None  # this task's default schedule


@dataclass
class TaskResult:
    name: str
    key: str  # schedules.kernel_key of the kernel
    default_us: float | None
    best_us: float | None
    best_knobs: object | None
    measured: int

    @property
    def speedup(self) -> float | None:
        if self.default_us is None or self.best_us is None:
            return None
        return self.default_us / self.best_us


@dataclass
class TuneResult:
    tasks: list[TaskResult]
    database: Path
    seconds: float
    stopped_by_budget: bool = False

    @property
    def measured(self) -> int:
        return sum(task.measured for task in self.tasks)


def tune(fused, target: Target, *, trials: int | None = None, top: int | None = None,
         time_budget_s: float | None = None, remote: RemoteDevice | None = None,
         progress: Callable[[TuneProgress], None] | None = None) -> TuneResult:  # fmt: skip
    """Measure the knob settings of ``fused``'s conv kernels and record the fastest.

    ``fused`` is a module after TVM's legalization and fusion (``schedules.fused_module``).
    ``top`` limits tuning to the heaviest kernels, ``trials`` the settings per kernel (the
    default first), ``time_budget_s`` the wall time (no new batch starts after it). Every
    measured setting is committed, so a stopped run keeps what it measured.
    """
    start = time.perf_counter()
    tvm_target = target.tvm_target()
    tasks = conv_tasks(fused, tvm_target)[:top]
    for task in tasks:
        task.space = task.space[:trials]
    try:
        return _tune_tasks(tasks, Measurer(target, remote), target, tvm_target, start,
                           time_budget_s, progress)  # fmt: skip
    except BaseException:  # Ctrl-C, a board that went away: stop the workers, then report
        _stop_worker_pools()
        raise


def _stop_worker_pools() -> None:
    """Stop MetaSchedule's worker pools that an interruption left running, without waiting.

    Left to the garbage collector, a ``PopenPoolExecutor`` is destroyed by its own last thread
    (which then fails to join itself: "Exception ignored ... cannot join current thread"), or
    at exit by ``shutdown()``, which deadlocks when the interrupt arrived while the main thread
    held the pool's lock. So: kill the workers without the lock and mark the pool shut down
    (TVM 0.27's ``PopenPoolExecutor`` internals; the version is pinned).
    """
    import gc

    from tvm.support.popen_pool import PopenPoolExecutor

    # type() rather than isinstance(): the latter asks every object for __class__, and some
    # (torch's deprecated module attributes) warn when asked.
    for pool in gc.get_objects():
        if type(pool) is PopenPoolExecutor and not pool._shutdown:
            pool._shutdown = True
            for worker in list(pool._worker_map.values()):
                worker.kill()
            pool._threadpool.shutdown(wait=False)


def _tune_tasks(tasks: list[ConvTask], measurer: Measurer, target: Target, tvm_target,
                start: float, time_budget_s: float | None,
                progress: Callable[[TuneProgress], None] | None) -> TuneResult:  # fmt: skip
    """The measuring loop of :func:`tune`: chunk by chunk, committing every measurement."""
    total = sum(len(task.space) for task in tasks)
    results: list[TaskResult] = []
    measured = 0
    out_of_time = False
    for index, task in enumerate(tasks, 1):
        result = TaskResult(task.name, kernel_key(task.mod["main"]), None, None, None, 0)
        results.append(result)
        for first in range(0, len(task.space), BUILD_CHUNK):
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                out_of_time = True
                break
            chunk = task.space[first : first + BUILD_CHUNK]
            schedules = [(k, scheduled(task, k, tvm_target)) for k in chunk]
            schedules = [(k, s) for k, s in schedules if s is not None]
            times = measurer.measure([s for _, s in schedules], tvm_target)
            good = [(k, s, t) for (k, s), t in zip(schedules, times, strict=True) if t]
            if good:
                _commit(target, tvm_target, task, [(s, t) for _, s, t in good])
            for knobs, _sch, seconds in good:
                micros = 1e6 * sum(seconds) / len(seconds)
                if knobs == task.space[0]:
                    result.default_us = micros
                if result.best_us is None or micros < result.best_us:
                    result.best_us, result.best_knobs = micros, knobs
            result.measured += len(chunk)
            measured += len(chunk)
            if progress is not None:
                progress(TuneProgress(task.name, index, len(tasks), measured, total,
                                      result.best_us, result.default_us))  # fmt: skip
        if out_of_time:
            break
    return TuneResult(
        results, tuning_dir(target, tvm_target), time.perf_counter() - start, out_of_time
    )


def _flops(func) -> float:
    from tvm import s_tir

    try:
        return float(s_tir.analysis.estimate_tir_flops(func))
    except Exception:  # no estimate for an exotic function: rank it last
        return 0.0
