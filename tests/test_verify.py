"""The verify gate: rounding-boundary outliers pass, systematic differences fail."""

from __future__ import annotations

import numpy as np
import pytest

from apprentice_hw.export.onnx_export import compare_outputs
from apprentice_hw.verify import VerifyResult

STEP = 0.25


def _result(outliers: int, shift_steps: float) -> VerifyResult:
    reference = np.round(np.random.default_rng(0).normal(size=(100, 10)) / STEP) * STEP
    candidate = reference.copy()
    candidate[:outliers] += shift_steps * STEP  # every logit: the top-1 label stays
    check = compare_outputs(reference, candidate, STEP)
    result = VerifyResult(100, STEP, 1.0, {"compiled_vs_brevitas": check}, "test")
    per_sample = np.abs(candidate - reference).max(axis=1)
    result.gate_steps_per_sample = np.round(per_sample / STEP, 4)
    return result


@pytest.mark.parametrize(
    ("outliers", "shift", "passes"),
    [
        (0, 0.0, True),
        (100, 1.0, True),  # every input one step off: within tolerance
        (1, 19.0, True),  # one input carries a flipped code through the network
        (2, 19.0, False),  # two percent of inputs: more than rounding boundaries explain
        (100, 2.0, False),  # a systematic error
    ],
)
def test_gate_separates_boundary_flips_from_errors(outliers, shift, passes):
    result = _result(outliers, shift)
    assert result.passed is passes
    assert result.comparisons["compiled_vs_brevitas"].fraction_within_one_step == (
        1.0 if shift <= 1.0 else (100 - outliers) / 100
    )
    assert result.comparisons["compiled_vs_brevitas"].max_diff_steps == shift
