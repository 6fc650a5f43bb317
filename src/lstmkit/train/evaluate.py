"""Scoring a model on a task's validation or test split (the task computes its own metrics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ..data import Batch, Task
from ..errors import InputError

__all__ = ["carried_metric_name", "evaluate_carried", "evaluate_model", "predictor", "supports_carried"]


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


def supports_carried(task: Task) -> bool:
    """Whether ``task`` can be evaluated with the state carried through each split (text)."""
    return callable(getattr(task, "carried_eval_set", None))


def carried_metric_name(name: str) -> str:
    """The name a metric has in the carried-state evaluation: ``nats_per_char`` -> ``nats_carried``."""
    return name.replace("_per_char", "") + "_carried"


@torch.no_grad()
def evaluate_carried(
    model: nn.Module, task: Task, split: Literal["val", "test"], rows: int = 256, chunk: int = 200
) -> dict[str, float]:
    """The task's metrics of ``model`` on ``split`` read as ``rows`` long rows of consecutive text with
    the state carried through each whole row (``task.carried_eval_set``), ``chunk`` steps per forward
    call; named by :func:`carried_metric_name` (``nats_carried``, ``bits_carried``,
    ``accuracy_carried``). Every target is scored once, as in the windowed evaluation
    (:func:`evaluate_model`), but with all of its row's past: the two agree for a model that ignores
    its state. The model's training mode is restored afterwards."""
    if not supports_carried(task):
        raise InputError(f"{task.name}: carried-state evaluation needs a task with one long text per split (text)")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"evaluate_carried: chunk must be a positive int, got {chunk!r}")
    full: Batch = task.carried_eval_set(split, rows)  # type: ignore[attr-defined]
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    try:
        state = None
        for a in range(0, int(full.x.shape[1]), chunk):
            b = min(a + chunk, int(full.x.shape[1]))
            assert full.mask is not None
            part = Batch(x=full.x[:, a:b], y=full.y[:, a:b], mask=full.mask[:, a:b])
            out, state = model(part.x, None, state, return_state=True)
            for k, v in task._batch_sums(out.detach().float().cpu(), part).items():
                sums[k] = sums.get(k, 0.0) + float(v)
    finally:
        model.train(was)
    return {carried_metric_name(k): v for k, v in task._metrics(sums).items()}
