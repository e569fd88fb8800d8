"""The Apprentice distillation schemes (and a no-distillation baseline) as registry entries.

A scheme decides where the student starts and which networks learn:

- ``A``: teacher and student trained jointly from scratch; the loss's alpha term trains the
  teacher, the beta and gamma terms the student. The teacher's logits enter the soft term
  detached: the teacher learns from the labels only, never from the low-precision student.
- ``B``: the teacher is trained first and frozen; the student starts from random weights.
- ``C``: like B, but the student starts from trained full-precision weights of its own
  architecture: the teacher's when both are the same model, a checkpoint given as
  ``student_init``, or else an fp32 twin of the student trained first.
- ``none``: the student trained alone with cross-entropy from random weights: the baseline of
  schemes A and B.
- ``finetune``: the student starts from trained fp32 weights as in C and is fine-tuned with
  cross-entropy alone: scheme C's baseline (the usual quantization-aware fine-tuning), so C's
  gain over it is what distillation adds, not what the fp32 start adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from apprentice_hw.config import DistillSpec, TrainSpec
from apprentice_hw.distill.frozen import TeacherTargets
from apprentice_hw.distill.loss import apprentice_loss
from apprentice_hw.distill.trainer import (
    EpochMetrics,
    Phase,
    TrainContext,
    cross_entropy_phase,
    run_phase,
)
from apprentice_hw.errors import UserError, summarize
from apprentice_hw.registry import Registry


@dataclass
class SchemeInputs:
    """Freshly built networks and everything needed to train them."""

    teacher: nn.Module
    student: nn.Module
    teacher_spec: TrainSpec
    student_spec: TrainSpec
    distill: DistillSpec
    context: TrainContext
    same_architecture: bool  # teacher and student are the same model with the same options
    build_fp32_student: Callable[[], nn.Module]
    teacher_pretrained: bool = False  # the teacher came trained (--teacher): schemes B, C skip it
    student_initialized: bool = False  # scheme C: the caller loaded the fp32 weights already


@dataclass
class SchemeResult:
    """What a scheme produced; ``teacher_trained`` is False for the baseline."""

    history: list[EpochMetrics]
    teacher_trained: bool


Scheme = Callable[[SchemeInputs], SchemeResult]
SCHEMES: Registry[Scheme] = Registry("distillation scheme")


def _loss_terms(loss) -> dict[str, float]:
    return {
        "H(y,p_T)": loss.teacher_hard.detach().item(),
        "H(y,p_S)": loss.student_hard.detach().item(),
        "H(z_T,p_S)": loss.soft.detach().item(),
    }


def distill_phase(teacher: nn.Module, student: nn.Module, inputs: SchemeInputs) -> Phase:
    """The student learns from labels and the frozen teacher's soft targets."""
    context, d = inputs.context, inputs.distill
    targets = TeacherTargets(teacher, context.train, context.augmentation)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, index: torch.Tensor | None):
        teacher_logits = targets(xb, index)
        loss = apprentice_loss(student(xb), teacher_logits, yb, d.alpha, d.beta, d.gamma, d.tau)
        # The alpha term is constant here (frozen teacher): logged, not optimized.
        return loss.total, _loss_terms(loss)

    return Phase("student", {"student": student}, ("student",), loss_fn, inputs.student_spec)


def train_teacher(inputs: SchemeInputs) -> list[EpochMetrics]:
    """The teacher's own training, or nothing when it came trained (``--teacher``)."""
    if inputs.teacher_pretrained:
        return []
    phase = cross_entropy_phase("teacher", inputs.teacher, inputs.teacher_spec)
    return run_phase(phase, inputs.context)


def _key_mismatch(student: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` cannot initialise ``student`` by name, or None when every key fits.

    The student may have extra keys (quantizer scales) but must not lack any fp32 key: a
    missing weight would silently stay random.
    """
    expected = set(student.state_dict())
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        return "unexpected keys " + ", ".join(unexpected[:5])
    missing = [key for key in expected if key not in state and "quant" not in key]
    if missing:
        return "it lacks student parameters " + ", ".join(missing[:5])
    return None


def load_fp32_into_student(student: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy fp32 weights into a Brevitas student by name (shapes must match too)."""
    why = _key_mismatch(student, state)
    if why is None:
        try:
            student.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # size mismatches
            why = summarize(exc, 200)
    if why is not None:
        raise UserError(f"the fp32 weights do not fit the student: {why}")


def read_checkpoint(path: Path, what: str, fix: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors from ``path``, loaded without running code; ``what`` names it
    in the one-line errors (``student_init checkpoint``), ``fix`` ends them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise UserError(f"{what} {path} does not exist") from exc
    except Exception as exc:  # damaged file, or a pickle weights_only refuses to run
        first = summarize(exc)
        raise UserError(f"cannot read {what} {path} ({first}); {fix}") from exc
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise UserError(f"{what} {path} is not a state dict of tensors; {fix}")
    return state


def read_student_init(path: Path) -> dict[str, torch.Tensor]:
    """A ``student_init`` checkpoint: a state dict of tensors, loaded without running code."""
    fix = "give [distill] student_init a state dict saved with torch.save(model.state_dict())"
    return read_checkpoint(path, "student_init checkpoint", fix)


TEACHER_FIX = (
    "give --teacher (or [teacher] checkpoint) an fp32 state dict of the recipe's teacher, saved "
    "with torch.save(model.state_dict()) (torchvision's for ResNet-18/34/50, or a build's "
    "teacher.pt)"
)
# The schemes that start from a trained teacher (``finetune`` may take its fp32 weights).
TEACHER_SCHEMES = ("B", "C", "finetune")
FP32_START_SCHEMES = ("C", "finetune")  # the schemes whose student starts from fp32 weights


def read_teacher(path: Path) -> dict[str, torch.Tensor]:
    """A trained teacher's state dict (``--teacher``)."""
    return read_checkpoint(path, "teacher checkpoint", TEACHER_FIX)


def check_teacher_checkpoint(recipe) -> None:
    """Before any training: a ``--teacher`` goes with scheme B or C, loads, and holds exactly
    the teacher's parameter names (shapes, which depend on the data, are checked when it is
    loaded: ``load_teacher``)."""
    from apprentice_hw.models import build_model
    from apprentice_hw.quant import FloatLayers

    scheme = recipe.distill.scheme
    if scheme not in TEACHER_SCHEMES:
        raise UserError(
            f"a trained teacher (--teacher, [teacher] checkpoint) is for schemes B, C and "
            f"finetune; scheme "
            f"{scheme} {'trains the teacher with the student' if scheme == 'A' else 'has none'}"
        )
    state = read_teacher(Path(recipe.teacher_checkpoint))
    teacher = build_model(recipe.teacher, FloatLayers(), in_channels=3, num_classes=10)
    expected = set(teacher.state_dict())
    unexpected = sorted(set(state) - expected)
    missing = sorted(expected - set(state))
    if unexpected or missing:
        what = ("unexpected keys " + ", ".join(unexpected[:3])) if unexpected else (
            "it lacks " + ", ".join(missing[:3]))  # fmt: skip
        raise UserError(f"teacher checkpoint {recipe.teacher_checkpoint} does not fit the "
                        f"teacher {recipe.teacher.name}: {what}")  # fmt: skip


def load_teacher(teacher: nn.Module, recipe) -> None:
    """The recipe's trained teacher into ``teacher`` (names and shapes must match exactly)."""
    state = read_teacher(Path(recipe.teacher_checkpoint))
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:  # size mismatches: another class count or input channels
        raise UserError(
            f"teacher checkpoint {recipe.teacher_checkpoint} does not fit the teacher "
            f"{recipe.teacher.name} for {recipe.dataset} ({summarize(exc, 160)})"
        ) from exc


def check_student_init(recipe) -> None:
    """Before any training: the recipe's ``student_init`` loads and its names fit the student.

    Shapes depend on the data (input channels, classes); scheme C checks them when it starts,
    before the teacher trains.
    """
    from apprentice_hw.models import build_model
    from apprentice_hw.quant import QuantLayers

    if recipe.distill.scheme not in FP32_START_SCHEMES:
        raise UserError(
            f"student_init (--student-init) is for schemes C and finetune; scheme "
            f"{recipe.distill.scheme} starts the student from random weights"
        )
    state = read_student_init(Path(recipe.distill.student_init))
    student = build_model(
        recipe.student, QuantLayers.for_recipe(recipe), in_channels=3, num_classes=10
    )
    why = _key_mismatch(student, state)
    if why is not None:
        raise UserError(f"student_init {recipe.distill.student_init} does not fit the student "
                        f"{recipe.student.name}: {why}")  # fmt: skip


def _fp32_student_weights(
    inputs: SchemeInputs,
) -> tuple[dict[str, torch.Tensor], list[EpochMetrics]]:
    """The teacher's weights when it is the student's architecture, else a trained fp32 twin's
    (with the twin's epochs, which the training log keeps too)."""
    if inputs.same_architecture:
        return inputs.teacher.state_dict(), []
    twin = inputs.build_fp32_student()
    phase = cross_entropy_phase("fp32-student", twin, inputs.teacher_spec)
    history = run_phase(phase, inputs.context)
    return twin.state_dict(), history


@SCHEMES.register("none")
def scheme_none(inputs: SchemeInputs) -> SchemeResult:
    """No distillation: the student alone with cross-entropy (the baseline)."""
    phase = cross_entropy_phase("student", inputs.student, inputs.student_spec)
    return SchemeResult(run_phase(phase, inputs.context), teacher_trained=False)


def joint_phase(inputs: SchemeInputs) -> Phase:
    """Scheme A's phase: both networks learn, the teacher from the labels only."""
    teacher, student, d = inputs.teacher, inputs.student, inputs.distill

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, index: torch.Tensor | None):
        loss = apprentice_loss(student(xb), teacher(xb), yb, d.alpha, d.beta, d.gamma, d.tau)
        return loss.total, _loss_terms(loss)

    return Phase(
        "joint", {"teacher": teacher, "student": student}, ("teacher", "student"), loss_fn,
        inputs.student_spec,
    )  # fmt: skip


@SCHEMES.register("A")
def scheme_a(inputs: SchemeInputs) -> SchemeResult:
    """Scheme A: teacher and student trained jointly from scratch."""
    history = run_phase(joint_phase(inputs), inputs.context)
    return SchemeResult(history, teacher_trained=True)


@SCHEMES.register("B")
def scheme_b(inputs: SchemeInputs) -> SchemeResult:
    """Scheme B: frozen trained teacher, student from random initialization."""
    history = train_teacher(inputs)
    history += run_phase(distill_phase(inputs.teacher, inputs.student, inputs), inputs.context)
    return SchemeResult(history, teacher_trained=True)


def _start_from_fp32(inputs: SchemeInputs, needs_teacher: bool) -> tuple[list[EpochMetrics], bool]:
    """Load the student's trained fp32 starting weights; train the teacher first when the
    scheme distils from it (``needs_teacher``) or the weights are the teacher's own.

    Returns the epochs run and whether the teacher was trained (or came trained).
    """
    initialized = inputs.student_initialized
    if not initialized and inputs.distill.student_init:  # first: a misfit fails before training
        load_fp32_into_student(inputs.student, read_student_init(Path(inputs.distill.student_init)))
        initialized = True
    teacher_used = needs_teacher or (not initialized and inputs.same_architecture)
    history = train_teacher(inputs) if teacher_used else []
    if not initialized:
        weights, twin_history = _fp32_student_weights(inputs)
        load_fp32_into_student(inputs.student, weights)
        history += twin_history
    return history, teacher_used


@SCHEMES.register("C")
def scheme_c(inputs: SchemeInputs) -> SchemeResult:
    """Scheme C: student initialized from trained fp32 weights, fine-tuned with distillation."""
    history, _ = _start_from_fp32(inputs, needs_teacher=True)
    history += run_phase(distill_phase(inputs.teacher, inputs.student, inputs), inputs.context)
    return SchemeResult(history, teacher_trained=True)


@SCHEMES.register("finetune")
def scheme_finetune(inputs: SchemeInputs) -> SchemeResult:
    """Scheme C without the teacher: fp32 start, fine-tuned with cross-entropy alone."""
    history, teacher_trained = _start_from_fp32(inputs, needs_teacher=False)
    phase = cross_entropy_phase("student", inputs.student, inputs.student_spec)
    return SchemeResult(history + run_phase(phase, inputs.context), teacher_trained)


def run_scheme(name: str, inputs: SchemeInputs) -> SchemeResult:
    """Run the registered scheme ``name``."""
    return SCHEMES.get(name)(inputs)
