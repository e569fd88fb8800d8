"""A finished build directory read back by later commands (verify, report, tune, deploy).

Every reader goes through these functions, so a folder that is not a build, a damaged or
hand-edited ``manifest.json`` / ``report.json`` or a missing ``student.pt`` is one line saying
which file and what to do, never a traceback from deep inside a renderer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apprentice_hw.errors import UserError, summarize
from apprentice_hw.outputs import BUILD_MANIFEST, RECIPE_RECORD

if TYPE_CHECKING:
    from apprentice_hw.report_model import Report

REPORT_FILE = "report.json"
STUDENT_FILE = "student.pt"
REPORT_SECTIONS = ("model", "target", "accuracy", "memory", "checks")


def _json_object(path: Path, build_dir: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{build_dir} has no {path.name}; rebuild it with 'apprentice-hw build'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError, unreadable
        raise UserError(
            f"{path} is damaged ({summarize(exc, 120)}); rebuild {build_dir} with 'apprentice-hw "
            f"build --force'"
        ) from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} is not {what}; rebuild {build_dir} with 'apprentice-hw build'")
    return data


def read_manifest(build_dir: Path) -> dict[str, Any]:
    """A build's manifest, checked for the fields later commands read."""
    build_dir = Path(build_dir)
    if not (build_dir / BUILD_MANIFEST).is_file():
        raise UserError(f"{build_dir} is not a build directory (no {BUILD_MANIFEST})")
    manifest = _json_object(build_dir / BUILD_MANIFEST, build_dir, "a build manifest")
    target = manifest.get("target")
    if (
        not isinstance(target, dict)
        or not isinstance(target.get("name"), str)
        or not isinstance(manifest.get("artifacts"), dict)
        or not isinstance(manifest.get("recipe", manifest.get("source")), dict)
    ):
        raise UserError(
            f"{build_dir / BUILD_MANIFEST} is damaged or from another version (no target, "
            f"recipe or source, or artifacts); rebuild {build_dir} with 'apprentice-hw build "
            "--force' (or 'compile --force')"
        )
    return manifest


def is_compiled_build(manifest: dict[str, Any]) -> bool:
    """Whether a build directory was made by ``compile`` (a user's ONNX model, no training)."""
    return "source" in manifest and "recipe" not in manifest


def read_report(build_dir: Path) -> Report:
    """A build's ``report.json`` as a ``Report``, checked to render (Markdown) before anyone
    relies on it."""
    from apprentice_hw.report.writer import render_markdown
    from apprentice_hw.report_model import Report

    build_dir = Path(build_dir)
    read_manifest(build_dir)
    path = build_dir / REPORT_FILE
    data = _json_object(path, build_dir, "a build report")
    missing = [key for key in REPORT_SECTIONS if not isinstance(data.get(key), dict)]
    report = None
    try:
        if not missing:
            report = Report.from_dict(data)
            render_markdown(report)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        missing = [summarize(exc, 120)]
    if missing:
        raise UserError(
            f"{path} is damaged or from another version (bad or missing: {', '.join(missing)}); "
            f"rebuild {build_dir} with 'apprentice-hw build --force'"
        )
    return report


def read_recipe(build_dir: Path):
    """The recipe the build's student was trained with (``recipe.json``)."""
    from apprentice_hw.config import Recipe

    build_dir = Path(build_dir)
    return Recipe.from_dict(_json_object(build_dir / RECIPE_RECORD, build_dir, "a recorded recipe"))


def load_weights(model, path: Path, fix: str):
    """``model`` with the state dict in ``path`` loaded (tensors only: no code can run).

    ``fix`` ends the one-line error when the file is missing, damaged or does not fit.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle weights_only refuses, a foreign file
        raise UserError(
            f"{path} is damaged or not a weights file ({summarize(exc, 120)}); {fix}"
        ) from exc
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict; {fix}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise UserError(f"{path} does not fit the model ({summarize(exc, 120)}); {fix}") from exc
    return model


def load_student(build_dir: Path):
    """The build's trained student (eval mode) with the data it was trained on."""
    import torch

    from apprentice_hw.data import load_dataset
    from apprentice_hw.training import build_student

    recipe = read_recipe(build_dir)
    data = load_dataset(recipe.dataset, recipe.data_path, recipe.seed, recipe.train_limit)
    torch.set_num_threads(recipe.threads)
    student = build_student(recipe, data)
    fix = f"rebuild {build_dir} with 'apprentice-hw build --force'"
    return load_weights(student, Path(build_dir) / STUDENT_FILE, fix).eval(), data
