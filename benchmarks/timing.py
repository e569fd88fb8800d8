"""The summary every latency benchmark reports for a list of timed runs (numpy only).

Kept apart from ``latency.py`` so that phase 2 of ``gpu_latency.py`` can use it on a GPU
machine that has numpy but not the training stack ``latency.py`` imports.
"""

from __future__ import annotations

import numpy as np


def summary(times_s: list[float], number: int) -> dict:
    """Median and interquartile range in ms of per-call times, one per run of ``number`` calls."""
    ms = np.asarray(times_s) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return {
        "median_ms": round(float(median), 4),
        "iqr_ms": round(float(q3 - q1), 4),
        "repeats": len(times_s),
        "calls_per_repeat": number,
    }
