"""`make_task`: a task by name, with its parameters checked."""

from __future__ import annotations

import inspect
from typing import Any

from .adding import AddingTask
from .base import DataError, Task
from .copy_task import CopyTask
from .forecast import ForecastTask
from .mystery import MysteryTask
from .reber import ReberTask
from .temporal_order import TemporalOrderTask
from .text import TextTask

TASKS: dict[str, type[Task]] = {
    "adding": AddingTask,
    "copy": CopyTask,
    "temporal-order": TemporalOrderTask,
    "reber": ReberTask,
    "mystery": MysteryTask,
    "text": TextTask,
    "csv": ForecastTask,
}
TASK_NAMES = ("adding", "copy", "temporal-order", "reber", "mystery", "text", "csv")


def task_params(name: str) -> dict[str, Any]:
    """The parameters of task `name` and their defaults (seed excluded)."""
    sig = inspect.signature(_task_class(name).__init__)
    return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "seed")}


def _task_class(name: Any) -> type[Task]:
    key = name.replace("_", "-") if isinstance(name, str) else name
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}")
    return TASKS[key]


def make_task(name: str, *, seed: int = 0, **params: Any) -> Task:
    """The task `name` ("adding", "copy", "temporal-order", "reber", "mystery", "text", "csv").

    `seed` fixes the validation and test sets (training batches come from the caller's generator);
    `params` are the task's own (see each task class). `make_task(**task.config())` rebuilds a task
    with the same data. Unknown names or parameters and bad values raise DataError.
    """
    cls = _task_class(name)
    valid = task_params(name)
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise DataError(f"{cls.name}: unknown parameter {unknown[0]!r}; valid parameters: {', '.join(valid)}")
    return cls(seed, **params)
