"""Knowledge distillation: the Apprentice loss, the trainer and the registered schemes."""

from apprentice_hw.distill.loss import ApprenticeLoss, apprentice_loss
from apprentice_hw.distill.schemes import SCHEMES, SchemeInputs, SchemeResult, run_scheme
from apprentice_hw.distill.trainer import (
    SCHEDULES,
    EpochMetrics,
    TrainContext,
    evaluate,
    predict,
    topk_accuracy,
)

__all__ = [
    "SCHEDULES",
    "SCHEMES",
    "ApprenticeLoss",
    "EpochMetrics",
    "SchemeInputs",
    "SchemeResult",
    "TrainContext",
    "apprentice_loss",
    "evaluate",
    "predict",
    "run_scheme",
    "topk_accuracy",
]
