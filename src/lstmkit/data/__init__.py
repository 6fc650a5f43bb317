"""Tasks and their data: seeded generators and loaders with train / validation / test splits.

    task = make_task("mystery", seed=0, T=100, suspects=4, red_herrings=2)
    batch = task.train_batch(32, np.random.default_rng(0))       # Batch(x, y, mask, lengths, meta)
    loss = task.loss(model_output, batch)
    metrics = task.evaluate(lambda b: model(b), "val")           # {"accuracy": ..., ...}

Tasks: adding, copy, temporal-order, reber, mystery, text (character-level language modelling) and
csv (time-series forecasting). Nothing is loaded on import.
"""

from __future__ import annotations

from .adding import AddingTask
from .base import Batch, DataError, Task
from .copy_task import CopyTask
from .forecast import ForecastTask
from .mystery import MysteryTask
from .reber import ReberTask
from .registry import TASK_NAMES, make_task, task_params
from .temporal_order import TemporalOrderTask
from .text import TextTask

__all__ = [
    "TASK_NAMES",
    "AddingTask",
    "Batch",
    "CopyTask",
    "ForecastTask",
    "DataError",
    "MysteryTask",
    "ReberTask",
    "Task",
    "TemporalOrderTask",
    "TextTask",
    "make_task",
    "task_params",
]
