"""The distillation schemes do what the paper says, checked on real (small) training runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from apprentice_hw.config import TrainSpec, load_recipe
from apprentice_hw.data import load_dataset
from apprentice_hw.distill import SCHEMES, SchemeInputs, TrainContext, run_scheme
from apprentice_hw.distill.loss import apprentice_loss
from apprentice_hw.progress import Progress
from apprentice_hw.training import build_student, build_teacher

FROZEN_STUDENT = TrainSpec(epochs=1, batch_size=128, lr=1e-12, momentum=0.0, weight_decay=0.0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").limit_train(256, seed=0)


def _inputs(recipe, data, tmp_path, student_spec=None) -> SchemeInputs:
    context = TrainContext(
        train=(data.train_x, data.train_y), test=(data.test_x[:64], data.test_y[:64]),
        augmentation="none", seed=0, progress=Progress(quiet=True), checkpoint_dir=tmp_path,
    )  # fmt: skip
    return SchemeInputs(
        teacher=build_teacher(recipe, data),
        student=build_student(recipe, data),
        teacher_spec=recipe.teacher_train,
        student_spec=student_spec or recipe.student_train,
        distill=recipe.distill,
        context=context,
        same_architecture=recipe.teacher == recipe.student,
        build_fp32_student=lambda: build_student(recipe, data, fp32=True),
    )


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_registered_schemes():
    assert set(SCHEMES.names()) == {"A", "B", "C", "none", "finetune"}


def test_scheme_b_never_updates_the_teacher(tiny_recipe, digits, tmp_path):
    inputs = _inputs(load_recipe(str(tiny_recipe)), digits, tmp_path)
    run_scheme("B", inputs)
    after_teacher_phase = torch.load(tmp_path / "teacher.ckpt", weights_only=False)
    trained = after_teacher_phase["networks"]["teacher"]
    final = inputs.teacher.state_dict()
    assert set(trained) == set(final)
    for key, value in trained.items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, final[key]), key
    assert not any(p.requires_grad for p in inputs.teacher.parameters())


def test_scheme_c_starts_from_the_teachers_weights(tiny_recipe, digits, tmp_path):
    recipe = load_recipe(str(tiny_recipe))
    assert recipe.teacher == recipe.student  # the tiny recipe uses one architecture for both
    inputs = _inputs(recipe, digits, tmp_path, student_spec=FROZEN_STUDENT)
    random_init = _state(inputs.student)
    run_scheme("C", inputs)
    teacher, student = inputs.teacher.state_dict(), inputs.student.state_dict()
    for key, value in teacher.items():
        if key.endswith(".weight") or key.endswith(".bias"):
            assert torch.allclose(student[key], value, atol=1e-9), key
    assert not torch.equal(random_init["conv1.weight"], student["conv1.weight"])


def test_scheme_c_trains_an_fp32_twin_for_a_different_student(tiny_recipe, digits, tmp_path):
    recipe = load_recipe(str(tiny_recipe))
    recipe = dataclasses.replace(
        recipe, teacher=dataclasses.replace(recipe.teacher, options={"width": 6, "blocks": [1, 1]})
    )
    inputs = _inputs(recipe, digits, tmp_path, student_spec=FROZEN_STUDENT)
    run_scheme("C", inputs)
    twin = torch.load(tmp_path / "fp32-student.ckpt", weights_only=False)["networks"]
    twin_weights = twin["fp32-student"]["conv1.weight"]
    assert torch.allclose(inputs.student.state_dict()["conv1.weight"], twin_weights, atol=1e-9)


def test_scheme_a_trains_teacher_and_student_together(tiny_recipe, digits, tmp_path):
    inputs = _inputs(load_recipe(str(tiny_recipe)), digits, tmp_path)
    teacher_init, student_init = _state(inputs.teacher), _state(inputs.student)
    result = run_scheme("A", inputs)
    assert result.teacher_trained
    assert [m.phase for m in result.history] == ["joint"]
    assert set(result.history[0].test_top1) == {"teacher", "student"}
    assert not torch.equal(
        teacher_init["conv1.weight"], inputs.teacher.state_dict()["conv1.weight"]
    )
    assert not torch.equal(
        student_init["conv1.weight"], inputs.student.state_dict()["conv1.weight"]
    )


def test_soft_term_sends_no_gradient_to_the_teacher():
    teacher_logits = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    student_logits = torch.tensor([[0.1, 0.2, 0.3]], requires_grad=True)
    loss = apprentice_loss(student_logits, teacher_logits, torch.tensor([1]), 0.0, 0.0, 1.0, 1.0)
    loss.total.backward()
    assert teacher_logits.grad is None or torch.all(teacher_logits.grad == 0)
    assert student_logits.grad is not None and torch.any(student_logits.grad != 0)


def test_no_distillation_baseline_leaves_the_teacher_alone(tiny_recipe, digits, tmp_path):
    inputs = _inputs(load_recipe(str(tiny_recipe)), digits, tmp_path)
    teacher_init = _state(inputs.teacher)
    result = run_scheme("none", inputs)
    assert not result.teacher_trained
    assert all(torch.equal(v, inputs.teacher.state_dict()[k]) for k, v in teacher_init.items())


def test_finetune_starts_from_fp32_weights_and_never_uses_the_teacher(tiny_recipe, digits,
                                                                       tmp_path):  # fmt: skip
    """Scheme C's fair baseline: C's fp32 start, then cross-entropy alone."""
    recipe = load_recipe(str(tiny_recipe))
    recipe = dataclasses.replace(
        recipe, teacher=dataclasses.replace(recipe.teacher, options={"width": 6, "blocks": [1, 1]})
    )
    inputs = _inputs(recipe, digits, tmp_path, student_spec=FROZEN_STUDENT)
    teacher_init = _state(inputs.teacher)
    result = run_scheme("finetune", inputs)
    assert not result.teacher_trained
    phases = [m.phase for m in result.history]
    assert list(dict.fromkeys(phases)) == ["fp32-student", "student"]  # the twin's epochs first
    assert phases.count("fp32-student") == recipe.teacher_train.epochs
    assert not (tmp_path / "teacher.ckpt").exists()
    assert all(torch.equal(v, inputs.teacher.state_dict()[k]) for k, v in teacher_init.items())
    twin = torch.load(tmp_path / "fp32-student.ckpt", weights_only=False)["networks"]
    twin_weights = twin["fp32-student"]["conv1.weight"]
    assert torch.allclose(inputs.student.state_dict()["conv1.weight"], twin_weights, atol=1e-9)


def test_frozen_teacher_logits_folded_and_cached(tiny_recipe, digits):
    """B and C read the teacher's logits from a BatchNorm-folded copy (same logits up to float
    rounding), and once per phase when the training images never change."""
    from apprentice_hw.distill.frozen import TeacherTargets
    from apprentice_hw.distill.trainer import predict, train_steps

    recipe = load_recipe(str(tiny_recipe))
    teacher = build_teacher(recipe, digits)
    train_steps(teacher, digits.train_x, digits.train_y, steps=5)  # BatchNorm statistics
    exact = predict(teacher, digits.train_x)
    train = (digits.train_x, digits.train_y)
    augmented = TeacherTargets(teacher, train, "shift1")
    assert augmented.cached is None and augmented.forward is not teacher
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in augmented.forward.modules())
    index = torch.tensor([5, 0, 17])
    folded = augmented(digits.train_x[index], index)
    assert torch.allclose(folded, exact[index], atol=1e-4)
    fixed = TeacherTargets(teacher, train, "none")
    assert fixed.cached is not None
    assert torch.allclose(fixed(torch.zeros_like(digits.train_x[index]), index), exact[index],
                          atol=1e-4)  # fmt: skip
    assert not any(p.requires_grad for p in teacher.parameters())


def test_a_teacher_fx_cannot_trace_runs_as_written():
    from apprentice_hw.distill.frozen import inference_copy

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x) if x.sum() > 0 else -self.linear(x)

    model = Branchy()
    assert inference_copy(model) is model
