"""An emulated Raspberry Pi 4: the aarch64 TVM runtime under qemu-user, behind a local tracker.

Tests and demos need a board that runs aarch64 modules without the hardware. This one is Debian
bookworm's arm64 Python 3.11 (unpacked by ``debootstrap --foreign``, never booted) run by
``qemu-aarch64-static -cpu cortex-a72``, with the aarch64 ``apache-tvm`` wheel (the same version
as this machine's) unpacked beside it. The CPU model matters: qemu then refuses instructions an
A72 lacks (SDOT, for one), so a module that runs here runs on a real Pi 4.

Two pieces of glue make TVM's RPC server work under qemu-user without binfmt_misc: a shell
wrapper (``python``) that starts the emulated interpreter, and a ``sitecustomize`` that points
``sys.executable`` at that wrapper, because the server starts a fresh Python for every session.
Setting up needs root (debootstrap), qemu-user-static, debootstrap and the package registries
(Debian's mirror and PyPI); afterwards everything runs offline.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from apprentice_hw.errors import UserError
from apprentice_hw.remote import LOOPBACK, RemoteDevice, local_rpc
from apprentice_hw.resources import cache_root

PI_DIR_ENV = "APPRENTICE_HW_PI_DIR"
SUITE = "bookworm"  # its python3 is 3.11, the version the aarch64 wheels are taken for
PYTHON_VERSION = "3.11"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
QEMU = "qemu-aarch64-static"
QEMU_CPU = "cortex-a72"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
DEFAULT_KEY = "emulated-pi"
DEFAULT_PORT = 9190
READY_FILE = "READY"
REGISTER_TIMEOUT_S = 300.0  # importing TVM under qemu takes ~10 s; a loaded machine, longer
# TVM's RPC server imports these, but the wheel does not list them.
SERVER_PACKAGES = ["cloudpickle", "psutil"]
REQUIRED_TOOLS = {"debootstrap": "debootstrap", QEMU: "qemu-user-static", "dpkg-deb": "dpkg"}

WRAPPER = f"""#!/bin/sh
# The emulated Raspberry Pi's Python: Debian arm64 {PYTHON_VERSION} under qemu-user as a Cortex-A72,
# with the aarch64 TVM runtime on its path. Written by 'apprentice-hw emulated-pi'.
HERE="$(dirname "$(readlink -f "$0")")"
export PYTHONPATH="$HERE/site" APPRENTICE_HW_EMULATED_PYTHON="$HERE/python"
unset PYTHONHOME
exec {QEMU} -cpu {QEMU_CPU} -L "$HERE/root" "$HERE/root/usr/bin/python{PYTHON_VERSION}" "$@"
"""

SITECUSTOMIZE = """# TVM's RPC server starts a new Python per session with sys.executable; under
# qemu-user without binfmt_misc that must be the wrapper script, not the aarch64 binary.
import os
import sys

sys.executable = os.environ.get("APPRENTICE_HW_EMULATED_PYTHON", sys.executable)
"""


def default_dir() -> Path:
    """``$APPRENTICE_HW_PI_DIR``, or ``emulated-pi`` in the apprentice-hw cache."""
    configured = os.environ.get(PI_DIR_ENV)
    return Path(configured) if configured else cache_root() / "emulated-pi"


@dataclass(frozen=True)
class EmulatedPi:
    """A set-up emulated Pi in ``folder``."""

    folder: Path

    @property
    def python(self) -> Path:
        """The wrapper that runs aarch64 Python with the TVM runtime."""
        return self.folder / "python"

    @property
    def ready(self) -> bool:
        return (self.folder / READY_FILE).exists()

    def run(self, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run the emulated Python with ``args`` and capture its output."""
        return subprocess.run(
            [str(self.python), *args], capture_output=True, text=True, timeout=timeout,
            check=False, **kwargs,
        )  # fmt: skip

    @contextmanager
    def serve(self, key: str = DEFAULT_KEY, port: int | None = None) -> Iterator[RemoteDevice]:
        """A local tracker with this Pi's RPC server registered under ``key``."""
        if not self.ready:
            raise UserError(f"no emulated Pi in {self.folder}; set it up first with "
                            "'apprentice-hw emulated-pi --setup-only'")  # fmt: skip
        if port is not None:
            _check_port_free(port)
        with local_rpc(key, str(self.python), REGISTER_TIMEOUT_S, port,
                       log=self.folder / "server.log") as device:  # fmt: skip
            yield device


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            raise UserError(f"port {port} on {LOOPBACK} is in use ({exc.strerror}); pick "
                            "another with --port") from exc  # fmt: skip


def _check_tools() -> None:
    missing = [package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise UserError(
            f"the emulated Pi needs {', '.join(sorted(set(missing)))}; install with 'sudo "
            f"apt-get install {' '.join(sorted(set(missing)))}' and rerun"
        )
    if os.geteuid() != 0:
        raise UserError("setting up the emulated Pi runs debootstrap, which needs root; rerun "
                        "with sudo (or as root), once")  # fmt: skip


def _run(command: list[str], what: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = " ".join((completed.stderr or completed.stdout).split())[-300:]
        raise UserError(f"{what} failed ({tail})")


def _unpack_downloaded_packages(root: Path) -> None:
    """Unpack every .deb debootstrap downloaded (``--foreign`` unpacks only the base set)."""
    archives = root / "var" / "cache" / "apt" / "archives"
    for package in sorted(archives.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(package), str(root)], f"unpacking {package.name}")
        package.unlink()


def _install_tvm_runtime(site: Path) -> None:
    """The aarch64 wheels of this machine's TVM version, unpacked for the emulated Python."""
    pins = [f"{name}=={metadata.version(name)}" for name in ("apache-tvm", "apache-tvm-ffi")]
    pins += SERVER_PACKAGES
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--target", str(site), "--platform", WHEEL_PLATFORM, "--python-version",
          PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:", *pins],
         "downloading the aarch64 TVM wheels")  # fmt: skip
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)


def setup(
    folder: Path, mirror: str = DEFAULT_MIRROR, progress: Callable[[str], None] = print
) -> EmulatedPi:
    """Build the emulated Pi in ``folder`` (a staging folder renamed into place at the end)."""
    pi = EmulatedPi(folder)
    if pi.ready:
        return pi
    _check_tools()
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        progress(f"debootstrap: Debian {SUITE} arm64 with python3 from {mirror} (about a minute)")
        _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
              "--include=python3", SUITE, str(staging / "root"), mirror],
             "debootstrap")  # fmt: skip
        progress("unpacking the downloaded packages")
        _unpack_downloaded_packages(staging / "root")
        progress(f"downloading the aarch64 TVM runtime ({WHEEL_PLATFORM}, Python {PYTHON_VERSION})")
        _install_tvm_runtime(staging / "site")
        wrapper = staging / "python"
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        progress("checking that the TVM runtime imports under qemu")
        check = EmulatedPi(staging).run("-c", "import platform, tvm.runtime; "
                                        "print(platform.machine(), tvm.__version__)")  # fmt: skip
        if check.returncode != 0 or "aarch64" not in check.stdout:
            raise UserError(f"the emulated Python does not start: {check.stderr.strip()[-300:]}")
        (staging / READY_FILE).write_text(check.stdout)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pi
