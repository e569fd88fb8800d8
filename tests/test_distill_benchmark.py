"""The distillation benchmark's statistics: gains are paired per seed against the fair twin."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "distill.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("distill_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _settings(bench, seeds=(0, 1, 2)):
    return bench.Settings("fashion-mnist", 6000, 5, 10, seeds, ((2, 8),), 1.0, 1.0, 1.0, False)


def test_interval_is_the_t_interval(bench):
    mean, half = bench.interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert half == pytest.approx(4.303 * 0.1 / math.sqrt(3))  # t(0.975, 2) * s / sqrt(n)
    assert bench.interval([0.5]) == (0.5, 0.0)


def test_gains_are_paired_per_seed_against_the_twin(bench, tmp_path):
    """A seed that is better for both the scheme and its twin does not widen the interval."""
    settings = _settings(bench)
    runs = {}
    for seed, base in zip((0, 1, 2), (0.70, 0.80, 0.75), strict=True):
        for scheme, top1 in (("none", base), ("B", base + 0.01), ("finetune", base + 0.05),
                             ("C", base + 0.04)):  # fmt: skip
            job = bench.Job(seed, 2, 8, scheme)
            runs[job.name] = {"seed": seed, "student_top1": top1, "seconds": 1.0, "curve": [top1]}
    rows = {r["scheme"]: r for r in bench.summarize(settings, runs, tmp_path)["rows"]}
    assert rows["B"]["twin"] == "none" and rows["C"]["twin"] == "finetune"
    assert rows["B"]["gain_mean"] == pytest.approx(0.01)
    assert rows["B"]["gain_ci95"] == pytest.approx(0.0, abs=1e-9)  # unpaired it would be ~0.12
    assert rows["C"]["gain_mean"] == pytest.approx(-0.01)
    assert "gain_mean" not in rows["none"] and "A" not in rows  # A did not run
    table = bench.markdown(bench.summarize(settings, runs, tmp_path), [])
    assert "+1.00 ± 0.00 pts (vs none)" in table and "-1.00 ± 0.00 pts (vs finetune)" in table


def test_a_work_folder_of_other_settings_is_refused(bench, tmp_path):
    bench.check_settings(tmp_path, _settings(bench))
    bench.check_settings(tmp_path, _settings(bench))  # the same settings resume
    with pytest.raises(SystemExit, match="other settings \\(seeds\\)"):
        bench.check_settings(tmp_path, _settings(bench, seeds=(0, 1)))
