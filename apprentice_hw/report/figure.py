"""The paper's Figure 1 for one model: memory of weights and activations per precision.

Mishra & Marr plot, for a ResNet at batch 1 and batch 8, how much of the memory footprint is
weights and how much activations as precision drops: at batch 8 activations dominate, so
lowering activation precision matters as much as weight precision. One stacked bar per
precision and batch (weights at the bottom, activations on top), in MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from apprentice_hw.atomic import atomic_path
from apprentice_hw.report_model import LayerRow, Report

BATCHES = (1, 8)
WEIGHT_COLOUR = "#4C72B0"
ACTIVATION_COLOUR = "#DD8452"


@dataclass(frozen=True)
class FootprintBar:
    """One precision of one model: weight bytes and activation bytes per batch size."""

    label: str  # e.g. "fp32", "W8A8", "W2A2"
    weight_bytes: float
    activation_bytes: dict[int, float]  # batch -> bytes

    def to_dict(self) -> dict:
        activations = {f"batch_{b}": v for b, v in self.activation_bytes.items()}
        return {"label": self.label, "weight_bytes": self.weight_bytes,
                "activation_bytes": activations}  # fmt: skip


def plot_footprint(bars: list[FootprintBar], title: str, path: Path) -> Path:
    """Write the stacked-bar PNG to ``path`` (atomically); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    mib = 1024 * 1024
    figure, axes = plt.subplots(1, len(BATCHES), figsize=(4.5 * len(BATCHES), 4), dpi=100,
                                sharey=False)  # fmt: skip
    for axis, batch in zip(axes, BATCHES, strict=True):
        labels = [bar.label for bar in bars]
        weights = [bar.weight_bytes / mib for bar in bars]
        activations = [bar.activation_bytes[batch] / mib for bar in bars]
        axis.bar(labels, weights, color=WEIGHT_COLOUR, label="weights")
        axis.bar(labels, activations, bottom=weights, color=ACTIVATION_COLOUR,
                 label="activations")  # fmt: skip
        axis.set_title(f"batch {batch}")
        axis.set_ylabel("MiB")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend()
    return save_png(figure, title, path)


def save_png(figure, title: str, path: Path) -> Path:
    """Title and lay out a matplotlib ``figure``, write it to ``path`` atomically, free it."""
    import matplotlib.pyplot as plt

    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def build_bars(report: Report) -> list[FootprintBar]:
    """fp32 and the build's own precision, from a report's per-layer rows."""
    from apprentice_hw.report.fields import precision_label

    return footprint_bars(report.layers, precision_label(report))


def footprint_bars(layers: list[LayerRow], label: str) -> list[FootprintBar]:
    """fp32 and ``label``'s precision: every layer's parameters and outputs at their bits."""
    import math

    shaped = [layer for layer in layers if layer.shape is not None and layer.shape.output_shape]
    if not shaped:
        from apprentice_hw.errors import UserError

        raise UserError("this build's report has no per-layer shapes (it was made by an older "
                        "apprentice-hw); rebuild it to plot its footprint")  # fmt: skip
    params = [math.prod(layer.weight_shape) for layer in shaped]
    outputs = [math.prod(layer.shape.output_shape) for layer in shaped]
    fp32 = FootprintBar("fp32", 4.0 * sum(params), {b: 4.0 * b * sum(outputs) for b in BATCHES})
    pairs = list(zip(params, outputs, shaped, strict=True))
    weight = sum(n * (layer.weight_bits or 32) / 8 for n, _, layer in pairs)
    per_image = sum(m * layer.shape.output_bits / 8 for _, m, layer in pairs)
    return [fp32, FootprintBar(label, weight, {b: b * per_image for b in BATCHES})]
