"""Size a zoo model for a board without training: export it at each precision, count bytes.

Weights are random (the footprint depends on shapes and bits only); activation quantizers are
calibrated on random images so the export is well formed. Each precision is exported exactly
as a build would export it, and ``layers.layer_costs`` reads the bytes from that graph.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import torch

from apprentice_hw.report.figure import BATCHES, FootprintBar
from apprentice_hw.report.layers import LayerCost, activation_bytes, layer_costs, weight_bytes

PRECISIONS = ("fp32", "W8A8", "W4A4", "W2A2")  # the paper's Figure 1 columns
CALIBRATION_IMAGES = 4


def parse_precision(label: str) -> tuple[int, int] | None:
    """``"W4A4"`` -> (4, 4); ``"fp32"`` -> None (a float model)."""
    if label.lower() == "fp32":
        return None
    weight, _, act = label.upper().removeprefix("W").partition("A")
    return int(weight), int(act)


def export_model(name: str, label: str, input_size: int, channels: int, classes: int,
                 first_last_bits: int | None, path: Path,
                 options: dict | None = None) -> onnx.ModelProto:  # fmt: skip
    """The untrained ``name`` (zoo ``options``) at precision ``label``, exported as a build
    would export it."""
    from apprentice_hw.export import export_qcdq
    from apprentice_hw.models import ModelSpec, build_model
    from apprentice_hw.quant import FloatLayers, QuantLayers
    from apprentice_hw.quant.calibration import calibrate_untrained

    torch.manual_seed(0)
    images = torch.rand(CALIBRATION_IMAGES, channels, input_size, input_size)
    bits = parse_precision(label)
    if bits is None:
        model = build_model(ModelSpec(name, options or {}), FloatLayers(), channels, classes)
        model.eval()
        torch.onnx.export(model, (images[:1],), str(path), input_names=["input"],
                          output_names=["logits"], dynamo=False)  # fmt: skip
        return onnx.load(str(path))
    layers = QuantLayers.from_bits(bits[0], bits[1], first_last_bits, "per-channel")
    model = build_model(ModelSpec(name, options or {}), layers, channels, classes)
    calibrate_untrained(model, images, batch_size=CALIBRATION_IMAGES)
    return export_qcdq(model, images[:1], path)


Sized = list[tuple[FootprintBar, list[LayerCost]]]


def size_model(
    name: str,
    input_size: int,
    classes: int = 1000,
    channels: int = 3,
    precisions: tuple[str, ...] = PRECISIONS,
    first_last_bits: int | None = 8,
) -> Sized:
    """Weight and activation bytes of ``name`` at each precision (batch 1 and 8)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in precisions:
            exported = export_model(name, label, input_size, channels, classes,
                                    first_last_bits, Path(tmp) / f"{label}.onnx")  # fmt: skip
            costs = layer_costs(exported)
            bar = FootprintBar(label, weight_bytes(costs),
                               {b: activation_bytes(costs, b) for b in BATCHES})  # fmt: skip
            results.append((bar, costs))
    return results
