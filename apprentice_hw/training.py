"""The training stage shared by ``apprentice-hw train`` and ``build``.

It builds the fp32 teacher and the Brevitas student from a recipe, runs the recipe's
distillation scheme with per-epoch checkpoints in ``<out>/checkpoints``, and writes
``teacher.pt``, ``student.pt``, ``train_log.jsonl`` and its plot ``train_curve.png``. ``resume``
continues from those checkpoints; the recipe is stored beside them and a resume with a
different recipe is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from apprentice_hw.atomic import atomic_path, write_json, write_text
from apprentice_hw.config import DistillSpec, Recipe, TrainSpec
from apprentice_hw.data import DatasetSplits
from apprentice_hw.distill import EpochMetrics, SchemeInputs, TrainContext, distributed, run_scheme
from apprentice_hw.distill.schemes import (
    FP32_START_SCHEMES,
    SCHEMES,
    load_fp32_into_student,
    load_teacher,
)
from apprentice_hw.distill.trainer import Batches
from apprentice_hw.errors import UserError
from apprentice_hw.models import build_model
from apprentice_hw.outputs import CHECKPOINTS, RECIPE_RECORD
from apprentice_hw.progress import Progress
from apprentice_hw.quant import FloatLayers, QuantLayers


@dataclass
class TrainedModels:
    """The networks a scheme produced, in eval mode, and the per-epoch history."""

    teacher: nn.Module
    student: nn.Module
    teacher_trained: bool
    history: list[EpochMetrics]


def quant_layers(recipe: Recipe) -> QuantLayers:
    """The student's layer factory; unknown bit widths or families raise a UserError."""
    return QuantLayers.for_recipe(recipe)


def _for_this_world(model: nn.Module) -> nn.Module:
    """Data-parallel runs need BatchNorm statistics over the global batch."""
    return distributed.convert_batchnorm(model) if distributed.current().size > 1 else model


def build_teacher(recipe: Recipe, data: DatasetSplits) -> nn.Module:
    torch.manual_seed(recipe.seed)
    teacher = build_model(recipe.teacher, FloatLayers(), data.input_shape[0], data.num_classes)
    return _for_this_world(teacher)


def build_student(recipe: Recipe, data: DatasetSplits, fp32: bool = False) -> nn.Module:
    """The student (or, with ``fp32``, its full-precision twin), seeded independently."""
    torch.manual_seed(recipe.seed + 1)
    layers = FloatLayers() if fp32 else quant_layers(recipe)
    return _for_this_world(
        build_model(recipe.student, layers, data.input_shape[0], data.num_classes)
    )


def _check_resume(out: Path, recipe: Recipe, resume: bool) -> None:
    record = out / RECIPE_RECORD
    current = recipe.to_dict()
    current.pop("source", None)
    if record.exists() and resume:
        stored = json.loads(record.read_text())
        stored.pop("source", None)
        if stored != current:
            changed = sorted(k for k in current if stored.get(k) != current[k])
            raise UserError(
                f"{out} was trained with a different recipe (differs in: {', '.join(changed)}); "
                "resume with the same options or choose another --out"
            )
    distributed.barrier()  # every rank has compared before the main rank rewrites the record
    if distributed.current().is_main:
        write_json(record, current)


def train_models(
    recipe: Recipe, data: DatasetSplits, out: Path, progress: Progress, resume: bool = False
) -> TrainedModels:
    """Run the recipe's scheme, checkpointing into ``out``; write the trained weights there."""
    # The recipe fixes the thread count: 1 and 2 threads give different float results.
    torch.set_num_threads(recipe.threads)
    teacher = build_teacher(recipe, data)
    if recipe.teacher_checkpoint:  # before --out is touched: a teacher that does not fit
        load_teacher(teacher, recipe)
        progress.message(f"    teacher: trained weights from {recipe.teacher_checkpoint}")
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, recipe, resume)
    student = build_student(recipe, data)
    context = TrainContext(
        train=(data.train_x, data.train_y),
        test=(data.test_x, data.test_y),
        augmentation=data.augmentation if recipe.augment else "none",
        seed=recipe.seed,
        progress=progress,
        checkpoint_dir=out / CHECKPOINTS,
        resume=resume,
    )
    (out / CHECKPOINTS).mkdir(exist_ok=True)
    is_main = distributed.current().is_main
    inputs = SchemeInputs(
        teacher=teacher,
        student=student,
        teacher_spec=recipe.teacher_train,
        student_spec=recipe.student_train,
        distill=recipe.distill,
        context=context,
        same_architecture=recipe.teacher == recipe.student,
        build_fp32_student=lambda: build_student(recipe, data, fp32=True),
        teacher_pretrained=bool(recipe.teacher_checkpoint),
    )
    result = run_scheme(recipe.distill.scheme, inputs)
    if is_main:
        _write_results(out, teacher, student, result, recipe.name)
    distributed.barrier()
    return TrainedModels(teacher.eval(), student.eval(), result.teacher_trained, result.history)


def distill_networks(
    teacher: nn.Module,
    student: nn.Module,
    train: Batches,
    test: Batches,
    *,
    distill: DistillSpec,
    teacher_spec: TrainSpec,
    student_spec: TrainSpec,
    student_init: dict[str, torch.Tensor] | None = None,
    teacher_trained: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> TrainedModels:
    """Run ``distill.scheme`` on your own networks and data (tensors or DataLoaders).

    The student is any ``nn.Module`` built from Brevitas layers (``QuantLayers`` makes them);
    ``teacher_trained`` skips the teacher's own training (schemes B and C); schemes C and
    finetune start the student from ``student_init``, fp32 weights under the student's
    parameter names (a trained fp32 twin's ``state_dict()``), or from the teacher's when both
    share names.
    Nothing is written to disk: the networks are trained in place and returned in eval mode.
    """
    progress = progress or Progress(quiet=True)
    SCHEMES.get(distill.scheme)
    fp32_start = distill.scheme in FP32_START_SCHEMES
    if fp32_start and student_init is not None:
        load_fp32_into_student(student, student_init)
    same_names = set(teacher.state_dict()) == set(student.state_dict())
    if fp32_start and student_init is None and not same_names:
        raise UserError(
            f"scheme {distill.scheme} starts the student from fp32 weights of its own "
            "architecture: pass "
            "student_init (a trained fp32 twin's state_dict()), or a teacher with the same "
            "parameter names"
        )
    context = TrainContext(train=train, test=test, augmentation="none", seed=seed,
                           progress=progress)  # fmt: skip
    inputs = SchemeInputs(
        teacher=teacher, student=student, teacher_spec=teacher_spec, student_spec=student_spec,
        distill=distill, context=context, same_architecture=same_names,
        build_fp32_student=lambda: teacher, teacher_pretrained=teacher_trained,
        student_initialized=student_init is not None,
    )  # fmt: skip
    result = run_scheme(distill.scheme, inputs)
    return TrainedModels(teacher.eval(), student.eval(), result.teacher_trained, result.history)


def _write_results(
    out: Path, teacher: nn.Module, student: nn.Module, result, recipe_name: str
) -> None:
    if result.teacher_trained:
        with atomic_path(out / "teacher.pt") as tmp:
            torch.save(teacher.state_dict(), tmp)
    with atomic_path(out / "student.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    write_text(
        out / "train_log.jsonl", "".join(json.dumps(m.to_dict()) + "\n" for m in result.history)
    )
    write_training_curve(out, result.history, recipe_name)


def write_training_curve(out: Path, history: list[EpochMetrics], recipe_name: str) -> None:
    """``train_curve.png`` beside ``train_log.jsonl``, titled as the build report draws it
    (nothing when no epoch ran: a pretrained teacher with a resumed, finished student)."""
    from apprentice_hw.report.train_curve import CURVE_FILE, curve_title, plot_training_curve

    if history:
        plot_training_curve(history, curve_title(recipe_name), out / CURVE_FILE)
