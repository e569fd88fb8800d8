"""Differences between two runtimes' outputs, counted in output quantization steps.

One step is one integer level of the output quantizer: the smallest difference two correct
integer pipelines can disagree by. Every comparison in the project (export check, ``verify``,
``compile``'s gate, the FPGA C simulation, ``deploy`` on a board) goes through this module, so
they all round, reduce and count the same way. The deploy bundle's ``run.py`` is the one
exception: it runs on a board with only the TVM runtime, without this package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Both sides are integers times the step; rounding drops the float noise of the division.
STEP_DECIMALS = 4


def steps_per_sample(reference: np.ndarray, candidate: np.ndarray, step: float) -> np.ndarray:
    """The largest difference of each sample's outputs, in steps (shape: samples)."""
    diff = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    return np.round(diff.reshape(len(diff), -1).max(axis=1) / step, STEP_DECIMALS)


def max_steps(reference: np.ndarray, candidate: np.ndarray, step: float) -> float:
    """The largest difference over all outputs, in steps."""
    return float(steps_per_sample(reference, candidate, step).max(initial=0.0))


@dataclass(frozen=True)
class OutputComparison:
    """How a candidate's outputs compare with a reference's on the same inputs."""

    samples: int
    max_abs_diff: float
    max_diff_steps: float
    fraction_exact: float  # samples whose outputs are identical
    fraction_within_one_step: float  # samples whose outputs all differ by at most one step
    prediction_agreement: float  # samples with the same top-1 class

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OutputComparison:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, step: float) -> OutputComparison:
    """Compare two (samples, outputs...) arrays in units of the output step."""
    reference = np.asarray(reference)
    candidate = np.asarray(candidate)
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    per_sample = steps_per_sample(reference, candidate, step)
    identical = diff.reshape(len(diff), -1).max(axis=1, initial=0.0) == 0.0
    return OutputComparison(
        samples=len(reference),
        max_abs_diff=float(diff.max(initial=0.0)),
        max_diff_steps=float(per_sample.max(initial=0.0)),
        fraction_exact=float(np.mean(identical)),
        fraction_within_one_step=float(np.mean(per_sample <= 1.0)),
        # the class axis is axis 1 (a (N, C, H, W) output agrees per pixel)
        prediction_agreement=float(np.mean(reference.argmax(1) == candidate.argmax(1))),
    )


def fraction_within(reference: np.ndarray, candidate: np.ndarray, step: float,
                    tolerance_steps: float) -> float:  # fmt: skip
    """The fraction of samples whose outputs are all within ``tolerance_steps``."""
    return float(np.mean(steps_per_sample(reference, candidate, step) <= tolerance_steps))
