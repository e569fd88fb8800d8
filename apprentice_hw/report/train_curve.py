"""``train_curve.png``: what each training phase did, epoch by epoch.

Drawn from ``train_log.jsonl`` (``TrainingEpoch`` rows): on the left the training loss and, in
distillation phases, its three terms ``H(y,p_T)``, ``H(y,p_S)``, ``H(z_T,p_S)``; on the right
each network's test top-1. Phases run one after the other (the teacher, then the student), so
the x axis counts epochs over the whole run and a dotted line marks where a phase starts: a
reader sees the teacher converge, then the student start from wherever its scheme puts it.
"""

from __future__ import annotations

from pathlib import Path

from apprentice_hw.report.figure import save_png
from apprentice_hw.report_model import TrainingEpoch

CURVE_FILE = "train_curve.png"


def curve_title(recipe_name: str) -> str:
    """One title wherever the curve is drawn (``train``, and again by a build's report)."""
    return f"training: {recipe_name}"


def phase_offsets(epochs: list[TrainingEpoch]) -> dict[str, int]:
    """The run's epoch count before each phase starts, in the order the phases ran."""
    offsets: dict[str, int] = {}
    done = 0
    for row in epochs:
        if row.phase not in offsets:
            offsets[row.phase] = done
        done = max(done, offsets[row.phase] + row.epoch)
    return offsets


def plot_training_curve(epochs: list[TrainingEpoch], title: str, path: Path) -> Path:
    """Write the two-panel PNG to ``path`` (atomically); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    offsets = phase_offsets(epochs)
    figure, (loss_axis, top1_axis) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for phase, offset in offsets.items():
        rows = [row for row in epochs if row.phase == phase]
        x = [offset + row.epoch for row in rows]
        loss_axis.plot(x, [row.train_loss for row in rows], marker="o", label=f"{phase} loss")
        for term in rows[0].terms:
            loss_axis.plot(x, [row.terms.get(term, float("nan")) for row in rows],
                           linestyle="--", marker="x", label=f"{phase} {term}")  # fmt: skip
        for network in rows[0].test_top1:
            top1 = [100 * row.test_top1.get(network, float("nan")) for row in rows]
            top1_axis.plot(x, top1, marker="o", label=f"{network} ({phase})")
        if offset:
            for axis in (loss_axis, top1_axis):
                axis.axvline(offset + 0.5, color="grey", linestyle=":", linewidth=1)
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="loss")
    top1_axis.set(title="test top-1", xlabel="epoch", ylabel="top-1 (%)")
    for axis in (loss_axis, top1_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return save_png(figure, title, path)
