"""``manifest.json``: versions, configuration, step timings and every artifact's hash.

Written by ``build`` and ``compile`` when they finish, re-hashed by ``deploy`` after it adds its
section to the report.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from apprentice_hw.artifacts import BUNDLE_DIR
from apprentice_hw.atomic import write_json
from apprentice_hw.hardware import Target
from apprentice_hw.outputs import BUILD_MANIFEST
from apprentice_hw.version import __version__

VERSIONED_PACKAGES = (
    "torch", "brevitas", "onnx", "onnxruntime", "apache-tvm", "apache-tvm-ffi", "qonnx", "numpy",
)  # fmt: skip


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"apprentice-hw": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def artifact_hashes(build_dir: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of the build's files and its bundle's, by path relative to the build."""
    paths = [p for p in sorted(build_dir.iterdir()) if p.is_file() and p.name != BUILD_MANIFEST]
    bundle = build_dir / BUNDLE_DIR
    if bundle.is_dir():
        paths += [p for p in sorted(bundle.iterdir()) if p.is_file()]
    return {
        str(path.relative_to(build_dir)): {
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
        for path in paths
    }


def refresh_manifest(build_dir: Path) -> None:
    """Re-hash the artifacts after a later command (``deploy``) rewrote some of them."""
    manifest = json.loads((build_dir / BUILD_MANIFEST).read_text())
    manifest["artifacts"] = artifact_hashes(build_dir)
    write_json(build_dir / BUILD_MANIFEST, manifest)


def write_build_manifest(workdir: Path, target: Target, timings: dict[str, float],
                         origin: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``manifest.json`` of a build (``origin``: its ``recipe``) or of a compiled model (its
    ``source``): versions, the target, step timings and every artifact's hash."""
    manifest = {
        "apprentice_hw_version": __version__,
        "created_unix": time.time(),
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "versions": package_versions(),
        **origin,
        "target": {"name": target.name, "file": str(target.source), "tvm": target.tvm},
        "steps": [{"name": name, "seconds": round(sec, 3)} for name, sec in timings.items()],
        "artifacts": artifact_hashes(workdir),
    }
    write_json(workdir / BUILD_MANIFEST, manifest)
    return manifest
