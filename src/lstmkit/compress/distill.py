"""Distillation: a smaller student LSTM trained on a teacher run's soft targets, on the same task.

For classification targets (Hinton et al. 2015) the loss is

    α · τ² · KL(softmax(z_teacher / τ) ‖ softmax(z_student / τ)) + (1 − α) · task loss

(the τ² keeps the gradient scale of the soft term independent of τ); for multi-label targets the
soft term is the binary cross-entropy to the teacher's sigmoids, for regression the squared error
to the teacher's predictions. The teacher's outputs are computed on each training batch (it runs in
evaluation mode, without gradients). Padded steps do not count (the task's mask).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Batch
from ..errors import InputError
from ..models import SequenceModel
from .common import as_run, check_out, count_params, finetune, write_run


def soft_loss(student: Tensor, teacher: Tensor, target: str, tau: float, mask: Tensor | None) -> Tensor:
    """The soft term (see the module docstring), averaged over samples (and valid steps)."""
    if target in ("class_last", "class_steps"):
        per = (
            F.kl_div(
                F.log_softmax(student / tau, dim=-1),
                F.log_softmax(teacher / tau, dim=-1),
                reduction="none",
                log_target=True,
            ).sum(-1)
            * tau**2
        )
    elif target == "multilabel_steps":
        per = F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher), reduction="none").mean(-1)
    else:
        per = ((student - teacher) ** 2).mean(-1)
    if mask is not None and per.dim() == 2:
        m = mask.to(per.dtype)
        return (per * m).sum() / m.sum().clamp(min=1)
    return per.mean()


def distill_run(
    run: Any,
    out: str | Path,
    *,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    steps: int = 500,
    alpha: float = 0.7,
    temperature: float = 2.0,
    lr: float = 3e-3,
    batch_size: int | None = None,
    seed: int = 0,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Train a student (default: half the teacher's hidden units) on ``run``'s soft targets into ``out``."""
    teacher_run = as_run(run)
    out = check_out(teacher_run, out)
    tcfg = teacher_run.model_config
    H = hidden_size if hidden_size is not None else max(1, tcfg.hidden_size // 2)
    if isinstance(H, bool) or not isinstance(H, int) or H < 1:
        raise InputError(f"distill: --hidden-size must be a positive int, got {H!r}")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"distill: alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise InputError(f"distill: temperature must be > 0, got {temperature}")
    if steps < 1:
        raise InputError(f"distill: steps must be >= 1 (the student starts untrained), got {steps}")
    changes: dict[str, Any] = {"hidden_size": H, "num_layers": num_layers or tcfg.num_layers}
    if tcfg.tie_weights:
        changes["embedding_size"] = H
    scfg = dataclasses.replace(tcfg, **changes)
    torch.manual_seed(seed)
    student = SequenceModel(scfg)
    teacher = teacher_run.model.eval()
    task = teacher_run.task

    def loss_fn(model: nn.Module, batch: Batch) -> Tensor:
        with torch.no_grad():
            t_out = teacher(batch.x, batch.lengths)
        s_out = model(batch.x, batch.lengths)
        hard = task.loss(s_out, batch)
        return alpha * soft_loss(s_out, t_out, scfg.target, temperature, batch.mask) + (1 - alpha) * hard

    info = finetune(
        student,
        task,
        steps=steps,
        lr=lr,
        batch_size=batch_size or teacher_run.train_config.batch_size,
        seed=seed,
        loss_fn=loss_fn,
    )
    tensors = {k: v.detach().clone() for k, v in student.state_dict().items()}
    settings = {
        "method": "distill",
        "hidden_size": H,
        "num_layers": scfg.num_layers,
        "steps": steps,
        "alpha": alpha,
        "temperature": temperature,
    }
    extra = {"params": count_params(student), "source_params": count_params(teacher), "finetune": info}
    return write_run(teacher_run, out, scfg, tensors, settings, student, evaluate, extra)


__all__ = ["distill_run", "soft_loss"]
