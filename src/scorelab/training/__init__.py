"""Model-agnostic training: the loop, EMA and checkpoints."""

from scorelab.training.checkpoint import read_checkpoint, save_checkpoint
from scorelab.training.ema import EMA
from scorelab.training.preemption import Preempted
from scorelab.training.trainer import Trainer, TrainingDiverged, TrainResult, lr_at

__all__ = [
    "EMA",
    "Preempted",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "lr_at",
    "read_checkpoint",
    "save_checkpoint",
]
