"""Knowledge distillation: the Apprentice loss, the trainer and the registered schemes."""

from apprentice_hw.distill.loss import ApprenticeLoss, apprentice_loss
from apprentice_hw.distill.schemes import SCHEMES, run_scheme
from apprentice_hw.distill.trainer import EpochMetrics, evaluate, train_teacher

__all__ = [
    "SCHEMES",
    "ApprenticeLoss",
    "EpochMetrics",
    "apprentice_loss",
    "evaluate",
    "run_scheme",
    "train_teacher",
]
