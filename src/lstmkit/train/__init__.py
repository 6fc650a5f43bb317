"""Training: the loop, run folders, checkpoints, metrics, plots, sampling.

- :mod:`.config`: TrainConfig, what a run asks for;
- :mod:`.loop`: the training loop (train, resume), distributed under torchrun;
- :mod:`.runfolder`: the run folder's files, read and written (load_run, Run, RunError, metrics);
- :mod:`.checkpoint`: train_state, for exact resume;
- :mod:`.weights`: stored tensors to a model's float weights (quantized, low-rank, plain);
- :mod:`.evaluate`, :mod:`.sample`, :mod:`.plots`, :mod:`.progress`.
"""

from .config import TrainConfig
from .loop import RunFinished, TrainingStopped, TrainResult, resume, train
from .runfolder import Run, RunError, load_run

__all__ = [
    "Run",
    "RunError",
    "RunFinished",
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "load_run",
    "resume",
    "train",
]
