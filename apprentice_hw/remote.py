"""Boards behind a TVM RPC tracker, and a tracker with a server on 127.0.0.1 for tests and demos.

A board runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` (the TVM runtime
only); the tracker hands sessions to whoever asks for ``KEY``. Tuning times kernels there
(MetaSchedule's ``RPCRunner``); deploying runs whole modules there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from apprentice_hw.errors import UserError

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0  # to open a TCP connection to the tracker
REGISTER_TIMEOUT_S = 60.0  # a server that has not registered by then has failed to start


@dataclass(frozen=True)
class RemoteDevice:
    """A board reached through a TVM RPC tracker."""

    host: str
    port: int
    key: str
    session_timeout_s: int = 60

    @classmethod
    def parse(cls, tracker: str, key: str) -> RemoteDevice:
        """From the CLI's ``--tracker HOST:PORT --key KEY``, with one-line errors."""
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"--tracker must be HOST:PORT (e.g. 127.0.0.1:9190), got '{tracker}'")
        if not key:
            raise UserError("--key must name the device key the board registered with the tracker")
        return cls(host, int(port), key)

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"

    def check(self, attempts: int = 3, wait_s: float = 1.0) -> None:
        """Fail early, with a one-line UserError, when the tracker or a board is not there.

        Retries ``attempts`` times (a tracker that is restarting, a board re-registering).
        """
        keys: list[str] = []
        for attempt in range(attempts):
            try:
                keys = _tracker_keys(self)
            except Exception as exc:  # connection refused, timeout, bad reply
                if attempt == attempts - 1:
                    raise UserError(
                        f"cannot reach the TVM RPC tracker at {self.tracker} ({exc}); start it "
                        "with 'python -m tvm.exec.rpc_tracker' or fix --tracker"
                    ) from exc
            else:
                if self.key in keys:
                    return
            time.sleep(wait_s)
        shown = ", ".join(sorted(set(keys))) or "none"
        raise UserError(
            f"no board with key '{self.key}' is registered at {self.tracker} (keys there: "
            f"{shown}); start 'python -m tvm.exec.rpc_server --tracker {self.tracker} --key "
            f"{self.key}' on the board or fix --key"
        )


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _tracker_keys(device: RemoteDevice) -> list[str]:
    """Device keys of the servers registered at ``device``'s tracker (raises when unreachable)."""
    from tvm import rpc

    # TVM's own connect retries for 60 s; a plain connect fails at once when nothing listens.
    socket.create_connection((device.host, device.port), timeout=CONNECT_TIMEOUT_S).close()
    summary = rpc.connect_tracker(device.host, device.port).summary()
    # server_info keys look like "server:KEY" (idle) or "KEY" depending on the server's state.
    return [entry["key"].split(":")[-1] for entry in summary.get("server_info", [])]


def _registered(device: RemoteDevice) -> bool:
    try:
        return device.key in _tracker_keys(device)
    except Exception:  # the tracker is still starting
        return False


@contextmanager
def local_rpc(key: str = "local", server_python: str | None = None) -> Iterator[RemoteDevice]:
    """A TVM tracker and one RPC server registered with it, both on 127.0.0.1.

    ``server_python`` runs the server (e.g. a qemu wrapper around an aarch64 Python); by
    default this machine's Python, so x86 modules run on it. Both processes are stopped on exit.
    """
    device = RemoteDevice(LOOPBACK, free_port(), key)
    python = server_python or sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server_port = free_port()
    # --port-end: both search upwards from --port and give up at --port-end (default 9199).
    tracker_cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
                   "--port", str(device.port), "--port-end", str(device.port + 1)]  # fmt: skip
    server_cmd = [python, "-m", "tvm.exec.rpc_server", "--host", LOOPBACK,
                  "--port", str(server_port), "--port-end", str(server_port + 1),
                  "--tracker", device.tracker, "--key", key]  # fmt: skip
    processes: list[subprocess.Popen] = []
    try:
        for command in (tracker_cmd, server_cmd):
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            processes.append(subprocess.Popen(command, env=env, **quiet))
            time.sleep(0.5)  # the tracker must listen before the server registers
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while not _registered(device):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the local RPC server did not register with {device.tracker}")
            time.sleep(0.5)
        yield device
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
