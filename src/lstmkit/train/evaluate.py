"""Scoring a model on a task's validation or test split (the task computes its own metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ..data import Batch, Task

__all__ = ["evaluate_model", "predictor"]


def predictor(model: nn.Module) -> Callable[[Batch], torch.Tensor]:
    """The model as the ``predict(batch)`` callable that :meth:`Task.evaluate` takes."""

    def predict(batch: Batch) -> torch.Tensor:
        return model(batch.x, batch.lengths)  # type: ignore[no-any-return]

    return predict


@torch.no_grad()
def evaluate_model(model: nn.Module, task: Task, split: Literal["val", "test"], batch_size: int) -> dict[str, float]:
    """The task's metrics of ``model`` (in eval mode, without gradients) on ``split``; the model's
    training mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        return task.evaluate(predictor(model), split, batch_size)
    finally:
        model.train(was)
