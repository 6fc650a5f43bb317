"""Training: the loop, run folders, checkpoints, metrics, plots, sampling."""

from .checkpoint import RunError
from .loop import TrainConfig, TrainingStopped, TrainResult, resume, train
from .run import Run, load_run

__all__ = ["RunError", "Run", "TrainConfig", "TrainResult", "TrainingStopped", "load_run", "resume", "train"]
