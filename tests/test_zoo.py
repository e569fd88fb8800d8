"""Every zoo model in every quantizer family builds, trains a step and exports."""

from __future__ import annotations

import pytest
import torch

from apprentice_hw.export import check_with_onnxruntime, export_qcdq
from apprentice_hw.models import MODELS, ModelSpec, build_model
from apprentice_hw.quant import ACT_BITS, QUANT_FAMILIES, WEIGHT_BITS, FloatLayers, QuantLayers

# Small widths keep every architecture's depth and wiring while the test stays fast.
TEST_WIDTH = {"resnet18": 8, "resnet34": 8, "resnet50": 4}
INPUT = {"resnet18": (3, 32, 32), "resnet34": (3, 32, 32), "resnet50": (3, 32, 32)}
DEFAULT_INPUT = (1, 8, 8)
FAST_MODELS = ["resnet-small", "resnet20", "resnet18"]


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, {"width": TEST_WIDTH.get(name, 4)})


def _train_step_and_export(model, shape, tmp_path) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, *shape)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), torch.arange(8) % 10)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    onnx_model = export_qcdq(model, x[:1], tmp_path / "m.onnx")
    check, _, _ = check_with_onnxruntime(model, onnx_model, x)
    assert check.max_diff_steps <= 1.0


def _model_family_matrix():
    """Every model x family; deep models outside the default family run with ``-m slow``."""
    for name in MODELS.names():
        for family in QUANT_FAMILIES.names():
            slow = family != "float" and name not in FAST_MODELS
            marks = [pytest.mark.slow] if slow else []
            yield pytest.param(name, family, marks=marks, id=f"{name}-{family}")


@pytest.mark.parametrize(("name", "family"), list(_model_family_matrix()))
def test_every_model_in_every_family(name, family, tmp_path):
    shape = INPUT.get(name, DEFAULT_INPUT)
    layers = QuantLayers.from_bits(2, 8, 8, family)
    _train_step_and_export(build_model(_spec(name), layers, shape[0], 10), shape, tmp_path)


@pytest.mark.parametrize("act_bits", ACT_BITS)
@pytest.mark.parametrize("weight_bits", WEIGHT_BITS)
@pytest.mark.parametrize("name", FAST_MODELS)
def test_every_bit_width(name, weight_bits, act_bits, tmp_path):
    shape = INPUT.get(name, DEFAULT_INPUT)
    layers = QuantLayers.from_bits(weight_bits, act_bits, None, "float")
    _train_step_and_export(build_model(_spec(name), layers, shape[0], 10), shape, tmp_path)


@pytest.mark.parametrize("name", MODELS.names())
def test_fp32_and_student_share_parameter_names(name):
    shape = INPUT.get(name, DEFAULT_INPUT)
    fp32 = build_model(_spec(name), FloatLayers(), shape[0], 10).state_dict()
    student = build_model(_spec(name), QuantLayers.from_bits(4, 8, 8, "float"), shape[0], 10)
    extra = set(student.state_dict()) - set(fp32)
    assert set(fp32) <= set(student.state_dict())
    assert all("quant" in key for key in extra)


def _torchvision_keys(bottleneck: bool, blocks: tuple[int, ...]) -> set[str]:
    """The state-dict keys torchvision's resnet18/34/50 have, written out from its source."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{s}" for s in bn)}
    convs = 3 if bottleneck else 2
    for layer, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"layer{layer}.{block}"
            for c in range(1, convs + 1):
                keys.add(f"{prefix}.conv{c}.weight")
                keys.update(f"{prefix}.bn{c}.{s}" for s in bn)
            if block == 0 and (layer > 1 or bottleneck):
                keys.add(f"{prefix}.downsample.0.weight")
                keys.update(f"{prefix}.downsample.1.{s}" for s in bn)
    return keys


@pytest.mark.parametrize(
    ("name", "bottleneck", "blocks", "parameters"),
    [
        ("resnet18", False, (2, 2, 2, 2), 11_689_512),
        ("resnet34", False, (3, 4, 6, 3), 21_797_672),
        ("resnet50", True, (3, 4, 6, 3), 25_557_032),
    ],
)
def test_imagenet_resnets_match_torchvision(name, bottleneck, blocks, parameters):
    model = build_model(ModelSpec(name), FloatLayers(), 3, 1000)
    assert set(model.state_dict()) == _torchvision_keys(bottleneck, blocks)
    assert sum(p.numel() for p in model.parameters()) == parameters


def _digits_like(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Real digits images resized and repeated to ``shape`` (in-distribution inputs)."""
    resized = torch.nn.functional.interpolate(images, size=shape[1:], mode="nearest")
    return resized.repeat(1, shape[0], 1, 1)


@pytest.mark.parametrize(("weight_bits", "act_bits"), [(2, 2), (2, 8), (4, 4), (8, 8)])
@pytest.mark.parametrize("name", FAST_MODELS)
def test_integer_module_matches_brevitas(name, weight_bits, act_bits, tmp_path):
    """The reduced matrix; ``benchmarks/lowering_matrix.py`` runs every model and width."""
    from apprentice_hw.backends import compile_module, prepare_module
    from apprentice_hw.data import load_dataset
    from apprentice_hw.distill.trainer import train_steps
    from apprentice_hw.export.onnx_export import output_quant_step
    from apprentice_hw.hardware import get_target
    from apprentice_hw.output_steps import compare_outputs
    from apprentice_hw.verify import brevitas_outputs, run_module_outputs

    shape = INPUT.get(name, DEFAULT_INPUT)
    digits = load_dataset("digits")
    layers = QuantLayers.from_bits(weight_bits, act_bits, 8, "per-channel")
    torch.manual_seed(0)
    model = build_model(_spec(name), layers, shape[0], 10)
    train_steps(model, _digits_like(digits.train_x, shape), digits.train_y, steps=20)
    test = _digits_like(digits.test_x[:100], shape)
    reference = brevitas_outputs(model, test)
    exported = export_qcdq(model, test[:1], tmp_path / "m.onnx")
    target = get_target("x86-host")
    prepared = prepare_module(exported, target)
    assert all(layer.strategy != "float" for layer in prepared.layers)
    outputs = run_module_outputs(compile_module(prepared.mod, target), test.numpy())[0]
    step = output_quant_step(exported)
    check = compare_outputs(reference.float64, outputs, step)
    # The acceptance (every input within 1 step of the exact Brevitas model, top-1 agreement
    # >= 99%) and what the float64 requantization delivers: identical outputs (1% slack for a
    # value landing exactly on a rounding boundary).
    assert check.max_diff_steps <= 1.0, check
    assert check.prediction_agreement >= 0.99 and check.fraction_exact >= 0.99, check
    float32 = compare_outputs(reference.float32, outputs, step)
    assert float32.prediction_agreement >= 0.99, float32
