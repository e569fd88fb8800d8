"""The schema of ``report.json``: every key path and the kind of value it holds.

``tests/data/report-schemas/<kind>.json`` were recorded from reports written before the report
became typed sections (``report_model``), from the tiny recipe's builds and a compiled model
(since then keys were added on purpose: ``latency.threads`` and ``deploy.threads``, the
TVM threads a measured latency ran with, and a build's per-epoch ``training`` rows);
``assert_report_unchanged`` holds every later report to them, and to an exact round trip
through ``Report.from_dict`` / ``to_dict``. Only the values change between runs (timings,
sizes), never which keys exist or what kind of value they hold.

Where ``<kind>.values.json`` exists (the x86 build), the recorded report itself is compared
too, value for value apart from the measured timings, on a machine with the CPU it was recorded
on (elsewhere the kernels' int16 choices and float rounding in training legitimately differ).

Refresh a schema after a deliberate change to the report with
``python tests/report_schema.py KIND path/to/report.json [--values]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).parent / "data" / "report-schemas"
# Keys under these paths are names (layers, libraries, batches): the schema records one entry
# for all of them, so another model or machine has the same schema.
NAMED = ("memory.weights.bits_per_layer", "memory.runtime_library_bytes",
         "training[].test_top1", "training[].test_top5", "training[].terms")  # fmt: skip
# The target file's own TVM table: its keys are the target's (mtriple, arch, host, ...).
OPAQUE = ("target.tvm",)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def schema(data: Any, path: str = "") -> dict[str, str]:
    """Key path -> kind of value; list items share the path ``name[]``."""
    found = {path or ".": _kind(data)}
    if path in OPAQUE:
        return found
    if isinstance(data, dict):
        for key, value in data.items():
            name = "*" if path in NAMED and key != "arch" else key
            found.update(schema(value, f"{path}.{name}" if path else name))
    elif isinstance(data, list):
        for item in data:
            for key, kind in schema(item, f"{path}[]").items():
                if found.get(key, kind) != kind:  # a null in some rows, a number in others
                    kind = "|".join(sorted({found[key], *kind.split("|")} - {""}))
                found[key] = kind
    return found


def assert_report_unchanged(report_path: Path, kind: str) -> None:
    """``report.json`` at ``report_path`` has the recorded schema ``kind`` and round-trips."""
    from apprentice_hw.report_model import Report

    data = json.loads(Path(report_path).read_text())
    assert Report.from_dict(data).to_dict() == data
    expected = json.loads((SCHEMAS / f"{kind}.json").read_text())
    got = schema(data)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(got) & set(expected) if not _compatible(got[k], expected[k]))
    assert not (missing or extra or changed), {"missing": missing, "extra": extra,
                                               "changed": changed}  # fmt: skip


# Measured, so different every run; ``threads`` is chosen by measuring (1 or every core).
TIMINGS = ("median_ms", "min_ms", "max_ms", "stdev_ms", "threads")


def _without_timings(data: dict[str, Any]) -> dict[str, Any]:
    latency = {k: v for k, v in data["latency"].items() if k not in TIMINGS}
    return {**data, "latency": latency}


def recorded_values(kind: str) -> tuple[str, dict[str, Any]] | None:
    """(CPU model, report) recorded for ``kind``, or None."""
    path = SCHEMAS / f"{kind}.values.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text())
    return recorded["cpu"], recorded["report"]


def machine() -> str:
    """The CPU as the recorded values name it: its model and LLVM's name for it."""
    from apprentice_hw.hardware import cpu_model_name, host_cpu_name

    return f"{cpu_model_name()}; LLVM {host_cpu_name()}"


def assert_same_values(report_path: Path, kind: str) -> bool:
    """The report equals the recorded one apart from timings, where the CPU is the recorded
    one; returns whether it compared (False: another CPU, schema only)."""
    recorded = recorded_values(kind)
    if recorded is None or recorded[0] != machine():
        return False
    data = json.loads(Path(report_path).read_text())
    assert _without_timings(data) == _without_timings(recorded[1])
    return True


def _compatible(got: str, expected: str) -> bool:
    """A kind seen in the recorded report (a nullable column may be all null in one run)."""
    return set(got.split("|")) <= set(expected.split("|")) | {"null"} and bool(got)


if __name__ == "__main__":
    kind, path = sys.argv[1], Path(sys.argv[2])
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text())
    recorded = schema(data)
    (SCHEMAS / f"{kind}.json").write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(recorded)} paths of {path} as {kind}")
    if "--values" in sys.argv:
        values = {"cpu": machine(), "report": data}
        (SCHEMAS / f"{kind}.values.json").write_text(json.dumps(values, indent=1) + "\n")
        print(f"recorded its values on {values['cpu']}")
