"""The temporal order problem of Hochreiter & Schmidhuber 1997 (experiments 6a and 6b)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .base import Batch, SyntheticTask, check_choice, class_last_metrics, class_last_sums, tokens_to_strings

TEMPORAL_SYMBOLS = ["E", "B", "a", "b", "c", "d", "X", "Y"]
PAD = "<pad>"
# The windows where the relevant X/Y symbols go, per variant (positions counted from 0, E at 0).
WINDOWS: dict[str, list[tuple[int, int]]] = {
    "6a": [(10, 20), (50, 60)],
    "6b": [(10, 20), (33, 43), (66, 76)],
}
MIN_LEN, MAX_LEN = 100, 110


class TemporalOrderTask(SyntheticTask):
    """Temporal order (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", experiment 6).

    Symbols {E, B, a, b, c, d, X, Y}. A sequence starts with E and ends with B; its length is
    uniform in 100..110 (so batches are padded at the end with "<pad>" and carry `lengths`); every
    other step is a random a/b/c/d except at the relevant positions, which hold X or Y.
    **6a** (default): t1 in [10, 20], t2 in [50, 60]; classes XX, XY, YX, YY (4). Paper: solved
    after 31,390 training sequences on average, 1 of 2560 test sequences wrong.
    **6b**: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76]; 8 classes. Paper: 571,100 sequences,
    2 of 2560 wrong.
    Positions are counted from 0 with E at position 0. The class is the X/Y pattern read as a binary
    number, X = 0 and Y = 1, the first relevant symbol most significant (XX = 0, XY = 1, YX = 2, YY = 3).

    Metric `accuracy` (main); chance baseline 1/4 (6a) or 1/8 (6b).
    Batch.meta["relevant_pos"]: (B, 2 or 3) int64 positions of the X/Y symbols.
    """

    name: ClassVar[str] = "temporal-order"
    input_type = "tokens"
    input_size = len(TEMPORAL_SYMBOLS) + 1
    target = "class_last"
    main_metric = "accuracy"
    higher_is_better = True

    def __init__(self, seed: int = 0, *, variant: str = "6a", n_val: int = 1000, n_test: int = 2560) -> None:
        variant = check_choice(self.name, "variant", variant, tuple(WINDOWS))
        super().__init__(seed, {"variant": variant, "n_val": n_val, "n_test": n_test})
        self.variant = variant
        self.windows = WINDOWS[variant]
        self.output_size = 2 ** len(self.windows)
        self.vocab = [*TEMPORAL_SYMBOLS, PAD]

    def _generate(self, n: int, rng: np.random.Generator) -> Batch:
        ids = {s: i for i, s in enumerate(self.vocab or [])}
        rows = np.arange(n)
        lens = rng.integers(MIN_LEN, MAX_LEN + 1, n)
        x = rng.integers(ids["a"], ids["d"] + 1, (n, MAX_LEN))
        x[:, 0] = ids["E"]
        x[rows, lens - 1] = ids["B"]
        pos = np.stack([rng.integers(lo, hi + 1, n) for lo, hi in self.windows], axis=1)
        bits = rng.integers(0, 2, (n, len(self.windows)))
        for j in range(len(self.windows)):
            x[rows, pos[:, j]] = ids["X"] + bits[:, j]
        x[np.arange(MAX_LEN)[None, :] >= lens[:, None]] = ids[PAD]
        label = (bits * (2 ** np.arange(len(self.windows))[::-1])).sum(1)
        return Batch(
            x=torch.from_numpy(x.astype(np.int64)),
            y=torch.from_numpy(label.astype(np.int64)),
            lengths=torch.from_numpy(lens.astype(np.int64)),
            meta={"relevant_pos": torch.from_numpy(pos.astype(np.int64))},
        )

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        return class_last_sums(output, batch)

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return class_last_metrics(sums)

    def class_names(self) -> list[str] | None:
        k = len(self.windows)
        return ["".join("XY"[(c >> (k - 1 - j)) & 1] for j in range(k)) for c in range(2**k)]

    def render(self, x_row: torch.Tensor) -> list[str]:
        assert self.vocab is not None
        return tokens_to_strings(self.vocab, x_row)

    def baseline(self) -> dict[str, float]:
        return {"accuracy": 1.0 / self.output_size}
