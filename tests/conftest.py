"""Shared fixtures: a tiny recipe that builds end to end in seconds, and CLI helpers."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from apprentice_hw.cli import main
from apprentice_hw.torch_backend import configure_torch

# One thread: 1 and 2 threads give different float bits, and CI has 2 cores for everything.
torch.set_num_threads(1)
configure_torch()

TINY_RECIPE = Path(__file__).parent / "data" / "tiny.toml"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Tests never read or write the user's tuning database (~/.cache/apprentice-hw)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("APPRENTICE_HW_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A private copy of tests/data/tiny.toml that a test may edit."""
    path = tmp_path / "tiny.toml"
    shutil.copy(TINY_RECIPE, path)
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process (imports stay warm) and capture its exit code and output."""

    def run(*args: str) -> CliResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def interrupt_build_at(monkeypatch):
    """``interrupt_build_at(step)``: builds raise KeyboardInterrupt (Ctrl-C) on reaching
    ``step``, until ``monkeypatch.undo()``; the steps before it finish normally."""
    from apprentice_hw import pipeline

    def interrupted(_state):
        raise KeyboardInterrupt

    def at(step: str) -> None:
        steps = tuple(pipeline.Step(s.name, s.title, interrupted) if s.name == step else s
                      for s in pipeline.STEPS)  # fmt: skip
        monkeypatch.setattr(pipeline, "STEPS", steps)

    return at


@pytest.fixture(scope="session")
def runtime_only_tvm(tmp_path_factory) -> Path:
    """A folder for PYTHONPATH holding this TVM without its compiler library.

    What a board needs: ``tvm`` with ``lib/libtvm_compiler.so`` left out (TVM then imports in
    runtime-only mode). Built from symbolic links to the installed package, not a copy.
    """
    import tvm

    installed = Path(tvm.__file__).parent
    root = tmp_path_factory.mktemp("runtime-only")
    package = root / "tvm"
    package.mkdir()
    for entry in installed.iterdir():
        if entry.name != "lib":
            (package / entry.name).symlink_to(entry)
    (package / "lib").mkdir()
    for library in (installed / "lib").iterdir():
        if library.name != "libtvm_compiler.so":
            (package / "lib" / library.name).symlink_to(library)
    return root
