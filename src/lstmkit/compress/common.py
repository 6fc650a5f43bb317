"""What every compression method shares: reading the source run, writing the new run folder, and a
small fine-tuning loop.

A compressed run is an ordinary run folder (config.json, model.safetensors, vocab.json /
normaliser.json, result.json) so that evaluate, sample, explore and export accept it; config.json
gains a ``"compress"`` object: ``{"method": ..., "source": <source run folder>, <the method's
settings>, "previous": <the source's own "compress", if any>}``. Methods whose weights are not
plain float tensors (quantize: int8 codes and scales; lowrank: factors) are rebuilt when the run
loads (:func:`lstmkit.train.load_run`, through :mod:`lstmkit.train.weights`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..data import Batch, Task
from ..errors import InputError
from ..models import ModelConfig, SequenceModel
from ..train import Run, load_run, runfolder
from ..train.evaluate import evaluate_model

LossFn = Callable[[nn.Module, Batch], Tensor]


def as_run(run: Any) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        return load_run(run)
    raise TypeError(f"compress: expected a run folder or a Run, got {type(run).__name__}")


def check_out(src: Run, out: str | Path) -> Path:
    out = Path(out)
    if out.resolve() == src.path.resolve():
        raise InputError(f"compress: --out {out} is the source run; give a new folder for the compressed run")
    if out.exists() and not out.is_dir():
        raise InputError(f"compress: {out} exists and is not a folder; give a new folder with --out")
    if (out / "config.json").exists():
        raise InputError(f"compress: {out} already holds a run; choose another --out")
    return out


def compress_info(src: Run) -> dict[str, Any] | None:
    c = src.config.get("compress")
    return c if isinstance(c, dict) else None


def float_lstm_source(run: Any, method: str, verb: str) -> Run:
    """The run to ``verb`` (prune, factorise): an LSTM run with float weights, else a one-line error."""
    src = as_run(run)
    prev = compress_info(src)
    if prev is not None and prev.get("method") == "quantize":
        raise InputError(f"{method}: {src.path} is quantized; {verb} its source run {prev.get('source')} first")
    if src.model_config.arch != "lstm":
        raise InputError(f"{method}: needs an LSTM run, {src.path} has arch {src.model_config.arch!r}")
    return src


def write_run(
    src: Run,
    out: Path,
    model_cfg: ModelConfig,
    tensors: dict[str, Tensor],
    info: dict[str, Any],
    model: SequenceModel,
    evaluate: bool = True,
    extra_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the compressed run folder; ``model`` is the float model it loads as (for result.json)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(src.config)
    cfg["model"] = model_cfg.to_dict()
    cfg["lstmkit_version"] = __version__
    full = {"method": info["method"], "source": str(src.path), **{k: v for k, v in info.items() if k != "method"}}
    prev = compress_info(src)
    if prev is not None:
        full["previous"] = prev
    cfg["compress"] = full
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    runfolder.save_tensors(
        out / "model.safetensors", tensors, metadata={"lstmkit_version": __version__, "compress": info["method"]}
    )
    runfolder.write_data_files(out, src.vocab, src.normaliser)
    runfolder.write_config(out, cfg)  # last: a folder without it is not a run
    result: dict[str, Any] = {"compress": full, **(extra_result or {})}
    if evaluate:
        result["val"] = evaluate_model(model, src.task, "val", 256)
        result["test"] = evaluate_model(model, src.task, "test", 256)
    runfolder.write_result(out, result)
    return result


def count_params(model: nn.Module) -> int:
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def finetune(
    model: SequenceModel,
    task: Task,
    *,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    clip: float = 1.0,
    eval_every: int = 50,
    loss_fn: LossFn | None = None,
    after_step: Callable[[int], None] | None = None,
    select_from: int = 0,
    params: list[nn.Parameter] | None = None,
    max_time: float | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place for ``steps`` steps (AdamW, gradient clipping, the task's own batches
    and loss unless ``loss_fn``), evaluating every ``eval_every`` steps; at the end the model holds the
    best weights on validation among evaluations at step >= ``select_from`` (and the last step).
    ``after_step(step)`` runs after every optimizer step (pruning masks, schedules)."""
    if steps < 0:
        raise InputError(f"compress: fine-tuning steps must be >= 0, got {steps}")
    higher = task.higher_is_better
    metric = task.main_metric
    history: list[dict[str, Any]] = []
    if steps == 0:
        return {"steps": 0, "history": history}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(params if params is not None else list(model.parameters()), lr=lr, weight_decay=0.0)
    best: float | None = None
    best_state: dict[str, Tensor] | None = None
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        model.train()
        batch = task.train_batch(batch_size, rng)
        loss = loss_fn(model, batch) if loss_fn is not None else task.loss(model(batch.x, batch.lengths), batch)
        if not math.isfinite(loss.item()):
            raise InputError(f"compress: fine-tuning diverged at step {step + 1} (loss {loss.item()}); try a lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        step += 1
        if after_step is not None:
            with torch.no_grad():
                after_step(step)
        out_of_time = max_time is not None and time.perf_counter() - t0 >= max_time
        if step % eval_every == 0 or step == steps or out_of_time:
            val = evaluate_model(model, task, "val", 256)
            history.append({"step": step, "loss": loss.item(), **val})
            score = val[metric]
            if step >= select_from and (best is None or (score > best if higher else score < best)):
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if out_of_time:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"steps": step, "history": history, "best_val": best}


__all__ = ["as_run", "check_out", "compress_info", "count_params", "finetune", "write_run"]
