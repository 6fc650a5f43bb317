"""The training loop: AdamW, gradient clipping, a learning-rate schedule, early stopping on the
validation metric, progress, metrics.jsonl, plots, crash-safe checkpoints with exact resume, and
data-parallel training under torchrun.

    from lstmkit.train import TrainConfig, train
    result = train(TrainConfig(task="mystery", task_params={"T": 100}, max_steps=2000), out="runs/m")

Determinism: with the same config (and seed) and the same number of threads, two runs give the same
weights bit for bit, and a run killed at any moment and resumed gives the same weights as one that
was never interrupted (the data generator, torch's RNG, the optimizer, the schedule and the early-
stopping state all live in the checkpoint; a stateful run's carried state too: its window position
is the step count).

Stateful training (``TrainConfig.stateful``, text): truncated BPTT over consecutive windows per batch
row (:meth:`lstmkit.data.text.TextTask.stream_batch`), the state detached between steps and reset at
each pass over the text; its validations add the state-carried metrics (``nats_carried``…,
:func:`~lstmkit.train.evaluate.evaluate_carried`). Every text run's final val and test results have
them beside the windowed ones.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import make_task
from ..errors import InputError
from ..models import build_model
from ..outdir import check_out_folder
from . import runfolder
from .checkpoint import last_checkpoint_step, load_checkpoint, restore_checkpoint, save_checkpoint
from .config import TrainConfig, model_config_for
from .evaluate import evaluate_carried, evaluate_model, supports_carried
from .progress import Progress, fmt_time
from .runfolder import RunError

__all__ = ["RunFinished", "TrainResult", "TrainingStopped", "resume", "stop_text", "train"]


class TrainingStopped(RuntimeError):
    """Training could not go on (a NaN or inf loss); the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_step: int
    val: dict[str, float]
    test: dict[str, float]
    baseline: dict[str, float]
    stopped_because: str  # "max_steps", "max_time", "reached target ...", "no improvement in ..."
    elapsed: float
    stopped_text: str = ""  # the same in words, with the budget: the last line the CLI prints


# ----------------------------------------------------------------------------- helpers


def _lr_lambda(cfg: TrainConfig, spent_time: list[float]) -> Any:
    """The learning-rate factor at a step: linear warm-up, then constant or cosine from 1 to 0.05 over
    the budget. ``spent_time[0]`` is the share of the time budget used (the loop sets it before each
    scheduler step), so that a time budget alone also has an end to decay towards."""

    def f(step: int) -> float:
        w = 1.0 if cfg.warmup <= 0 else min(1.0, (step + 1) / cfg.warmup)
        if cfg.schedule == "cosine":
            progress = step / cfg.max_steps if cfg.max_steps else 0.0
            progress = min(1.0, max(progress, spent_time[0]))
            return w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        return w

    return f


def _init_from(model: nn.Module, src: Path) -> None:
    """Fill a new run's ``model`` with the weights of the run folder ``src`` (TrainConfig.init_from)."""
    if not (src / "model.safetensors").is_file() or not (src / "config.json").is_file():
        raise InputError(
            f"--init-from {src}: not a run folder (no model.safetensors and config.json); give a trained run's folder"
        )
    saved = runfolder.read_json(src / "config.json", "the run's config")
    try:
        runfolder.load_weights(model, src / "model.safetensors", saved)  # type: ignore[arg-type]
    except RunError as e:
        raise InputError(
            f"--init-from {src}: the run's model differs from this one ({e}); use the same model options"
        ) from None


def _better(a: float, b: float | None, higher: bool) -> bool:
    if b is None:
        return True
    return a > b if higher else a < b


def _reached(value: float, target: float | None, higher: bool) -> bool:
    return target is not None and (value >= target if higher else value <= target)


def _spent(cfg: TrainConfig, step: int, elapsed: float) -> str | None:
    """The budget that is used up at ``step`` after ``elapsed`` training seconds, or None."""
    if cfg.max_steps is not None and step >= cfg.max_steps:
        return "max_steps"
    if cfg.max_time is not None and elapsed >= cfg.max_time:
        return "max_time"
    return None


def stop_text(stopped: str, steps: int, seconds: float, cfg: TrainConfig) -> str:
    """Why a run stopped, in words, naming the budget or rule and its option."""
    if stopped == "max_steps":
        took = f"{seconds:.1f} s" if seconds < 60 else fmt_time(seconds)
        return f"stopped by the step budget (--max-steps {cfg.max_steps}) after {took} of training"
    if stopped == "max_time":
        return f"stopped by the time budget (--max-time {cfg.max_time:g} s) after {steps} steps"
    if stopped.startswith("reached target"):
        return f"stopped early at step {steps}: {stopped} (--target-metric)"
    if stopped.startswith("no improvement"):
        return f"stopped early at step {steps}: {stopped} (--patience)"
    return f"stopped: {stopped}"


def _detach_state(state: Any) -> Any:
    """The recurrent state (a tensor, or a tuple (h, c)) cut from the graph, for truncated BPTT."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def _state_tensors(state: Any) -> dict[str, torch.Tensor]:
    """The carried state as named tensors for the checkpoint (none when there is no state)."""
    if state is None:
        return {}
    parts = [state] if isinstance(state, torch.Tensor) else list(state)
    return {f"carry.{i}": t for i, t in enumerate(parts)}


def _state_from(tensors: dict[str, torch.Tensor]) -> Any:
    """The carried state back from a checkpoint's tensors (None when it held none)."""
    parts = [tensors[f"carry.{i}"] for i in range(len(tensors)) if f"carry.{i}" in tensors]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _average_tensors(average: nn.Module | None) -> dict[str, torch.Tensor]:
    """The averaged weights (TrainConfig.ema) as named tensors for the checkpoint."""
    if average is None:
        return {}
    return {f"ema.{k}": v for k, v in average.state_dict().items()}


def _average_from(average: nn.Module, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """The averaged weights back from a checkpoint (one written without ema: the restored ``model``'s)."""
    got = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    average.load_state_dict(got if got else model.state_dict())


def _validate(model: nn.Module, task: Any, split: Any, cfg: TrainConfig, carried: bool) -> dict[str, float]:
    """The windowed metrics, plus the state-carried ones (``nats_carried``…) when ``carried`` and
    the task has them."""
    out = evaluate_model(model, task, split, cfg.eval_batch_size)
    if carried and supports_carried(task):
        out.update(evaluate_carried(model, task, split, rows=cfg.eval_batch_size))
    return out


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _flag_all(flag: bool, world: int) -> bool:
    """Any rank's flag (so every rank stops at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def _max_all(value: float, world: int) -> float:
    """The largest of the ranks' values (so that every rank's learning rate is the same)."""
    if world == 1:
        return value
    t = torch.tensor([value])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


# ----------------------------------------------------------------------------- the loop


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Any = None,
    force: bool = False,
    fresh_patience: bool = False,
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out`` (created), or continue it when ``resume``.

    ``fresh_patience`` (with ``resume``) counts the evaluations without improvement from 0 again:
    a run that stopped early and is given a larger budget trains on instead of stopping at its next
    evaluation.

    ``log`` is a callable taking one line of text (default: the progress stream). ``out`` must be new,
    empty or a run folder; ``force`` writes into a folder that holds other files.
    """
    run_dir = Path(out)
    world, rank = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    if world > 1 and cfg.batch_size % world:
        raise InputError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    is_main = rank == 0

    if not resume:  # never among a user's own files, unless force (lstmkit.outdir)
        check_out_folder(run_dir, "train", force=force)
    if not resume and (run_dir / "train_state.json").exists():
        raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")

    torch.manual_seed(cfg.seed)
    task = make_task(cfg.task, seed=cfg.seed, **cfg.task_params)
    if cfg.stateful:
        if not callable(getattr(task, "stream_batch", None)):
            raise InputError(
                f"stateful training needs a task with one long training text (text); the task {task.name!r} "
                "has independent sequences: pass --no-stateful"
            )
        if world > 1:
            raise InputError(
                "stateful training runs in one process (each row carries its own state); pass --no-stateful"
            )
        task.stream_windows(cfg.batch_size)  # type: ignore[attr-defined]  # checks that each row gets a window
    mcfg = model_config_for(cfg, task)
    model = build_model(mcfg)
    if cfg.init_from is not None and not resume:
        _init_from(model, Path(cfg.init_from))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # TrainConfig.ema: the averaged weights are the ones validated, saved and tested
    average = copy.deepcopy(model).requires_grad_(False) if cfg.ema else None
    scored = average if average is not None else model
    spent_time = [0.0]  # the share of the time budget used, for the cosine schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, spent_time))
    rng = np.random.default_rng(cfg.seed)
    step = 0
    best: float | None = None
    best_step = 0
    bad_evals = 0
    elapsed = 0.0
    carry: Any = None  # stateful training: the state carried from the previous window (detached)

    if resume:
        info, tensors = load_checkpoint(run_dir)
        step = restore_checkpoint(info, tensors, model, opt, sched, rng)
        if average is not None:
            _average_from(average, model, tensors)
        if cfg.stateful:
            carry = _state_from(tensors)
        best, best_step, bad_evals = info.get("best"), int(info.get("best_step", 0)), int(info.get("bad_evals", 0))
        if fresh_patience:
            bad_evals = 0
        elapsed = float(info.get("elapsed", 0.0))
        if is_main:
            runfolder.truncate_metrics(run_dir, step)
            runfolder.remove_stale_temp(run_dir)
    elif is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        runfolder.write_config(run_dir, runfolder.new_config(cfg, task, mcfg))
        runfolder.write_data_files(run_dir, task.vocab, task.normaliser)
        runfolder.start_metrics(run_dir)

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    if cfg.arch == "lstm" and next(model.parameters()).device.type == "cpu":
        from .. import kernels

        kernels.available()  # a first use builds the kernels (1-2 min): before the clock and the progress bar start
    bar = Progress(
        f"{task.name}/{cfg.arch}",
        cfg.max_steps,
        cfg.max_time,
        start_step=step,
        enabled=progress and is_main,
        log_every=cfg.log_every,
        elapsed=elapsed,
    )
    say = log if log is not None else bar.message
    if is_main and not resume:
        for line in task.describe():
            say(line)
    higher = task.higher_is_better
    metric = task.main_metric
    ckpt_every = cfg.checkpoint_every or cfg.eval_every
    t_start = time.perf_counter()
    pending: list[dict[str, Any]] = []
    last_loss = float("nan")

    def extra_state() -> dict[str, Any]:
        return {
            "best": best,
            "best_step": best_step,
            "bad_evals": bad_evals,
            "elapsed": elapsed + time.perf_counter() - t_start,
        }

    # a resumed run whose budget is used up (killed before its result was written) trains no step
    stopped = _spent(cfg, step, elapsed)
    while stopped is None:
        net.train()
        if cfg.stateful:
            batch = task.stream_batch(cfg.batch_size, step)  # type: ignore[attr-defined]
            if batch.meta["first"]:
                carry = None
            output, carry = net(batch.x, batch.lengths, carry, return_state=True)
            carry = _detach_state(carry)
        else:
            batch = task.train_batch(cfg.batch_size, rng)
            if world > 1:
                per = cfg.batch_size // world
                batch = batch.rows(rank * per, (rank + 1) * per)
            output = net(batch.x, batch.lengths)
        loss = task.loss(output, batch)
        if not bool(torch.isfinite(loss)):
            bar.close()
            raise TrainingStopped(
                f"training stopped at step {step + 1}: the loss became {loss.item()}; the last good checkpoint "
                f"(step {last_checkpoint_step(run_dir)}) is kept in {run_dir}; try a lower --lr or a smaller --clip"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_mode == "value":
            torch.nn.utils.clip_grad_value_(model.parameters(), cfg.clip)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)  # the norm after clipping, logged
        else:
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if average is not None:
            with torch.no_grad():
                for a, p in zip(average.parameters(), model.parameters()):
                    a.lerp_(p, 1.0 - cfg.ema)
        if cfg.max_time is not None and cfg.schedule == "cosine":
            spent_time[0] = _max_all((elapsed + time.perf_counter() - t_start) / cfg.max_time, world)
        sched.step()
        step += 1
        last_loss = float(loss.item())
        if step % cfg.log_every == 0:
            pending.append(
                {
                    "step": step,
                    "split": "train",
                    "loss": last_loss,
                    "grad_norm": float(gnorm),
                    "lr": sched.get_last_lr()[0],
                    "time": elapsed + time.perf_counter() - t_start,
                }
            )
        now = elapsed + time.perf_counter() - t_start
        bar.update(step, now, loss=last_loss)
        out_of_time = _flag_all(cfg.max_time is not None and now >= cfg.max_time, world)
        out_of_steps = cfg.max_steps is not None and step >= cfg.max_steps
        do_eval = step % cfg.eval_every == 0 or out_of_steps or out_of_time
        stop_now = out_of_steps or out_of_time
        if stop_now:
            stopped = "max_steps" if out_of_steps else "max_time"
        if do_eval:
            val = _validate(scored, task, "val", cfg, cfg.stateful)
            rec = {"step": step, "split": "val", **val, "time": elapsed + time.perf_counter() - t_start}
            pending.append(rec)
            score = val[metric]
            if _better(score, best, higher):
                best, best_step, bad_evals = score, step, 0
                if is_main:
                    runfolder.save_weights(run_dir, scored, step)
            else:
                bad_evals += 1
            say(f"step {step}: val {metric} {score:.4f} (best {best:.4f} at step {best_step})")
            if _reached(score, cfg.target, higher):
                stopped, stop_now = f"reached target {metric} {cfg.target}", True
            elif cfg.patience and bad_evals >= cfg.patience:
                stopped, stop_now = f"no improvement in {cfg.patience} evaluations", True
        if is_main and (do_eval or step % ckpt_every == 0):
            runfolder.append_metrics(run_dir, pending)
            pending = []
            kept = {**_state_tensors(carry), **_average_tensors(average)}
            save_checkpoint(run_dir, step, model, opt, sched, rng, extra_state(), kept)
        if stop_now:
            break
    assert stopped is not None
    bar.close(loss=last_loss)
    total = elapsed + time.perf_counter() - t_start
    if is_main:
        runfolder.append_metrics(run_dir, pending)
    # the test set is scored with the best weights on validation
    if (run_dir / "model.safetensors").exists():
        runfolder.load_weights(model, run_dir / "model.safetensors")
    # text also reports the state carried through each split beside the windowed figures
    val = _validate(model, task, "val", cfg, True)
    test = _validate(model, task, "test", cfg, True)
    if is_main:
        runfolder.append_metrics(run_dir, [{"step": best_step, "split": "test", **test}])
        runfolder.write_result(
            run_dir,
            {
                "steps": step,
                "best_step": best_step,
                "val": val,
                "test": test,
                "baseline": task.baseline(),
                "stopped_because": stopped,
                "stopped_text": stop_text(stopped, step, total, cfg),
                "train_seconds": total,
                "world_size": world,
                "per_process_batch": cfg.batch_size // world,
            },
        )
        try:
            from .plots import plot_run

            plot_run(run_dir)
        except Exception as e:  # plots are a convenience; never lose a finished run over them
            say(f"(plots not written: {e})")
    return TrainResult(
        run_dir, step, best_step, val, test, task.baseline(), stopped, total, stop_text(stopped, step, total, cfg)
    )


class RunFinished(InputError):
    """A finished run was resumed without a budget larger than what it already trained."""


def resume(
    run: str | Path,
    *,
    max_steps: int | None = None,
    max_time: float | None = None,
    task: str | None = None,
    progress: bool = True,
    log: Any = None,
) -> TrainResult:
    """Continue the run folder ``run`` from its last checkpoint to the same result as an
    uninterrupted run.

    A budget given here replaces the run's (``max_time`` alone: no step limit; both: whichever ends
    first); each counts the whole run (steps, training seconds), earlier parts included. A finished
    run, or a budget already used up, raises :class:`RunFinished` (nothing is trained). ``task``,
    when given, must be the run's task."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder (no such directory)")
    _, cfg = runfolder.read_config(run_dir)
    if task is not None and task != cfg.task:
        raise InputError(
            f"{run_dir} is a run of the task {cfg.task!r}, not {task!r}: "
            f"leave TASK out (lstmkit train --resume {run_dir}) or start a new run with another --out"
        )
    if not (run_dir / "train_state.json").exists():
        raise RunError(f"{run_dir}: has no checkpoint to resume from (train_state.json is missing)")
    new_budget = max_steps is not None or max_time is not None
    if new_budget:
        cfg = dataclasses.replace(cfg, max_steps=max_steps, max_time=max_time)
    state = runfolder.read_json(run_dir / "train_state.json", "the training state")
    done, secs = int(state.get("step", 0)), float(state.get("elapsed", 0.0))
    result = None
    if (run_dir / "result.json").exists():
        result = runfolder.read_json(run_dir / "result.json", "the run's result")
    finished = isinstance(result, dict) and result.get("steps") == done
    spent = _spent(cfg, done, secs)
    more = f"--max-steps {2 * done}" if cfg.max_time is None else f"--max-time {max(60, round(2 * secs))}"
    if spent and new_budget:
        total = "--max-steps counts all its steps" if spent == "max_steps" else "--max-time counts all its seconds"
        raise RunFinished(
            f"{run_dir} has already trained {done} steps in {fmt_time(secs)}, so the budget given is used up "
            f"({total}): give a larger one, e.g. lstmkit train --resume {run_dir} {more}"
        )
    early = isinstance(result, dict) and str(result.get("stopped_because", "")).startswith("no improvement")
    if finished and not new_budget:
        assert isinstance(result, dict)
        why = result.get("stopped_text") or f"stopped: {result.get('stopped_because')}"
        fresh = " (the evaluations without improvement are counted from 0 again)" if early else ""
        raise RunFinished(
            f"{run_dir} is finished ({why}); to train on, give a larger budget{fresh}: "
            f"lstmkit train --resume {run_dir} {more}"
        )
    # a run that stopped early and is given a larger budget trains on: its patience starts afresh
    return train(cfg, run_dir, resume=True, progress=progress, log=log, fresh_patience=finished and early)
