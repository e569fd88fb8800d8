"""Trained teachers: a build reuses one (``--teacher``) instead of training it again."""

from __future__ import annotations

import json

import pytest
import torch

from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers

# torchvision's ResNets: (block kind, blocks per stage); their state dicts name every tensor
# after this structure (torchvision/models/resnet.py), which ours follow.
TORCHVISION_RESNETS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]),
                       "resnet50": ("bottleneck", [3, 4, 6, 3])}  # fmt: skip
BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet_keys(name: str) -> set[str]:
    """The state-dict keys of torchvision's ``name`` (without importing torchvision, which
    does not import beside torch 2.13.0's CPU build)."""
    kind, blocks = TORCHVISION_RESNETS[name]
    convs = 2 if kind == "basic" else 3
    keys = {"conv1.weight", "fc.weight", "fc.bias", *(f"bn1.{t}" for t in BN_TENSORS)}
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            prefix = f"layer{stage}.{block}"
            for conv in range(1, convs + 1):
                keys.add(f"{prefix}.conv{conv}.weight")
                keys.update(f"{prefix}.bn{conv}.{t}" for t in BN_TENSORS)
            if block == 0 and (stage > 1 or kind == "bottleneck"):  # a shortcut projection
                keys.add(f"{prefix}.downsample.0.weight")
                keys.update(f"{prefix}.downsample.1.{t}" for t in BN_TENSORS)
    return keys


@pytest.mark.parametrize("name", list(TORCHVISION_RESNETS))
def test_imagenet_teachers_take_torchvision_state_dicts(name):
    """A torchvision checkpoint of ResNet-18/34/50 loads into the teacher as it is."""
    teacher = build_model(ModelSpec(name), FloatLayers(), 3, 1000)
    state = teacher.state_dict()
    assert set(state) == torchvision_resnet_keys(name)
    assert tuple(state["conv1.weight"].shape) == (64, 3, 7, 7)
    assert state["fc.weight"].shape[0] == 1000


def _log(directory):
    return [json.loads(line) for line in (directory / "train_log.jsonl").read_text().splitlines()]


def test_a_trained_teacher_is_reused_not_trained_again(tiny_recipe, run_cli, tmp_path):
    first = tmp_path / "first"
    assert run_cli("train", "-r", tiny_recipe, "--out", first, "-q").code == 0
    assert any(entry["phase"] == "teacher" for entry in _log(first))
    # The recipe's [teacher] checkpoint and --teacher do the same.
    text = tiny_recipe.read_text().replace("[teacher]\n", f"[teacher]\ncheckpoint = "
                                           f"\"{first / 'teacher.pt'}\"\n")  # fmt: skip
    (tmp_path / "reuse.toml").write_text(text)
    by_flag = ("-r", tiny_recipe, "--teacher", first / "teacher.pt")
    for scheme, source in (("B", ("-r", tmp_path / "reuse.toml")), ("C", by_flag)):
        again = tmp_path / f"again-{scheme}"
        result = run_cli("train", *source, "--scheme", scheme, "--out", again, "-q")
        assert result.code == 0, result.err
        assert not any(entry["phase"] == "teacher" for entry in _log(again)), scheme
        loaded = torch.load(first / "teacher.pt", weights_only=True)
        kept = torch.load(again / "teacher.pt", weights_only=True)
        assert all(torch.equal(loaded[key], kept[key]) for key in loaded), scheme
        recorded = json.loads((again / "recipe.json").read_text())
        assert recorded["teacher_checkpoint"] == str(first / "teacher.pt")


def test_a_teacher_that_does_not_fit_is_refused_before_training(tiny_recipe, run_cli, tmp_path):
    other = build_model(ModelSpec("resnet-small", {"width": 4, "blocks": [2, 1]}), FloatLayers(),
                        1, 10)  # fmt: skip
    torch.save(other.state_dict(), tmp_path / "other.pt")
    wrong = run_cli("train", "-r", tiny_recipe, "--teacher", tmp_path / "other.pt",
                    "--out", tmp_path / "a")  # fmt: skip
    assert wrong.code == 2 and wrong.err.count("\n") == 1, wrong.err
    assert "does not fit the teacher resnet-small" in wrong.err
    assert not (tmp_path / "a").exists()
    tiny = build_model(ModelSpec("resnet-small", {"width": 4, "blocks": [1, 1]}), FloatLayers(),
                       1, 10)  # fmt: skip
    torch.save(tiny.state_dict(), tmp_path / "tiny.pt")
    joint = run_cli("train", "-r", tiny_recipe, "--scheme", "A", "--teacher",
                    tmp_path / "tiny.pt", "--out", tmp_path / "b")  # fmt: skip
    assert joint.code == 2 and "schemes B and C" in joint.err
    init = run_cli("train", "-r", tiny_recipe, "--scheme", "B", "--student-init",
                   tmp_path / "tiny.pt", "--out", tmp_path / "e")  # fmt: skip
    assert init.code == 2 and "for scheme C" in init.err
    (tmp_path / "notes.pt").write_text("not weights")
    garbage = run_cli("train", "-r", tiny_recipe, "--teacher", tmp_path / "notes.pt",
                      "--out", tmp_path / "c")  # fmt: skip
    assert garbage.code == 2 and "cannot read teacher checkpoint" in garbage.err
    # Names fit but shapes do not (another class count): refused when the data is known.
    wide = build_model(ModelSpec("resnet-small", {"width": 4, "blocks": [1, 1]}), FloatLayers(),
                       1, 7)  # fmt: skip
    torch.save(wide.state_dict(), tmp_path / "classes.pt")
    shapes = run_cli("train", "-r", tiny_recipe, "--teacher", tmp_path / "classes.pt",
                     "--out", tmp_path / "d")  # fmt: skip
    assert shapes.code == 2 and "does not fit the teacher" in shapes.err, shapes.err
    assert not (tmp_path / "d").exists()
