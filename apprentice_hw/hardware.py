"""Hardware targets: one TOML file per target in ``targets/``.

A target file holds everything the pipeline needs to know about a piece of hardware: the TVM
target dict, how to link a module for it (host or cross compiler), its size (cores, clock,
memory) and its nominal peak MAC rates per precision, used for latency estimates where the
module cannot be run. Adding a target means adding a file; nothing in the code lists targets.

The module is called ``hardware`` rather than ``targets`` so it never shadows the data folder.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apprentice_hw.errors import UserError
from apprentice_hw.resources import data_dirs

TARGETS_ENV = "APPRENTICE_HW_TARGETS"

# Where a target's host code runs; armv7 only for FPGA boards (e.g. the PYNQ-Z2's Cortex-A9).
ARCHES = ("x86_64", "aarch64", "armv7")


@dataclass(frozen=True)
class DeviceKind:
    """What a target file's ``device`` names, as far as reading targets needs to know.

    The behaviour of each kind (compiling, linking, checking, summaries) lives in its backend
    (``apprentice_hw.backends``); these are the facts the target loader and listings use.
    """

    name: str
    core_unit: str  # what the target's "cores" counts
    tvm_kind: str | None  # the TVM target kind it compiles with; None: not built by TVM
    runs_on_host_cpu: bool  # its modules run on a CPU like this machine's (no GPU, no board)
    arches: tuple[str, ...]  # host architectures a target of this kind may name
    takes_fpga_options: bool = False  # a design sized by --reuse / --fps (options.FpgaOptions)


# The kinds of device a target file may name; adding one adds a row here and a backend module.
DEVICES = {
    "cpu": DeviceKind("cpu", "cores", "llvm", True, ARCHES[:2]),
    "cuda": DeviceKind("cuda", "SMs", "cuda", False, ARCHES[:2]),
    # An FPGA is built by hls4ml; "cores" are the board's processor cores.
    "fpga": DeviceKind("fpga", "cores", None, False, ARCHES, takes_fpga_options=True),
}

# Placeholder values a target file may use for "whatever this machine has".
HOST = "host"
# Peak MAC rates a TVM target must give: the latency estimate picks one per layer.
PRECISIONS = ("fp32", "int8", "int4", "int2")
# What a cross compiler's -dumpmachine starts with, per target architecture.
TRIPLE_PREFIXES = {"x86_64": "x86_64", "aarch64": "aarch64", "armv7": "arm"}

_HOST_ARCH_ALIASES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}


@dataclass(frozen=True)
class Target:
    """A hardware target as read from its TOML file (placeholders already resolved)."""

    name: str
    description: str
    device: str  # "cpu", "cuda" or "fpga"; see DEVICES
    arch: str  # "x86_64" or "aarch64": the machine the compiled module runs on
    tvm: dict[str, Any]
    cross_compiler: str | None
    cross_compiler_package: str | None
    cores: int
    clock_ghz: float
    memory_mib: int
    memory_bandwidth_gbs: float
    peak_macs_per_cycle_per_core: dict[str, float]
    source: Path
    kernels: tuple[str, ...] = ()  # kernel strategy preference, first that fits a layer wins
    requires_isa: tuple[str, ...] = ()  # CPU flags (as /proc/cpuinfo names them) the code uses
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> DeviceKind:
        """The facts about this target's kind of device."""
        return DEVICES[self.device]

    @property
    def runs_on_this_machine(self) -> bool:
        """True when the compiled module can be loaded and timed here (no board needed).

        A module for a generic ISA level (say AVX-512) on a CPU without it would die with an
        illegal instruction, so every flag the target requires must be on this CPU.
        """
        return (
            self.kind.runs_on_host_cpu  # no GPU is assumed: GPU modules run on a board
            and self.cross_compiler is None
            and self.arch == host_arch()
            and not self.missing_isa
        )

    @property
    def missing_isa(self) -> tuple[str, ...]:
        """The required CPU flags this machine lacks (empty for another architecture)."""
        if self.arch != host_arch():
            return ()
        flags = host_cpu_flags()
        return tuple(flag for flag in self.requires_isa if flag not in flags)

    def peak_gmacs(self, precision: str) -> float:
        """Nominal peak throughput in GMAC/s for ``precision`` over all cores."""
        per_cycle = self.peak_macs_per_cycle_per_core[precision]
        return per_cycle * self.cores * self.clock_ghz

    def tvm_target(self):  # -> tvm.target.Target; imported lazily: TVM takes seconds to load
        import tvm

        return tvm.target.Target(self.tvm)


def host_arch() -> str:
    """The normalized CPU architecture of this machine."""
    machine = platform.machine().lower()
    return _HOST_ARCH_ALIASES.get(machine, machine)


@functools.cache
def cpu_model_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (e.g. ``AMD EPYC``), for benchmark records."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, platform.machine())


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def host_cpu_name() -> str:
    """LLVM's name for this machine's CPU (e.g. ``emeraldrapids``), as TVM detects it."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def _require(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise UserError(f"{where}: missing required field '{key}'; see targets/x86-host.toml")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: field '{key}' must be a {names}, got {value!r}")
    return value


def _host_or_positive(
    table: dict[str, Any], key: str, detect: Callable[[], float], where: str
) -> float:
    """A positive number, or ``"host"`` meaning "measure this machine"."""
    value = _require(table, key, (int, float, str), where)
    if value == HOST:
        return detect()
    if isinstance(value, str) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{where}: '{key}' must be a positive number or \"host\", got {value!r}")
    return value


def _host_or_positive_int(
    table: dict[str, Any], key: str, detect: Callable[[], int], where: str
) -> int:
    """A whole number of at least 1, or ``"host"``: cores and MiB come in whole units."""
    value = _host_or_positive(table, key, detect, where)
    if isinstance(value, float):
        raise UserError(f"{where}: '{key}' must be a whole number or \"host\", got {value!r}")
    return int(value)


def _positive(table: dict[str, Any], key: str, where: str) -> float:
    value = float(_require(table, key, (int, float), where))
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{where}: '{key}' must be a positive number, got {value!r}")
    return value


def _host_clock_ghz() -> float:
    """This machine's nominal clock; virtual machines often hide it, so fall back to cpuinfo."""
    import psutil

    freq = psutil.cpu_freq()
    if freq is not None and freq.max > 0:
        return freq.max / 1000.0
    if freq is not None and freq.current > 0:
        return freq.current / 1000.0
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 1.0
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.M)]
    return max(mhz) / 1000.0 if mhz else 1.0


def _host_memory_mib() -> int:
    import psutil

    return int(psutil.virtual_memory().total // 2**20)


def _resolve_tvm_dict(tvm: dict[str, Any], cores: int, arch: str) -> dict[str, Any]:
    """Replace ``host`` placeholders with what this machine has.

    A host target of another architecture (``aarch64-host`` listed on an x86 machine) gets
    LLVM's generic CPU: it describes a machine that is not this one.
    """
    resolved = dict(tvm)
    if resolved.get("mcpu") == HOST:
        resolved["mcpu"] = host_cpu_name() if arch == host_arch() else "generic"
    if resolved.get("num-cores") == HOST:
        resolved["num-cores"] = cores
    return resolved


def _kernel_preference(data: dict[str, Any], where: str) -> tuple[str, ...]:
    """The target's kernel strategy order (``kernels = [...]``; empty: the lowering's default).

    The names are checked against the strategy registry by the target's backend
    (``backends.validate_target``), which every command that compiles calls first.
    """
    names = data.get("kernels", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: 'kernels' must be a list of strategy names")
    return tuple(names)


def _isa_flags(data: dict[str, Any], where: str) -> tuple[str, ...]:
    flags = data.get("requires_isa", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) and f for f in flags):
        raise UserError(f"{where}: 'requires_isa' must be a list of CPU flag names (/proc/cpuinfo)")
    return tuple(flags)


def parse_target(data: dict[str, Any], source: Path) -> Target:
    """Validate a target file's contents and build a :class:`Target`."""
    where = f"target file {source}"
    name = _require(data, "name", str, where)
    if name != source.stem:
        raise UserError(f"{where}: name '{name}' must match the file name '{source.stem}'")
    hw = _require(data, "hardware", dict, where)
    hw_where = f"{where} [hardware]"
    cores = _host_or_positive_int(hw, "cores", lambda: os.cpu_count() or 1, hw_where)
    device = _require(data, "device", str, where)
    if device not in DEVICES:
        raise UserError(f"{where}: 'device' must be one of {', '.join(DEVICES)}, got {device!r}")
    # A device not built by TVM (an FPGA: hls4ml) has no TVM target and no MAC rate of its own.
    device_kind = DEVICES[device]
    uses_tvm = device_kind.tvm_kind is not None
    tvm = _require(data, "tvm", dict, where) if uses_tvm else data.get("tvm", {})
    if uses_tvm:
        kind = _require(tvm, "kind", str, f"{where} [tvm]")
        if kind != device_kind.tvm_kind:
            raise UserError(
                f'{where}: [tvm] kind must be "{device_kind.tvm_kind}" for a {device} target, '
                f"got {kind!r}"
            )
    toolchain = data.get("toolchain", {})
    if not isinstance(toolchain, dict):
        raise UserError(f"{where}: [toolchain] must be a table, got {toolchain!r}")
    for key in ("cross_compiler", "debian_package"):
        if key in toolchain and not isinstance(toolchain[key], str):
            raise UserError(f"{where}: [toolchain] '{key}' must be a string")
    peaks = (
        data.get("peak_macs_per_cycle_per_core", {})
        if not uses_tvm
        else _require(data, "peak_macs_per_cycle_per_core", dict, where)
    )
    for precision, rate in peaks.items():
        if precision not in PRECISIONS:
            raise UserError(
                f"{where}: unknown precision '{precision}' in "
                f"[peak_macs_per_cycle_per_core]; known: {', '.join(PRECISIONS)}"
            )
        if not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
            raise UserError(f"{where}: peak rate for '{precision}' must be a positive number")
    missing_peaks = [p for p in PRECISIONS if p not in peaks]
    if missing_peaks and uses_tvm:
        raise UserError(
            f"{where}: [peak_macs_per_cycle_per_core] lacks {', '.join(missing_peaks)} (the "
            f"latency estimate needs a rate for each of {', '.join(PRECISIONS)})"
        )
    arch = _require(data, "arch", str, where)
    if arch not in device_kind.arches:
        choices = " or ".join(f'"{a}"' for a in device_kind.arches)
        raise UserError(f"{where}: 'arch' must be {choices}, got {arch!r}")
    known = {
        "name",
        "description",
        "device",
        "arch",
        "hardware",
        "tvm",
        "toolchain",
        "peak_macs_per_cycle_per_core",
        "notes",
        "kernels",
        "requires_isa",
    }
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        raise UserError(f"{where}: 'notes' must be a string")
    resolved_tvm = _resolve_tvm_dict(tvm, cores, arch)
    if uses_tvm:
        _check_tvm_target(resolved_tvm, f"{where} [tvm]")
    return Target(
        name=name,
        description=_require(data, "description", str, where),
        device=device,
        arch=arch,
        tvm=resolved_tvm,
        cross_compiler=toolchain.get("cross_compiler"),
        cross_compiler_package=toolchain.get("debian_package"),
        cores=cores,
        clock_ghz=float(_host_or_positive(hw, "clock_ghz", _host_clock_ghz, hw_where)),
        memory_mib=_host_or_positive_int(hw, "memory_mib", _host_memory_mib, hw_where),
        memory_bandwidth_gbs=_positive(hw, "memory_bandwidth_gbs", hw_where),
        peak_macs_per_cycle_per_core={k: float(v) for k, v in peaks.items()},
        source=source,
        kernels=_kernel_preference(data, where),
        requires_isa=_isa_flags(data, where),
        notes=notes,
        extra={k: v for k, v in data.items() if k not in known},
    )


def _check_tvm_target(tvm_dict: dict[str, Any], where: str) -> None:
    """TVM accepts the table (option names and types) and LLVM knows its CPU name."""
    import tvm
    from tvm.target import codegen

    try:
        tvm.target.Target(tvm_dict)
    except Exception as exc:  # TVM raises ValueError, TypeError or its own errors
        first = " ".join(str(exc).split(". Target creation")[0].split())[:160]
        raise UserError(f"{where}: TVM rejects this target ({first})") from exc
    cpu, triple = tvm_dict.get("mcpu"), tvm_dict.get("mtriple", "")
    if (
        tvm_dict["kind"] == "llvm"
        and isinstance(cpu, str)
        and not codegen.llvm_is_valid_cpu(cpu, triple)
    ):
        triple = triple or "this machine"
        raise UserError(
            f"{where}: LLVM knows no CPU named mcpu = {cpu!r} for {triple}; use an LLVM CPU "
            "name such as cortex-a72, neoverse-n1, znver4 or skylake-avx512"
        )


def load_target_file(path: Path) -> Target:
    """Read and validate one target file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"target file {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"target file {path} is not valid TOML: {exc}") from exc
    return parse_target(data, Path(path))


def target_files() -> dict[str, Path]:
    """Every known target name and its file; earlier search folders shadow later ones."""
    found: dict[str, Path] = {}
    for folder in data_dirs("targets", TARGETS_ENV):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def get_target(name_or_path: str) -> Target:
    """Look a target up by name, or load it from a ``.toml`` path."""
    if name_or_path.endswith(".toml"):
        return load_target_file(Path(name_or_path))
    files = target_files()
    if name_or_path not in files:
        choices = ", ".join(sorted(files)) or "(none found)"
        raise UserError(
            f"unknown target '{name_or_path}'; choose one of: {choices} "
            f"(or pass a path to a target .toml file)"
        )
    return load_target_file(files[name_or_path])


def all_targets() -> list[Target]:
    """All registered targets, sorted by name."""
    return [load_target_file(path) for _, path in sorted(target_files().items())]


def find_cross_compiler(target: Target) -> str | None:
    """Path of the target's cross compiler, or ``None`` when it links with the host compiler.

    Raises a :class:`UserError` naming the package to install when the compiler is missing, so a
    long build never fails at its last step for want of a linker.
    """
    if target.cross_compiler is None:
        return None
    path = shutil.which(target.cross_compiler)
    hint = (
        f"install it with 'apt-get install {target.cross_compiler_package}'"
        if target.cross_compiler_package
        else "install it and put it on PATH"
    )
    if path is None:
        raise UserError(
            f"target '{target.name}' needs the cross compiler '{target.cross_compiler}'; {hint}"
        )
    machine = _compiler_machine(path)
    if not machine.startswith(TRIPLE_PREFIXES[target.arch]):
        said = f"says it builds for '{machine}'" if machine else "does not answer -dumpmachine"
        raise UserError(
            f"target '{target.name}': cross compiler '{target.cross_compiler}' ({path}) {said}, "
            f"not {target.arch}; fix [toolchain] cross_compiler in {target.source} or {hint}"
        )
    return path


@functools.cache
def _compiler_machine(path: str) -> str:
    """What a GCC-style compiler says it builds for (``-dumpmachine``), or "" if it cannot."""
    import subprocess

    try:
        done = subprocess.run([path, "-dumpmachine"], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# The target file describing this machine's own CPU, per architecture.
HOST_TARGETS = {"x86_64": "x86-host", "aarch64": "aarch64-host"}
HOST_TARGET = HOST_TARGETS.get(host_arch(), "x86-host")


def host_target_name() -> str:
    """The target of this machine's own CPU: ``x86-host`` or ``aarch64-host``."""
    arch = host_arch()
    if arch not in HOST_TARGETS:
        raise UserError(f"apprentice-hw builds on x86-64 and aarch64 machines; this one is {arch}")
    return HOST_TARGETS[arch]


def host_twin(target: Target) -> Target:
    """This machine's target with ``target``'s kernel choices: runs here what ``target`` would.

    The integer kernels compute the same exact sums on every CPU, so a host build with the
    same strategies checks a cross-compiled module's arithmetic without the board.
    """
    from dataclasses import replace

    return replace(get_target(host_target_name()), kernels=target.kernels)
