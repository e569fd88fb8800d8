"""The Figure-1 plot renders real bars, and `report --model` sizes models from their shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers
from apprentice_hw.report.figure import (
    ACTIVATION_COLOUR,
    WEIGHT_COLOUR,
    FootprintBar,
    footprint_bars,
    plot_footprint,
)
from apprentice_hw.report_model import LayerRow, LayerShape


def _pixels_of(image: Image.Image, colour: str) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB")).astype(int)
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.all(np.abs(rgb - wanted) <= 2, axis=-1)


def test_plot_has_one_stacked_bar_per_precision_and_batch(tmp_path):
    bars = [
        FootprintBar("fp32", 40e6, {1: 10e6, 8: 80e6}),
        FootprintBar("W2A2", 3e6, {1: 0.6e6, 8: 5e6}),
    ]
    path = plot_footprint(bars, "test", tmp_path / "figure.png")
    with Image.open(path) as image:
        assert image.size == (900, 400)
        weights = _pixels_of(image, WEIGHT_COLOUR)
        activations = _pixels_of(image, ACTIVATION_COLOUR)
    left, right = slice(0, 450), slice(450, 900)
    # Weights dominate at batch 1, activations at batch 8 (the paper's point).
    assert weights[:, left].sum() > activations[:, left].sum() > 0
    assert activations[:, right].sum() > weights[:, right].sum() > 0
    # Four bars: each panel has two separate columns of weight colour.
    columns = np.flatnonzero(weights[:, left].any(axis=0))
    assert np.count_nonzero(np.diff(columns) > 1) == 1
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*partial*"))


def _row(weight_shape, output_shape, weight_bits, output_bits) -> LayerRow:
    shape = LayerShape([1], output_shape, 0, 0, output_bits, 0.0)
    return LayerRow("layer", "conv2d", weight_shape, "int8", weight_bits, weight_bits, 8, 0,
                    None, shape=shape)  # fmt: skip


def test_build_bars_count_parameters_and_outputs_at_their_bits():
    layers = [_row([8, 3, 3, 3], [8, 4, 4], 8, 4), _row([10, 8], [10], 2, 8)]
    fp32, student = footprint_bars(layers, "W2A4")
    assert fp32.label == "fp32" and student.label == "W2A4"
    assert fp32.weight_bytes == 4 * (216 + 80)
    assert fp32.activation_bytes == {1: 4 * 138, 8: 32 * 138}
    assert student.weight_bytes == 216 + 80 * 2 / 8
    assert student.activation_bytes == {1: 128 * 4 / 8 + 10, 8: 8 * (64 + 10)}


def _parameters_and_outputs(name: str, size: int, classes: int) -> tuple[int, int]:
    model = build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()
    outputs = []
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o.numel())) for m in layers]
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return sum(m.weight.numel() for m in layers), sum(outputs)


def test_report_model_bits_shorthand(run_cli):
    size = ("--model", "resnet20", "--input", "16", "--classes", "10")
    result = run_cli("report", *size, "--bits", "2", "--act-bits", "4", "--first-last", "8",
                     "--format", "json")  # fmt: skip
    assert result.code == 0, result.err
    assert [row["label"] for row in json.loads(result.out)["rows"]] == ["fp32", "W2A4"]


def test_report_model_counts_bytes_from_shapes(run_cli):
    result = run_cli("report", "--model", "resnet20", "--input", "16", "--classes", "10",
                     "--precisions", "fp32,W4A4", "--format", "json")  # fmt: skip
    assert result.code == 0, result.err
    rows = json.loads(result.out)["rows"]
    parameters, outputs = _parameters_and_outputs("resnet20", 16, 10)
    by_key = {(r["label"], r["first_last"]): r for r in rows}
    assert set(by_key) == {(p, f) for p in ("fp32", "W4A4") for f in ("8-bit", "same")}
    fp32 = by_key[("fp32", "8-bit")]
    assert fp32["weight_bytes"] == 4 * parameters
    assert fp32["activation_bytes"] == {"batch_1": 4 * outputs, "batch_8": 32 * outputs}
    same = by_key[("W4A4", "same")]
    assert same["weight_bytes"] == parameters * 4 / 8
    # Every conv output at 4 bits, the logits at 8.
    assert same["activation_bytes"]["batch_1"] == (outputs - 10) * 4 / 8 + 10
    assert by_key[("W4A4", "8-bit")]["weight_bytes"] > same["weight_bytes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a build directory or --model NAME"),
        (["--model", "resnet1000"], "unknown model 'resnet1000'"),
        (["--model", "resnet20", "--precisions", "W9A2"], "precision 'W9A2' is not"),
        (["--model", "resnet20", "--precisions", "int4"], "precision 'int4' is not"),
        (["--model", "resnet20", "--input", "4"], "--input must be from 8 to 2048"),
        (["--model", "resnet20", "--format", "html"], "--format html is for a build directory"),
        (["--model", "resnet20", "--act-bits", "4"], "--act-bits goes with --bits"),
        (["--model", "resnet20", "--bits", "9"], "precision 'W9A9' is not"),
    ],
)
def test_report_rejects_bad_input(run_cli, args, message):
    result = run_cli("report", *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_imagenet_resnets_match_the_shape_only_count(run_cli, name):
    """Issue acceptance: 224x224 ResNets at fp32/8/4/2 bits, batch 1 and 8, within 1%."""
    result = run_cli("report", "--model", name, "--first-last", "same", "--format", "json")
    assert result.code == 0, result.err
    parameters, outputs = _parameters_and_outputs(name, 224, 1000)
    for row in json.loads(result.out)["rows"]:
        bits = 32 if row["label"] == "fp32" else int(row["label"][1])
        logit_bits = 32 if bits == 32 else 8  # the logits keep an 8-bit quantizer
        expected_weights = parameters * bits / 8
        assert abs(row["weight_bytes"] - expected_weights) <= 0.01 * expected_weights
        for batch in (1, 8):
            expected = batch * ((outputs - 1000) * bits / 8 + 1000 * logit_bits / 8)
            actual = row["activation_bytes"][f"batch_{batch}"]
            assert abs(actual - expected) <= 0.01 * expected


def test_latency_estimate_is_the_roofline_by_hand():
    from apprentice_hw.hardware import get_target
    from apprentice_hw.report.estimate import estimate_latency, rate_key
    from apprentice_hw.report.layers import LayerCost

    pi = get_target("arm-a72")  # 4 cores x 1.5 GHz, int4 16 MACs/cycle, int8 16, 4 GB/s
    conv = LayerCost("conv", "conv2d", (64, 56, 56), (64, 56, 56), 36864, 115_605_504, 4, 4, 4)
    fc = LayerCost("fc", "dense", (512,), (1000,), 512_000, 512_000, 8, 8, 8)
    assert rate_key(4, 4) == "int4" and rate_key(8, 8) == "int8" and rate_key(32, 32) == "fp32"
    estimate = estimate_latency([conv, fc], pi)
    conv_compute = 115_605_504 / (16 * 4 * 1.5e9)  # 1.204 ms: compute-bound
    conv_memory = (36864 / 2 + 2 * 64 * 56 * 56 / 2) / 4e9  # 0.05 ms
    fc_compute = 512_000 / (16 * 4 * 1.5e9)  # 0.0053 ms
    fc_memory = (512_000 + 512 + 1000) / 4e9  # 0.128 ms: memory-bound (weights)
    expected = max(conv_compute, conv_memory) + max(fc_compute, fc_memory)
    assert estimate.ms == pytest.approx(1e3 * expected, rel=1e-12)
    assert (estimate.compute_bound_layers, estimate.memory_bound_layers) == (1, 1)
    assert estimate.kind == "estimated"
    assert estimate_latency([conv], pi, batch=8).ms == pytest.approx(8e3 * conv_compute)
