"""The training loop: AdamW, gradient clipping, a learning-rate schedule, early stopping on the
validation metric, progress, metrics.jsonl, plots, crash-safe checkpoints with exact resume, and
data-parallel training under torchrun.

    from lstmkit.train import TrainConfig, train
    result = train(TrainConfig(task="mystery", task_params={"T": 100}, max_steps=2000), out="runs/m")

Determinism: with the same config (and seed) and the same number of threads, two runs give the same
weights bit for bit, and a run killed at any moment and resumed gives the same weights as one that
was never interrupted (the data generator, torch's RNG, the optimizer, the schedule and the early-
stopping state all live in the checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data import Batch, Task, make_task
from ..models import ModelConfig, SequenceModel, build_model
from .checkpoint import (
    STATE_VERSION,
    RunError,
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_json,
    save_tensors,
)
from .progress import Progress

CONFIG_FORMAT = 1


class TrainingStopped(RuntimeError):
    """Training could not go on (a NaN or inf loss); the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything a training run needs, saved as ``config.json`` in the run folder."""

    task: str = "mystery"
    task_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    # model
    arch: Literal["lstm", "gru", "rnn"] = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    embedding_size: int = 32
    dropout: float = 0.0
    tie_weights: bool = False
    proj_size: int = 0
    variants: dict[str, Any] = field(default_factory=dict)
    # optimisation
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup: int = 0
    max_steps: int = 2000
    max_time: float | None = None  # seconds of training (this run and earlier resumed parts together)
    # evaluation and checkpoints
    eval_every: int = 100
    eval_batch_size: int = 256
    patience: int = 20  # evaluations without improvement before stopping; 0 = never stop early
    target: float | None = None  # stop once the validation main metric reaches this
    checkpoint_every: int | None = None  # steps; default: at every evaluation
    log_every: int = 50

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"train config: {name} must be a positive int, got {v!r}")

        for n in (
            "hidden_size",
            "num_layers",
            "embedding_size",
            "batch_size",
            "max_steps",
            "eval_every",
            "eval_batch_size",
            "log_every",
        ):
            positive(n)
        for n in ("lr", "clip"):
            v = getattr(self, n)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"train config: {n} must be a positive number, got {v!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"train config: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_time is not None and not (isinstance(self.max_time, (int, float)) and self.max_time > 0):
            raise ValueError(f"train config: max_time must be a positive number of seconds, got {self.max_time!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"train config: schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.arch not in ("lstm", "gru", "rnn"):
            raise ValueError(f"train config: arch must be lstm, gru or rnn, got {self.arch!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"train config: seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"train config: patience must be an int >= 0, got {self.patience!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"train config: dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError("train config: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"train config: unknown field {unknown[0]!r}")
        return cls(**d)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_step: int
    val: dict[str, float]
    test: dict[str, float]
    baseline: dict[str, float]
    stopped_because: str
    elapsed: float


# ----------------------------------------------------------------------------- helpers


def model_config_for(cfg: TrainConfig, task: Task) -> ModelConfig:
    return ModelConfig(
        input_type=task.input_type,
        input_size=task.input_size,
        output_size=task.output_size,
        target=task.target,
        arch=cfg.arch,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        embedding_size=cfg.embedding_size,
        dropout=cfg.dropout,
        tie_weights=cfg.tie_weights,
        proj_size=cfg.proj_size,
        variants=dict(cfg.variants),
    )


def predictor(model: nn.Module) -> Any:
    def predict(batch: Batch) -> torch.Tensor:
        return model(batch.x, batch.lengths)

    return predict


@torch.no_grad()
def evaluate_model(model: nn.Module, task: Task, split: Literal["val", "test"], batch_size: int) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        return task.evaluate(predictor(model), split, batch_size)
    finally:
        model.train(was)


def _lr_lambda(cfg: TrainConfig) -> Any:
    def f(step: int) -> float:
        w = 1.0 if cfg.warmup <= 0 else min(1.0, (step + 1) / cfg.warmup)
        if cfg.schedule == "cosine":
            progress = min(1.0, step / max(1, cfg.max_steps))
            return w * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        return w

    return f


def _better(a: float, b: float | None, higher: bool) -> bool:
    if b is None:
        return True
    return a > b if higher else a < b


def _reached(value: float, target: float | None, higher: bool) -> bool:
    return target is not None and (value >= target if higher else value <= target)


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _unwrap(model: nn.Module) -> SequenceModel:
    inner = getattr(model, "module", model)
    assert isinstance(inner, SequenceModel)
    return inner


def _flag_all(flag: bool, world: int) -> bool:
    """Any rank's flag (so every rank stops at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


# ----------------------------------------------------------------------------- run folder I/O


def write_config(run_dir: Path, cfg: TrainConfig, task: Task, model_cfg: ModelConfig) -> None:
    atomic_write_json(
        run_dir / "config.json",
        {
            "format": CONFIG_FORMAT,
            "lstmkit_version": __version__,
            "task": {"name": task.name, "config": task.config()},
            "model": model_cfg.to_dict(),
            "train": cfg.to_dict(),
        },
    )
    if task.vocab is not None:
        atomic_write_json(run_dir / "vocab.json", {"tokens": list(task.vocab)})
    norm = getattr(task, "normaliser", None)
    if isinstance(norm, dict):
        atomic_write_json(run_dir / "normaliser.json", norm)


def save_weights(run_dir: Path, model: SequenceModel, step: int) -> None:
    save_tensors(
        run_dir / "model.safetensors",
        dict(model.state_dict()),
        metadata={"step": str(step), "lstmkit_version": __version__},
    )


def _rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return json.loads(json.dumps(st, default=int))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: SequenceModel,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    rng: np.random.Generator,
    extra: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_t, opt_info = optimizer_to_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    name = f"train_state/ckpt-{step:09d}.safetensors"
    info = {
        "version": STATE_VERSION,
        "step": step,
        "checkpoint": name,
        "optimizer": opt_info,
        "scheduler": sched.state_dict(),
        "data_rng": _rng_to_json(rng),
        **extra,
    }
    info["scheduler"].pop("lr_lambdas", None)
    sha = save_tensors(run_dir / name, tensors)
    info["sha256"] = sha
    atomic_write_json(run_dir / "train_state.json", info)
    # keep the newest two checkpoints; older ones are no longer pointed at
    ckpts = sorted((run_dir / "train_state").glob("ckpt-*.safetensors"))
    for old in ckpts[:-2]:
        if old.name != Path(name).name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    info = read_json(run_dir / "train_state.json", "the training state")
    if not isinstance(info, dict) or info.get("version") != STATE_VERSION:
        version = info.get("version") if isinstance(info, dict) else None
        raise RunError(
            f"{run_dir / 'train_state.json'}: unknown training-state version {version!r} "
            f"(this lstmkit reads {STATE_VERSION})"
        )
    name = info.get("checkpoint")
    if not isinstance(name, str) or "/" not in name or ".." in name:
        raise RunError(f"{run_dir / 'train_state.json'}: field 'checkpoint' is not a checkpoint file name")
    tensors, _ = load_tensors(run_dir / name, "the checkpoint", sha256=info.get("sha256"))
    return info, tensors


def _append_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric records after the checkpoint we resume from (they will be written again)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(r, dict) and r.get("split") != "test" and int(r.get("step", 0)) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


# ----------------------------------------------------------------------------- the loop


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Any = None,
) -> TrainResult:
    """Train ``cfg`` into the run folder ``out`` (created), or continue it when ``resume``.

    ``log`` is a callable taking one line of text (default: the progress stream).
    """
    run_dir = Path(out)
    world, rank = _dist()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    if world > 1 and cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes ({world})")
    is_main = rank == 0

    if not resume and (run_dir / "train_state.json").exists():
        raise ValueError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")

    torch.manual_seed(cfg.seed)
    task = make_task(cfg.task, seed=cfg.seed, **cfg.task_params)
    mcfg = model_config_for(cfg, task)
    model = build_model(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    rng = np.random.default_rng(cfg.seed)
    step = 0
    best: float | None = None
    best_step = 0
    bad_evals = 0
    elapsed = 0.0

    if resume:
        info, tensors = load_checkpoint(run_dir)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_from_tensors(opt, tensors, info["optimizer"])
        sched_state = dict(info["scheduler"])
        sched_state["lr_lambdas"] = [None] * len(opt.param_groups)  # the lambda comes from the config
        sched.load_state_dict(sched_state)
        torch.set_rng_state(tensors["rng.torch"])
        rng.bit_generator.state = info["data_rng"]
        step = int(info["step"])
        best, best_step, bad_evals = info.get("best"), int(info.get("best_step", 0)), int(info.get("bad_evals", 0))
        elapsed = float(info.get("elapsed", 0.0))
        if is_main:
            _truncate_metrics(run_dir, step)
            for stale in [*run_dir.glob(".*.tmp-*"), *run_dir.glob("*/.*.tmp-*")]:
                stale.unlink(missing_ok=True)  # half-written files of a killed process
    elif is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir, cfg, task, mcfg)
        (run_dir / "metrics.jsonl").write_text("", encoding="utf-8")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
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
    higher = task.higher_is_better
    metric = task.main_metric
    ckpt_every = cfg.checkpoint_every or cfg.eval_every
    stopped = "max_steps"
    if cfg.arch == "lstm" and next(model.parameters()).device.type == "cpu":
        from .. import kernels

        kernels.available()  # a first use builds the compiled kernels (~1 min): before the clock starts
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

    if step >= cfg.max_steps:
        stopped = "already at max_steps"
    while step < cfg.max_steps:
        net.train()
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
                f"(step {_last_ckpt_step(run_dir)}) is kept in {run_dir}; try a lower --lr or a smaller --clip"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
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
        bar.update(step, loss=last_loss)
        out_of_time = cfg.max_time is not None and elapsed + time.perf_counter() - t_start >= cfg.max_time
        out_of_time = _flag_all(out_of_time, world)
        do_eval = step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time
        stop_now = out_of_time
        if out_of_time:
            stopped = "max_time"
        if do_eval:
            val = evaluate_model(model, task, "val", cfg.eval_batch_size)
            rec = {"step": step, "split": "val", **val, "time": elapsed + time.perf_counter() - t_start}
            pending.append(rec)
            score = val[metric]
            if _better(score, best, higher):
                best, best_step, bad_evals = score, step, 0
                if is_main:
                    save_weights(run_dir, model, step)
            else:
                bad_evals += 1
            say(f"step {step}: val {metric} {score:.4f} (best {best:.4f} at step {best_step})")
            if _reached(score, cfg.target, higher):
                stopped, stop_now = f"reached target {metric} {cfg.target}", True
            elif cfg.patience and bad_evals >= cfg.patience:
                stopped, stop_now = f"no improvement in {cfg.patience} evaluations", True
        if is_main and (do_eval or step % ckpt_every == 0):
            _append_metrics(run_dir, pending)
            pending = []
            save_checkpoint(run_dir, step, model, opt, sched, rng, extra_state())
        if stop_now:
            break
    bar.close()
    total = elapsed + time.perf_counter() - t_start
    if is_main:
        _append_metrics(run_dir, pending)
    # the test set is scored with the best weights on validation
    if (run_dir / "model.safetensors").exists():
        from .run import load_weights_into

        load_weights_into(model, run_dir / "model.safetensors")
    val = evaluate_model(model, task, "val", cfg.eval_batch_size)
    test = evaluate_model(model, task, "test", cfg.eval_batch_size)
    if is_main:
        _append_metrics(run_dir, [{"step": best_step, "split": "test", **test}])
        atomic_write_json(
            run_dir / "result.json",
            {
                "steps": step,
                "best_step": best_step,
                "val": val,
                "test": test,
                "baseline": task.baseline(),
                "stopped_because": stopped,
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
    return TrainResult(run_dir, step, best_step, val, test, task.baseline(), stopped, total)


def resume(
    run: str | Path,
    *,
    max_steps: int | None = None,
    max_time: float | None = None,
    progress: bool = True,
    log: Any = None,
) -> TrainResult:
    """Continue the run folder ``run`` from its last checkpoint (optionally with a new step or time
    budget) to the same result as an uninterrupted run."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder (no such directory)")
    saved = read_json(run_dir / "config.json", "the run's config")
    cfg = config_from_json(saved, run_dir, override={"max_steps": max_steps, "max_time": max_time})
    if not (run_dir / "train_state.json").exists():
        raise RunError(f"{run_dir}: has no checkpoint to resume from (train_state.json is missing)")
    return train(cfg, run_dir, resume=True, progress=progress, log=log)


def _last_ckpt_step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "train_state.json").read_text())["step"])
    except Exception:
        return 0


def config_from_json(saved: Any, run_dir: Path, override: dict[str, Any] | None = None) -> TrainConfig:
    """Validate a run's config.json and return its TrainConfig (errors name the field)."""
    where = run_dir / "config.json"
    if not isinstance(saved, dict):
        raise RunError(f"{where}: expected a JSON object")
    if saved.get("format") != CONFIG_FORMAT:
        raise RunError(f"{where}: unknown config format {saved.get('format')!r} (this lstmkit reads {CONFIG_FORMAT})")
    for key in ("task", "model", "train"):
        if not isinstance(saved.get(key), dict):
            raise RunError(f"{where}: field {key!r} is missing or not an object")
    d = dict(saved["train"])
    for k, v in (override or {}).items():
        if v is not None:
            d[k] = v
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise RunError(f"{where}: {e}") from None
