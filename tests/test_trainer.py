"""Trainer: schedules, metrics, checkpoints, and resume after a real kill."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from apprentice_hw.distill import SCHEDULES, topk_accuracy


def test_schedules():
    cosine, step = SCHEDULES.get("cosine"), SCHEDULES.get("step")
    assert cosine(0.1, 0, 10) == pytest.approx(0.1)
    assert cosine(0.1, 5, 10) == pytest.approx(0.05)
    assert cosine(0.1, 9, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.9)))
    assert [step(1.0, e, 8) for e in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert SCHEDULES.get("constant")(0.3, 7, 8) == 0.3


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 1])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0  # k larger than the classes: all classes


def _train_command(recipe: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "apprentice_hw", "train", "--recipe", str(recipe), "--epochs", "4",
        "--out", str(out), "-q", *extra,
    ]  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_after_kill_gives_the_same_weights(tiny_recipe, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_command(tiny_recipe, reference), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(tiny_recipe, killed), start_new_session=True)
    checkpoint = killed / "checkpoints" / "teacher.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "student.pt").exists(), "the run finished before it could be killed"
    assert checkpoint.exists()

    refused = subprocess.run(_train_command(tiny_recipe, killed), capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --resume" in refused.stderr
    subprocess.run(_train_command(tiny_recipe, killed, "--resume"), check=True, capture_output=True)
    for name in ("teacher.pt", "student.pt"):
        expected, got = _weights(reference / name), _weights(killed / name)
        assert set(expected) == set(got)
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key}"
    assert (killed / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()


def test_resume_with_another_recipe_is_refused(tiny_recipe, tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "-r", tiny_recipe, "--epochs", "1", "-o", out, "-q").code == 0
    result = run_cli("train", "-r", tiny_recipe, "--bits", "4", "-o", out, "--resume", "-q")
    assert result.code == 2 and "different recipe (differs in: weight_bits)" in result.err


@pytest.mark.parametrize("scheme", ["A", "C", "none", "finetune"])
def test_train_command_runs_every_scheme(tiny_recipe, tmp_path, run_cli, scheme):
    from PIL import Image

    out = tmp_path / scheme
    result = run_cli("train", "-r", tiny_recipe, "--scheme", scheme, "-o", out, "-q")
    assert result.code == 0, result.err
    assert f"scheme {scheme}" in result.out
    assert (out / "student.pt").exists()
    # finetune starts from the teacher's weights here: the tiny recipe's networks are one model
    assert (out / "teacher.pt").exists() == (scheme != "none")
    with Image.open(out / "train_curve.png") as curve:  # the loss and top-1 plot of the log
        assert curve.size == (1000, 400) and len(curve.getcolors(1 << 16) or range(99)) > 10


def test_unknown_scheme_and_family_are_user_errors(tiny_recipe, tmp_path, run_cli):
    bad_scheme = run_cli("train", "-r", tiny_recipe, "--scheme", "D", "-o", tmp_path / "x")
    assert bad_scheme.code == 2 and "unknown distillation scheme 'D'" in bad_scheme.err
    bad_family = run_cli("train", "-r", tiny_recipe, "--quant", "fp4", "-o", tmp_path / "y")
    assert bad_family.code == 2 and "unknown quantizer family 'fp4'" in bad_family.err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_batchnorm_statistics_are_those_of_the_final_weights():
    """Each epoch ends with every BatchNorm's running statistics recomputed for the weights it
    ends with: the cumulative average over the first batches, weights and mode untouched."""
    from apprentice_hw.quant.calibration import reestimate_batchnorm

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3)
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(3), torch.nn.ReLU()).train()
    images = torch.randn(40, 1, 6, 6)
    model(images[:5] * 7)  # stale statistics, as after the weights moved
    weights = {k: v.clone() for k, v in model.state_dict().items()
               if "running" not in k and "tracked" not in k}  # fmt: skip
    reestimate_batchnorm(model, images, batch_size=10, batches=3)
    with torch.no_grad():
        outputs = [conv(images[i : i + 10]) for i in (0, 10, 20)]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3)) for o in outputs]).mean(dim=0)
    norm = model[1]
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, expected_var, atol=1e-5)
    assert norm.momentum == 0.1 and model.training and norm.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
