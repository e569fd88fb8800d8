"""Quantizer presets: the bit widths mean what the README says they mean."""

from __future__ import annotations

import pytest
import torch

from apprentice_hw.errors import UserError
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers, act_preset, weight_preset
from apprentice_hw.report import weight_footprint


def _student(bits: int, first_last: int | None = 8):
    layers = QuantLayers(
        weight_preset(bits),
        act_preset(8),
        None if first_last is None else weight_preset(first_last),
    )
    torch.manual_seed(0)
    return build_model(ModelSpec("resnet-small", {"width": 4}), layers, 1, 10)


def _integer_levels(layer) -> torch.Tensor:
    quant = layer.quant_weight()
    return torch.unique(torch.round(quant.value / quant.scale))


@pytest.mark.parametrize(("bits", "limit"), [(2, 1), (3, 3), (4, 7), (8, 127)])
def test_body_weights_use_the_presets_levels(bits, limit):
    student = _student(bits)
    levels = _integer_levels(student.stages[0][0].conv1)
    assert levels.abs().max() <= limit
    if bits == 2:
        assert set(levels.tolist()) <= {-1.0, 0.0, 1.0}
        assert {-1.0, 1.0} <= set(levels.tolist())  # really ternary, not binary or all-zero


def test_first_and_last_layers_follow_the_policy():
    kept = _student(2, first_last=8)
    assert _integer_levels(kept.conv1).abs().max() > 1
    assert weight_footprint(kept).bits_per_layer["fc"] == 8
    same = _student(2, first_last=None)
    assert set(_integer_levels(same.conv1).tolist()) <= {-1.0, 0.0, 1.0}
    assert weight_footprint(same).bits_per_layer["fc"] == 2


def test_footprint_counts_bits_per_layer():
    student = _student(4)
    footprint = weight_footprint(student)
    conv_fc = [m for m in student.modules() if hasattr(m, "weight_quant")]
    expected_bits = sum(
        m.weight.numel() * (8 if m in (student.conv1, student.fc) else 4) for m in conv_fc
    )
    rest = footprint.parameters - sum(m.weight.numel() for m in conv_fc)
    assert footprint.trained_precision_bytes == expected_bits / 8 + rest * 4


@pytest.mark.parametrize("bits", [0, 1, 5, 16, 32])
def test_unsupported_weight_bits(bits):
    with pytest.raises(UserError, match=f"weight bits {bits} are not supported; use one of 2"):
        weight_preset(bits)


@pytest.mark.parametrize("bits", [1, 3, 16])
def test_unsupported_activation_bits(bits):
    with pytest.raises(UserError, match=f"activation bits {bits} are not supported"):
        act_preset(bits)
