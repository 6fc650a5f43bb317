"""The copy (memory) problem of Arjovsky, Shah & Bengio 2016."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import Batch, SyntheticTask, check_int, tokens_to_strings

COPY_SYMBOLS = 8
COPY_LENGTH = 10


class CopyTask(SyntheticTask):
    """The copy problem (Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks").

    Input (T + 20 tokens): 10 symbols uniform from {1..8}, then T - 1 blanks (0), then the marker 9,
    then 10 blanks. Target (T + 20 ids): T + 10 blanks, then the 10 symbols. Loss: cross-entropy
    averaged over all T + 20 steps (`ce`, nats, the main metric). Memoryless baseline: blanks
    predicted with certainty and a uniform guess over the 8 symbols in the last 10 steps, which
    gives 10·ln 8 / (T + 20) nats (0.0945 at T = 200); published LSTMs stay at or near it for
    T >= 500. `accuracy` is the fraction of the 10 recalled symbols that are right (baseline 1/8).

    Vocabulary (inputs): "_" blank, "1".."8", "go" the marker. Outputs: 9 classes, blank and 1..8.
    """

    name: ClassVar[str] = "copy"
    input_type = "tokens"
    input_size = COPY_SYMBOLS + 2
    target = "class_steps"
    output_size = COPY_SYMBOLS + 1
    main_metric = "ce"
    higher_is_better = False

    def __init__(self, seed: int = 0, *, T: int = 100, n_val: int = 1000, n_test: int = 1000) -> None:
        T = check_int(self.name, "T", T, minimum=1)
        super().__init__(seed, {"T": T, "n_val": n_val, "n_test": n_test})
        self.T = T
        self.vocab = ["_"] + [str(i) for i in range(1, COPY_SYMBOLS + 1)] + ["go"]

    def _generate(self, n: int, rng: np.random.Generator) -> Batch:
        T, k = self.T, COPY_LENGTH
        symbols = rng.integers(1, COPY_SYMBOLS + 1, (n, k))
        x = np.zeros((n, T + 2 * k), dtype=np.int64)
        x[:, :k] = symbols
        x[:, T + k - 1] = COPY_SYMBOLS + 1
        y = np.zeros((n, T + 2 * k), dtype=np.int64)
        y[:, T + k :] = symbols
        return Batch(x=torch.from_numpy(x), y=torch.from_numpy(y))

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        ce = F.cross_entropy(output.reshape(-1, output.shape[-1]), batch.y.reshape(-1), reduction="sum")
        recall = output[:, -COPY_LENGTH:].argmax(-1) == batch.y[:, -COPY_LENGTH:]
        return {
            "ce": float(ce),
            "steps": float(batch.y.numel()),
            "correct": float(recall.sum()),
            "symbols": float(recall.numel()),
        }

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"ce": sums["ce"] / sums["steps"], "accuracy": sums["correct"] / sums["symbols"]}

    def render(self, x_row: torch.Tensor) -> list[str]:
        assert self.vocab is not None
        return tokens_to_strings(self.vocab, x_row)

    def baseline(self) -> dict[str, float]:
        return {"ce": COPY_LENGTH * math.log(COPY_SYMBOLS) / (self.T + 2 * COPY_LENGTH), "accuracy": 1 / 8}
