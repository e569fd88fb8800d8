"""Per-layer costs from the exported graph equal a count made on the PyTorch model itself."""

from __future__ import annotations

import math

import pytest
import torch

from apprentice_hw.export import export_qcdq
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import QuantLayers
from apprentice_hw.quant.calibration import calibrate_untrained
from apprentice_hw.report.layers import activation_bytes, layer_costs, weight_bytes


def _torch_layers(model: torch.nn.Module, sample: torch.Tensor) -> list[dict]:
    """Conv and linear layers in call order: parameters, MACs and output shape, from hooks."""
    found = []

    def hook(module, _inputs, output):
        per_output = module.weight[0].numel()  # (in / groups) x KH x KW, or in_features
        found.append({
            "parameters": module.weight.numel(),
            "macs": output[0].numel() * per_output,
            "output_shape": tuple(output.shape[1:]),
        })  # fmt: skip

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    with torch.no_grad():
        model.eval()(sample)
    for handle in handles:
        handle.remove()
    return found


@pytest.mark.parametrize(("weight_bits", "act_bits"), [(2, 8), (4, 4), (8, 2)])
def test_layer_costs_match_the_torch_model(tmp_path, weight_bits, act_bits):
    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16)
    layers = QuantLayers.from_bits(weight_bits, act_bits, 8, "per-channel")
    model = build_model(ModelSpec("resnet-small", {"width": 8}), layers, 3, 10)
    calibrate_untrained(model, images, batch_size=8)
    exported = export_qcdq(model, images[:1], tmp_path / "m.onnx")
    costs = layer_costs(exported)
    expected = _torch_layers(model, images[:1])
    assert len(costs) == len(expected)
    for index, (cost, torch_layer) in enumerate(zip(costs, expected, strict=True)):
        edge = index in (0, len(costs) - 1)  # first conv and classifier keep 8-bit weights
        assert cost.parameters == torch_layer["parameters"]
        assert cost.macs == torch_layer["macs"]
        assert cost.output_shape == torch_layer["output_shape"]
        assert cost.weight_bits == (8 if edge else weight_bits)
        # Every body output is stored by an act_bits quantizer; the logits by an 8-bit one.
        assert cost.output_bits == (8 if index == len(costs) - 1 else act_bits)
        assert cost.act_bits == (8 if index == 0 or index == len(costs) - 1 else act_bits)
        assert cost.bit_operations == cost.macs * cost.weight_bits * cost.act_bits
    assert weight_bytes(costs) == sum(
        t["parameters"] * (8 if i in (0, len(costs) - 1) else weight_bits) / 8
        for i, t in enumerate(expected)
    )
    for batch in (1, 8):
        assert activation_bytes(costs, batch) == sum(
            math.prod(t["output_shape"]) * batch * (8 if i == len(costs) - 1 else act_bits) / 8
            for i, t in enumerate(expected)
        )
