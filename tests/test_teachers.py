"""Trained teachers: a build reuses one (``--teacher``) instead of training it again.

That ResNet-18/34/50 teachers take torchvision's state dicts is test_zoo's
``test_imagenet_resnets_match_torchvision``."""

from __future__ import annotations

import json

import torch

from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers


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
    assert joint.code == 2 and "schemes B, C and finetune" in joint.err
    init = run_cli("train", "-r", tiny_recipe, "--scheme", "B", "--student-init",
                   tmp_path / "tiny.pt", "--out", tmp_path / "e")  # fmt: skip
    assert init.code == 2 and "is for schemes C and finetune" in init.err
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
