"""The configuration of a training run: :class:`TrainConfig`, saved as the ``"train"`` object of a
run folder's config.json, and the model it asks for (:func:`model_config_for`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ..data import Task
from ..errors import InputError
from ..models import ModelConfig

__all__ = ["DEFAULT_STEPS", "TASK_DEFAULTS", "TrainConfig", "model_config_for", "train_defaults"]

DEFAULT_STEPS = 2000  # the step budget of a run given neither max_steps nor max_time


# What `lstmkit train TASK` uses where a flag is not given (TrainConfig.for_task): for each task, the
# settings that the measured runs of BENCHMARKS.md ("Quality") found to work; the rest are
# TrainConfig's own defaults. copy has no measured recipe yet and keeps those.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    # Shakespeare: H 512, embedding 64, batch 32 x 100 chars, stateful (truncated BPTT), AdamW 4e-3
    # decayed by the cosine schedule reached 1.394 nats/char (state carried) in 20 min (BENCHMARKS.md,
    # "Long lags: recipes"; windowed from zero states with 2e-3: 1.466); validating the whole held-out
    # plays costs seconds at H 512, hence every 500 steps
    "text": {
        "hidden_size": 512,
        "embedding_size": 64,
        "batch_size": 32,
        "lr": 4e-3,
        "schedule": "cosine",
        "stateful": True,
        "eval_every": 500,
    },
    # mystery T 100: 99.4 % test with H 64, AdamW 3e-3
    "mystery": {"hidden_size": 64, "lr": 3e-3},
    # embedded Reber: 100 % with H 32, embedding 8, AdamW 1e-2
    "reber": {"hidden_size": 32, "embedding_size": 8, "lr": 1e-2},
    # temporal order 6a: 100 % with forget-gate bias 4 (with 1 it sat at chance for 8000 steps)
    "temporal-order": {"hidden_size": 64, "lr": 2e-3, "variants": {"forget_bias": 4.0}},
    # adding T 200: MSE 0.0037 with H 128, batch 50, AdamW 1e-3 without decay, forget-gate bias 4
    "adding": {
        "hidden_size": 128,
        "batch_size": 50,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "variants": {"forget_bias": 4.0},
    },
    # the forecasting benchmarks (BENCHMARKS.md, "Forecasting"): H 64; 10 evaluations without
    # improvement end a run (its best weights are kept): the short series' best came within 100-600
    # steps, taylor's (4,032 points) later (at h = 1 MAE 319 with patience 10 against 380 with 5)
    "csv": {"hidden_size": 64, "patience": 10},
    "copy": {},
}


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
    # "norm": scale the gradient to global norm <= clip; "value": clamp each entry to [-clip, clip]
    clip_mode: Literal["norm", "value"] = "norm"
    # "cosine": from lr down to lr/20 over the budget (the step budget, or with max_time the elapsed
    # training time, whichever is further spent)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup: int = 0
    # Polyak averaging: an exponential moving average of the weights with this decay per step (0 = off;
    # 0.99 averages over about 100 steps). Validation, the saved weights and the test use the average,
    # whose scores move smoothly where the raw weights' jump from one evaluation to the next (small
    # data, where picking the best of noisy validations picks noise). The optimizer trains the raw ones.
    ema: float = 0.0
    # The budget: training stops at whichever given budget ends first. Give either or both; with
    # neither, max_steps is DEFAULT_STEPS. A time budget given alone has no step limit.
    max_steps: int | None = None
    max_time: float | None = None  # seconds of training (this run and earlier resumed parts together)
    # evaluation and checkpoints
    eval_every: int = 100
    eval_batch_size: int = 256
    patience: int = 20  # evaluations without improvement before stopping; 0 = never stop early
    target: float | None = None  # stop once the validation main metric reaches this
    checkpoint_every: int | None = None  # steps; default: at every evaluation
    # truncated BPTT for tasks with one long training stream (text): each batch row reads its own
    # stretch in consecutive windows, the state carried (detached) between steps; validation adds the
    # state-carried figure (see TextTask.stream_batch and lstmkit.train.evaluate.evaluate_carried)
    stateful: bool = False
    # start from the weights of another run folder (its model.safetensors) instead of a fresh
    # initialisation: fine-tuning, or a curriculum whose stages each start where the last ended. The
    # model built from this config must have the same parameters; the optimizer starts afresh.
    init_from: str | None = None
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_time is None:
            self.max_steps = DEFAULT_STEPS

        def positive(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"train config: {name} must be a positive int, got {v!r}")

        for n in (
            "hidden_size",
            "num_layers",
            "embedding_size",
            "batch_size",
            "eval_every",
            "eval_batch_size",
            "log_every",
        ):
            positive(n)
        for n in ("lr", "clip"):
            v = getattr(self, n)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (v > 0 and math.isfinite(v)):
                raise InputError(f"train config: {n} must be a positive number, got {v!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise InputError(f"train config: weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_steps is not None:
            positive("max_steps")
        if self.max_time is not None and not (isinstance(self.max_time, (int, float)) and self.max_time > 0):
            raise InputError(f"train config: max_time must be a positive number of seconds, got {self.max_time!r}")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise InputError(f"train config: ema must be a decay in [0, 1) (0 = off), got {self.ema!r}")
        if self.clip_mode not in ("norm", "value"):
            raise InputError(f"train config: clip_mode must be 'norm' or 'value', got {self.clip_mode!r}")
        if not isinstance(self.stateful, bool):
            raise InputError(f"train config: stateful must be true or false, got {self.stateful!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise InputError(f"train config: init_from must be a run folder's path, got {self.init_from!r}")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"train config: schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.arch not in ("lstm", "gru", "rnn"):
            raise InputError(f"train config: arch must be lstm, gru or rnn, got {self.arch!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InputError(f"train config: seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.patience, int) or self.patience < 0:
            raise InputError(f"train config: patience must be an int >= 0, got {self.patience!r}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise InputError(f"train config: dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def for_task(cls, task: str, **given: Any) -> TrainConfig:
        """The config of a run of ``task`` with the task's own defaults (:func:`train_defaults`)
        where ``given`` leaves a field out; ``variants`` are merged (given ones win). This is what
        ``lstmkit train TASK`` builds; ``TrainConfig(task=...)`` keeps the generic defaults."""
        kw = train_defaults(task)
        mine = dict(given.pop("variants", None) or {})
        if mine.get("chrono_init") is not None and "forget_bias" not in mine:
            kw["variants"].pop("forget_bias", None)  # chrono initialisation sets the forget-gate bias itself
        variants = {**kw["variants"], **mine}
        kw.update(given)
        kw["variants"] = variants
        return cls(task=task, task_params=dict(kw.pop("task_params", None) or {}), **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise InputError("train config: expected a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"train config: unknown field {unknown[0]!r}")
        return cls(**d)


def train_defaults(task: str) -> dict[str, Any]:
    """Every TrainConfig field's default for ``task`` (its :data:`TASK_DEFAULTS` over the generic
    ones), except ``task`` and ``task_params``."""
    out = {f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(TrainConfig)}
    del out["task"], out["task_params"]
    key = task.replace("_", "-") if isinstance(task, str) else task
    for k, v in TASK_DEFAULTS.get(key, {}).items():
        out[k] = dict(v) if isinstance(v, dict) else v
    return out


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
