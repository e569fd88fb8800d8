"""Run a build's bundle on a board over TVM RPC: upload, load, verify, time, report.

The board only needs TVM's RPC server (``python -m tvm.exec.rpc_server``). The module goes to the
server's per-session work folder under a name derived from its hash and is removed again when the
run ends, whether it succeeded or not; results reach the build's report only after every step
has finished, so a failed deploy leaves the build as it was.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from apprentice_hw.compiler.runtime import LatencyStats
from apprentice_hw.deploy.bundle import Bundle
from apprentice_hw.errors import UserError
from apprentice_hw.output_steps import max_steps
from apprentice_hw.report_model import DeploySection, Report

T = TypeVar("T")


class DeployError(Exception):
    """The board ran, but not as it should (load failure, wrong outputs)."""


# What one deploy measured on the board: the report's ``deploy`` section.
DeployResult = DeploySection


def _load_on_board(session, remote_name: str, target_arch: str, device):
    from tvm import relax

    try:
        library = session.load_module(remote_name)
        return relax.VirtualMachine(library, device)
    except Exception as exc:
        raise DeployError(
            f"the board could not load the module (built for {target_arch}): "
            f"{' '.join(str(exc).split())[:200]}; deploy a build for the board's CPU"
        ) from exc


def _interruptible(work: Callable[[], T]) -> T:
    """Run ``work`` in a daemon thread while this thread waits, where Ctrl-C still lands.

    A call blocked in TVM's RPC socket code (the board timing a module) holds a Ctrl-C until
    the session's 60 s timeout; waiting here instead, the interruption is immediate, and the
    thread left on the board's call ends with the process.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="deploy", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    # pop, not get: the error's frames hold ``outcome``, and a cycle through it would keep
    # the RPC session (a local of those frames) open, and the board busy, until a GC pass.
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome.pop("value")


def run_on_board(
    bundle: Bundle,
    session,
    board: str,
    repeats: int = 30,
    number: int = 10,
    progress: Callable[[str], None] = lambda message: None,
) -> DeployResult:
    """Upload ``bundle``'s module through ``session``, run its verification images, time it."""
    return _interruptible(lambda: _run_on_board(bundle, session, board, repeats, number, progress))


def _run_on_board(bundle: Bundle, session, board: str, repeats: int, number: int,
                  progress: Callable[[str], None]) -> DeployResult:  # fmt: skip
    import tvm

    manifest = bundle.manifest
    data = bundle.module_path.read_bytes()
    remote_name = f"apprentice-{manifest['module']['sha256'][:16]}.so"
    progress(f"uploading {bundle.module_path.name} ({len(data) / 1024:.0f} KiB) to {board}")
    start = time.perf_counter()
    doing = "uploading the module"
    try:
        session.upload(bytearray(data), remote_name)
        upload_seconds = time.perf_counter() - start
        progress("loading it and running the verification images")
        device = session.device(manifest["target"].get("device", "cpu"), 0)
        vm = _load_on_board(session, remote_name, manifest["target"]["arch"], device)
        doing = "running the verification images"
        inputs, expected = bundle.inputs, bundle.outputs
        batch = manifest["input"]["shape"][0]
        outputs = np.concatenate([
            vm["main"](tvm.runtime.tensor(inputs[i : i + batch], device)).numpy()
            for i in range(0, len(inputs), batch)
        ])  # fmt: skip
        progress(f"timing {repeats} runs of {number} calls with the RPC time evaluator")
        doing = "timing the module"
        timer = vm.time_evaluator("main", device, number=number, repeat=repeats)
        times_ms = [s * 1e3 for s in timer(tvm.runtime.tensor(inputs[:batch], device)).results]
        threads = _board_threads(session)
    except DeployError:
        raise
    except Exception as exc:  # the board went away, the session timed out, a kernel failed
        raise DeployError(
            f"{board} failed while {doing} ({' '.join(str(exc).split())[:200]}); nothing was "
            "written to the build"
        ) from exc
    finally:
        with contextlib.suppress(Exception):  # the session may be gone; its folder goes with it
            session.remove(remote_name)
    step = manifest["output"]["quant_step"]
    latency = LatencyStats.from_times(times_ms, number)
    return DeployResult(
        board=board,
        samples=len(inputs),
        identical=bool(np.array_equal(outputs, expected)),
        max_diff_steps=max_steps(expected, outputs, step),
        tolerance_steps=float(manifest["verification"]["tolerance_steps"]),
        top1_agreement=float(np.mean(outputs.argmax(1) == expected.argmax(1))),
        latency_median_ms=latency.median_ms,
        latency_min_ms=latency.min_ms,
        latency_max_ms=latency.max_ms,
        latency_stdev_ms=latency.stdev_ms,
        repeats=latency.repeats,
        number=number,
        upload_seconds=round(upload_seconds, 3),
        module_bytes=len(data),
        when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        threads=threads,
    )


def _board_threads(session) -> int | None:
    """How many worker threads the board's TVM runtime timed with (its RPC server's pool:
    ``TVM_NUM_THREADS`` where the server was started), or None where it does not say."""
    try:
        return int(session.get_function("runtime.NumThreads")())
    except Exception:  # an older runtime without the function: the report says nothing
        return None


def record_in_report(build_dir: Path, report: Report, result: DeployResult) -> None:
    """Add the board's results to ``report`` and write it (json, md, html), then the manifest.

    The files land together: Ctrl-C waits until the report and the manifest that hashes it
    are both written.
    """
    from apprentice_hw.atomic import uninterrupted
    from apprentice_hw.manifest import refresh_manifest
    from apprentice_hw.report import write_report

    report = replace(report, deploy=result)
    with uninterrupted():
        write_report(report, build_dir)
        refresh_manifest(build_dir)


def check_options(tracker: str | None, key: str | None, host: str | None):
    """The board endpoint named on the command line: a tracker and key, or a direct server."""
    from apprentice_hw.remote import RemoteDevice, RpcServer

    if host is not None and (tracker is not None or key is not None):
        raise UserError("give either --tracker HOST:PORT --key KEY or --host HOST:PORT, not both")
    if host is not None:
        return RpcServer.parse(host)
    if tracker is None or key is None:
        raise UserError(
            "name the board: --tracker HOST:PORT --key KEY (a TVM RPC tracker) or --host "
            "HOST:PORT (an RPC server started without a tracker)"
        )
    return RemoteDevice.parse(tracker, key)
