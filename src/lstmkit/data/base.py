"""The common ground of every task: `DataError`, `Batch`, the `Task` interface and its shared helpers.

A task owns its data (generator or loader), its train / validation / test splits, its loss, its
metrics and its chance baseline, so that the training loop, the explorer and the CLI can treat all
tasks alike. Shapes: B sequences, T steps, I input features, C classes, L labels.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..targets import LAST_TARGETS, STEP_TARGETS

Split = Literal["val", "test"]
InputType = Literal["tokens", "vector"]
TargetKind = Literal[
    "class_last", "class_steps", "multilabel_steps", "regress_last", "regress_horizon", "regress_steps"
]

LN2 = math.log(2.0)


class DataError(InputError):
    """Bad input data or parameters.

    The message is one line saying what was wrong and how to fix it; the CLI prints it and exits
    with status 2.
    """


@dataclass
class Batch:
    """One batch of sequences.

    x: (B, T) int64 token ids for "tokens" tasks; (B, T, I) float32 for "vector" tasks.
    y: targets; the shape depends on the task's `target` kind.
    mask: (B, T) bool, the steps that count in per-step losses; None = all steps count.
    lengths: (B,) int64 valid lengths when sequences differ in length (padding at the END); None = all T.
    meta: task-specific extras (event positions and the like), tensors with B rows or lists of B items.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor (meta's included) moved to `device`."""

        def move(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return Batch(
            x=self.x.to(device),
            y=self.y.to(device),
            mask=move(self.mask),
            lengths=move(self.lengths),
            meta={k: move(v) for k, v in self.meta.items()},
        )

    def rows(self, start: int, stop: int) -> Batch:
        """Sequences start..stop-1 (tensors and lists in meta with one entry per sequence are cut too)."""
        n = len(self)

        def cut(v: Any) -> Any:
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
                return v[start:stop]
            if isinstance(v, list) and len(v) == n:
                return v[start:stop]
            return copy.copy(v)

        return Batch(
            x=self.x[start:stop],
            y=self.y[start:stop],
            mask=None if self.mask is None else self.mask[start:stop],
            lengths=None if self.lengths is None else self.lengths[start:stop],
            meta={k: cut(v) for k, v in self.meta.items()},
        )


# ----------------------------------------------------------------------------- parameter checks


def check_int(task: str, name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum], else a DataError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{task}: parameter {name} must be an integer, got {value!r}; pass e.g. {name}={minimum}")
    v = int(value)
    if v < minimum or (maximum is not None and v > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise DataError(f"{task}: parameter {name}={v} is out of range; it must be {bound}")
    return v


def check_choice(task: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DataError(f"{task}: parameter {name}={value!r} is not one of {', '.join(map(repr, choices))}")
    return str(value)


def split_rng(seed: int, split: Split) -> np.random.Generator:
    """The generator of a fixed evaluation set: its own stream per (seed, split)."""
    return np.random.default_rng([seed, {"val": 1, "test": 2}[split]])


def check_split(task: str, split: Any) -> Split:
    if split not in ("val", "test"):
        raise DataError(f"{task}: split must be 'val' or 'test', got {split!r}")
    return split  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- the interface


class Task(ABC):
    """A learning problem with its data, splits, loss, metrics and baseline.

    Subclasses set the class attributes below and implement `train_batch`, `_eval_set`,
    `_batch_sums`, `_metrics`, `render` and `baseline`. `eval_batches` and `evaluate` are shared.
    """

    name: ClassVar[str]
    input_type: InputType
    input_size: int
    target: TargetKind
    output_size: int
    vocab: list[str] | None = None
    main_metric: str
    higher_is_better: bool
    normaliser: dict[str, Any] | None = None

    def __init__(self, seed: int, params: dict[str, Any]) -> None:
        self.seed = check_int(self.name, "seed", seed, minimum=0)
        self._params = params
        self._eval_cache: dict[str, Batch] = {}

    # -- identity

    def config(self) -> dict[str, Any]:
        """JSON-serialisable; `make_task(**task.config())` rebuilds an identical task (same data)."""
        return {"name": self.name, "seed": self.seed, **copy.deepcopy(self._params)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    # -- data

    @abstractmethod
    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A fresh training batch; deterministic given the state of `rng`."""

    @abstractmethod
    def _eval_set(self, split: Split) -> Batch:
        """The whole fixed evaluation set of `split` as one batch (built once, then cached)."""

    def eval_batches(self, split: Split, batch_size: int) -> list[Batch]:
        """The fixed `split` set in batches of `batch_size`: the same data on every call."""
        split = check_split(self.name, split)
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        if split not in self._eval_cache:
            self._eval_cache[split] = self._eval_set(split)
        full = self._eval_cache[split]
        n = len(full)
        return [self._trim(full.rows(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]

    def _trim(self, batch: Batch) -> Batch:
        """Cut the padding beyond the longest sequence of a batch of varying lengths."""
        if batch.lengths is None or len(batch) == 0:
            return batch
        t = int(batch.lengths.max())
        if t == batch.x.shape[1]:
            return batch
        per_step = self.target in STEP_TARGETS
        return Batch(
            x=batch.x[:, :t],
            y=batch.y[:, :t] if per_step else batch.y,
            mask=None if batch.mask is None else batch.mask[:, :t],
            lengths=batch.lengths,
            meta=batch.meta,
        )

    # -- loss and metrics

    def expected_output_shape(self, batch: Batch) -> tuple[int, ...]:
        b = len(batch)
        if self.target in LAST_TARGETS:
            return (b, self.output_size)
        return (b, int(batch.x.shape[1]), self.output_size)

    def _check_output(self, output: torch.Tensor, batch: Batch) -> None:
        want = self.expected_output_shape(batch)
        if tuple(output.shape) != want:
            raise ValueError(
                f"{self.name}: model output has shape {tuple(output.shape)}, expected {want} "
                f"for target kind {self.target!r}"
            )

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training loss: a differentiable scalar (mean over sequences, or over valid steps)."""
        self._check_output(output, batch)
        y = batch.y.to(output.device)
        if self.target == "class_last":
            return F.cross_entropy(output, y)
        if self.target in ("regress_last", "regress_horizon"):
            return F.mse_loss(output, y.to(output.dtype))
        if self.target == "class_steps":
            per = F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1), reduction="none")
            return masked_mean(per.view(y.shape), batch.mask)
        per = F.binary_cross_entropy_with_logits(output, y.to(output.dtype), reduction="none").mean(-1)
        return masked_mean(per, batch.mask)

    def evaluate(
        self, predict: Callable[[Batch], torch.Tensor], split: Split, batch_size: int = 256
    ) -> dict[str, float]:
        """Metrics of `predict` (a batch to model outputs) on the fixed `split` set."""
        sums: dict[str, float] = {}
        with torch.no_grad():
            for batch in self.eval_batches(split, batch_size):
                out = predict(batch)
                self._check_output(out, batch)
                for k, v in self._batch_sums(out.detach().float().cpu(), batch).items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        return self._metrics(sums)

    @abstractmethod
    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Additive statistics of one evaluation batch (output on the CPU, float32)."""

    @abstractmethod
    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The metrics from the summed statistics of all batches."""

    # -- display and reference

    def describe(self) -> list[str]:
        """Lines for the user at the start of training: what was chosen or changed for them (the
        season detected, rows sorted, values filled, …). Most tasks have nothing to say."""
        return []

    def class_names(self) -> list[str] | None:
        """Display names of the output classes of a classification task; None where they have none."""
        return None

    @abstractmethod
    def render(self, x_row: torch.Tensor) -> list[str]:
        """One display string per step of one sequence (x_row: (T,) ids or (T, I) features)."""

    @abstractmethod
    def baseline(self) -> dict[str, float]:
        """The chance / memoryless baseline of the main metric(s)."""


class SyntheticTask(Task):
    """A task whose sequences come from a seeded generator `_generate(n, rng)`.

    Training batches are drawn fresh from the caller's generator; the validation and test sets are
    `n_val` and `n_test` sequences drawn from generators seeded by (seed, split), so they are fixed
    for a given seed and differ from each other.
    """

    def __init__(self, seed: int, params: dict[str, Any]) -> None:
        super().__init__(seed, params)
        params["n_val"] = check_int(self.name, "n_val", params["n_val"], minimum=1)
        params["n_test"] = check_int(self.name, "n_test", params["n_test"], minimum=1)

    @abstractmethod
    def _generate(self, n: int, rng: np.random.Generator) -> Batch:
        """n sequences from `rng`."""

    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        return self._generate(check_int(self.name, "batch_size", batch_size, minimum=1), rng)

    def _eval_set(self, split: Split) -> Batch:
        n = self._params["n_val"] if split == "val" else self._params["n_test"]
        return self._generate(n, split_rng(self.seed, split))


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, T) `values` over the steps where `mask` is True (all steps when None)."""
    if mask is None:
        return values.mean()
    m = mask.to(values.device, values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def tokens_to_strings(vocab: list[str], x_row: torch.Tensor) -> list[str]:
    return [vocab[int(i)] for i in x_row.reshape(-1).tolist()]


def class_last_sums(output: torch.Tensor, batch: Batch) -> dict[str, float]:
    """Additive statistics of a sequence classification batch: right answers, summed cross-entropy, count."""
    return {
        "correct": float((output.argmax(-1) == batch.y).sum()),
        "ce": float(F.cross_entropy(output, batch.y, reduction="sum")),
        "n": float(len(batch)),
    }


def class_last_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Accuracy and mean cross-entropy from :func:`class_last_sums` added over batches."""
    return {"accuracy": sums["correct"] / sums["n"], "ce": sums["ce"] / sums["n"]}


def read_utf8(path: str | Path, kind: str, what: str) -> str:
    """The text of the user's `kind` file ("csv", "text") at `path`, a byte-order mark dropped; a
    one-line DataError when it is missing, not a regular file, not UTF-8 or empty (`what` says
    what the file should be: "a CSV file with a header")."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{kind} file {str(p)!r} does not exist; pass the path of {what}")
    if not p.is_file():
        raise DataError(f"{kind} file {str(p)!r} is not a regular file; pass the path of {what}")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{kind} file {str(p)!r} is not valid UTF-8 (byte {e.start}); convert it, e.g. iconv -t UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{kind} file {str(p)!r} is empty; pass {what} with data in it")
    return text
