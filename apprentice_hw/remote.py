"""Boards behind a TVM RPC tracker, and a tracker with a server on 127.0.0.1 for tests and demos.

A board runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`` (the TVM runtime
only); the tracker hands sessions to whoever asks for ``KEY``. Tuning times kernels there
(MetaSchedule's ``RPCRunner``); deploying runs whole modules there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apprentice_hw.errors import UserError, summarize

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0  # to open a TCP connection to the tracker
REGISTER_TIMEOUT_S = 60.0  # a server that has not registered by then has failed to start


def _host_port(text: str, option: str, example: str) -> tuple[str, int]:
    """``HOST:PORT`` from a command-line option, or a one-line error naming the option."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{option} must be HOST:PORT (e.g. {example}), got '{text}'")
    return host, int(port)


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
        host, port = _host_port(tracker, "--tracker", "127.0.0.1:9190")
        if not key:
            raise UserError("--key must name the device key the board registered with the tracker")
        return cls(host, port, key)

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

    def connect(self, attempts: int = 3, wait_s: float = 2.0, free_board_s: float = 60.0):
        """An RPC session on a board with this key (``tvm.rpc.RPCSession``), retried.

        The tracker answers a request only when a board with the key is free; ``free_board_s``
        bounds that wait (TVM's own request would wait forever while others hold the boards).
        """
        from tvm import rpc

        self.check()

        def request():
            tracker = rpc.connect_tracker(self.host, self.port)
            # Only the wait for the tracker's answer times out: the session gets its own socket.
            tracker._sock.settimeout(free_board_s)
            try:
                return tracker.request(
                    self.key, session_timeout=self.session_timeout_s, max_retry=1
                )
            except RuntimeError as exc:
                if "timed out" in str(exc):
                    raise NoFreeBoardError(
                        f"no board with key '{self.key}' at {self.tracker} became free within "
                        f"{free_board_s:g} s (all busy); try again later or wait longer "
                        "(deploy --wait)"
                    ) from exc
                raise
            finally:
                tracker.close()

        return _with_retries(request, f"board '{self.key}' via {self.tracker}", attempts, wait_s)


@dataclass(frozen=True)
class RpcServer:
    """A board running ``python -m tvm.exec.rpc_server`` that is reached directly, no tracker."""

    host: str
    port: int
    session_timeout_s: int = 60

    @classmethod
    def parse(cls, address: str) -> RpcServer:
        """From the CLI's ``--host HOST:PORT``, with one-line errors."""
        return cls(*_host_port(address, "--host", "192.168.1.5:9090"))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self, attempts: int = 3, wait_s: float = 2.0):
        """An RPC session on the server, retried; a one-line UserError when it is not there."""
        from tvm import rpc

        def session():
            # TVM's own connect retries for 60 s; a plain connect fails at once.
            socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S).close()
            return rpc.connect(self.host, self.port, session_timeout=self.session_timeout_s)

        return _with_retries(session, f"the RPC server at {self.address}", attempts, wait_s)


class NoFreeBoardError(UserError):
    """Every board with the key stayed busy: retrying at once would only wait again."""


def _with_retries(open_session, what: str, attempts: int, wait_s: float):
    """Call ``open_session`` up to ``attempts`` times, waiting longer after each failure."""
    for attempt in range(attempts):
        try:
            return open_session()
        except NoFreeBoardError:
            raise
        except Exception as exc:  # refused, reset, timeout, a server that died while matching
            if attempt == attempts - 1:
                raise UserError(
                    f"cannot open an RPC session on {what} after {attempts} attempts "
                    f"({summarize(exc)}); check that the server is running and reachable"
                ) from exc
            time.sleep(wait_s * (attempt + 1))
    raise AssertionError("unreachable")


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


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, sig)


def _registered(device: RemoteDevice) -> bool:
    try:
        return device.key in _tracker_keys(device)
    except Exception:  # the tracker is still starting
        return False


def _server_env() -> dict[str, str]:
    # One TVM worker per usable core, as the build's own latency measurement uses.
    threads = os.environ.get("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TVM_NUM_THREADS": threads}


@contextmanager
def _process_groups(commands: list[list[str]], log: Path | None) -> Iterator[list]:
    """Start each command in its own process group; on exit stop every group, children too.

    TVM's tracker and server each start helper processes (a popen worker, one Python per
    session) that outlive a plain terminate of their parent.
    """
    processes: list[subprocess.Popen] = []
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        for command in commands:
            processes.append(subprocess.Popen(
                command, env=_server_env(), stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip
            time.sleep(0.5)  # a tracker must listen before its server registers
        yield processes
    finally:
        for process in reversed(processes):
            _signal_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # helpers that outlived their parent
        if log is not None:
            sink.close()


@contextmanager
def local_rpc(
    key: str = "local",
    server_python: str | None = None,
    register_timeout_s: float = REGISTER_TIMEOUT_S,
    tracker_port: int | None = None,
    log: Path | None = None,
) -> Iterator[RemoteDevice]:
    """A TVM tracker and one RPC server registered with it, both on 127.0.0.1.

    ``server_python`` runs the server (e.g. a qemu wrapper around an aarch64 Python); by
    default this machine's Python, so x86 modules run on it. Both processes are stopped on exit.
    ``register_timeout_s`` bounds the wait for the server to register (an emulated board needs
    longer: importing TVM under qemu takes seconds).
    """
    device = RemoteDevice(LOOPBACK, tracker_port or free_port(), key)
    python = server_python or sys.executable
    server_port = free_port()
    # --port-end: both search upwards from --port and give up at --port-end (default 9199).
    tracker_cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", LOOPBACK,
                   "--port", str(device.port), "--port-end", str(device.port + 1)]  # fmt: skip
    server_cmd = [python, "-m", "tvm.exec.rpc_server", "--host", LOOPBACK,
                  "--port", str(server_port), "--port-end", str(server_port + 1),
                  "--tracker", device.tracker, "--key", key]  # fmt: skip
    with _process_groups([tracker_cmd, server_cmd], log) as processes:
        deadline = time.monotonic() + register_timeout_s
        while not _registered(device):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                where = f"; its log: {log}" if log is not None else ""
                raise RuntimeError(
                    f"the local RPC server did not register with {device.tracker}{where}"
                )
            time.sleep(0.5)
        yield device


@dataclass(frozen=True)
class LocalServer(RpcServer):
    """A server :func:`local_server` started, with its process group (to pull the plug)."""

    process_group: int = 0

    def kill(self) -> None:
        """Stop it as a board losing power would: no goodbye to its clients."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process_group, signal.SIGKILL)


@contextmanager
def local_server(server_python: str | None = None) -> Iterator[LocalServer]:
    """One RPC server on 127.0.0.1 without a tracker (what ``deploy --host`` talks to)."""
    server = RpcServer(LOOPBACK, free_port())
    python = server_python or sys.executable
    command = [python, "-m", "tvm.exec.rpc_server", "--host", LOOPBACK,
               "--port", str(server.port), "--port-end", str(server.port + 1)]  # fmt: skip
    with _process_groups([command], None) as processes:
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while True:
            try:
                socket.create_connection((LOOPBACK, server.port), timeout=1).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline or processes[0].poll() is not None:
                    message = f"the local RPC server at {server.address} did not start"
                    raise RuntimeError(message) from exc
                time.sleep(0.3)
        yield LocalServer(server.host, server.port, process_group=processes[0].pid)
