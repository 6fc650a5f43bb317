"""The embedded Reber grammar of Hochreiter & Schmidhuber 1997 (experiment 1)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import Batch, DataError, Split, Task, check_int, masked_mean, tokens_to_strings

REBER_SYMBOLS = "BTSXPVE"
PAD = "<pad>"
# Reber grammar: state -> [(symbol, next state)], each choice with probability 0.5; state 5 emits E.
REBER_EDGES: dict[int, list[tuple[str, int]]] = {
    0: [("T", 1), ("P", 2)],
    1: [("S", 1), ("X", 3)],
    2: [("T", 2), ("V", 4)],
    3: [("X", 2), ("S", 5)],
    4: [("P", 3), ("V", 5)],
}


def reber_string(rng: np.random.Generator) -> tuple[str, list[str]]:
    """One Reber string B...E and, for each of its symbols, the string of legal next symbols."""
    s, legal = ["B"], ["TP"]
    state = 0
    while state != 5:
        sym, state = REBER_EDGES[state][int(rng.integers(0, 2))]
        s.append(sym)
        legal.append("E" if state == 5 else "".join(e[0] for e in REBER_EDGES[state]))
    s.append("E")
    legal.append("")
    return "".join(s), legal


def embedded_reber_string(rng: np.random.Generator) -> tuple[str, list[str]]:
    """One embedded Reber string B (T|P) <Reber string> (same T|P) E, and the legal next symbols after
    each of its symbols ("" after the final E)."""
    outer = "TP"[int(rng.integers(0, 2))]
    inner, inner_legal = reber_string(rng)
    legal = ["TP", "B", *inner_legal[:-1], outer, "E", ""]
    return "B" + outer + inner + outer + "E", legal


class ReberTask(Task):
    """Embedded Reber grammar (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", experiment 1).

    Reber grammar, each choice with p = 0.5: B into state 0; 0: T->1, P->2; 1: S->1, X->3;
    2: T->2, V->4; 3: X->2, S->5; 4: P->3, V->5; 5: E, end. Embedded: B, then T or P, then a whole
    Reber string (B...E), then the same T or P again, then E (e.g. BPBTSXXVPSEPE).

    Next-symbol prediction: the input is the string without its last symbol (token ids over
    "BTSXPVE" plus "<pad>"; batches are padded at the end and carry `lengths` and `mask`); the
    target at each step is the multi-hot set of the legal next symbols (7 labels, independent
    sigmoids). A string is correct when at every step all and only the legal next symbols have
    output > 0.5 (logit > 0): `string_accuracy`, the main metric; `step_accuracy` counts steps.

    Data protocol. The paper trains on 256 strings and tests on 256 distinct strings. Here the
    validation and test sets are `n_val` and `n_test` (256 each by default) distinct strings, the
    two sets disjoint; training strings are drawn fresh on the fly by default, or, with
    `n_train=256`, from a fixed set of that many distinct strings disjoint from validation and test
    (the paper's protocol). Paper: 100% of test strings correct after 8,440 training sequences at
    best (3 blocks x 2 cells).

    Baseline: a model that learns the inner grammar but cannot remember the second symbol must guess
    T or P at the step before the final E, so it gets `string_accuracy` = 0.5.
    """

    name: ClassVar[str] = "reber"
    input_type = "tokens"
    input_size = len(REBER_SYMBOLS) + 1
    target = "multilabel_steps"
    output_size = len(REBER_SYMBOLS)
    main_metric = "string_accuracy"
    higher_is_better = True

    def __init__(self, seed: int = 0, *, n_val: int = 256, n_test: int = 256, n_train: int | None = None) -> None:
        params: dict[str, Any] = {
            "n_val": check_int(self.name, "n_val", n_val, minimum=1, maximum=100_000),
            "n_test": check_int(self.name, "n_test", n_test, minimum=1, maximum=100_000),
            "n_train": None if n_train is None else check_int(self.name, "n_train", n_train, minimum=1),
        }
        super().__init__(seed, params)
        self.vocab = [*REBER_SYMBOLS, PAD]
        self.labels = list(REBER_SYMBOLS)
        self._fixed: dict[str, list[tuple[str, list[str]]]] | None = None

    # -- strings

    def _fixed_sets(self) -> dict[str, list[tuple[str, list[str]]]]:
        """The distinct validation, test (and fixed training) strings, disjoint from one another."""
        if self._fixed is None:
            p = self._params
            sizes = {"val": p["n_val"], "test": p["n_test"], "train": p["n_train"] or 0}
            rng = np.random.default_rng([self.seed, 3])
            seen: set[str] = set()
            sets: dict[str, list[tuple[str, list[str]]]] = {k: [] for k in sizes}
            attempts = 0
            for key, size in sizes.items():
                while len(sets[key]) < size:
                    attempts += 1
                    if attempts > 200 * sum(sizes.values()) + 10_000:
                        raise DataError(
                            f"reber: could not draw {sum(sizes.values())} distinct strings; "
                            "use smaller n_val / n_test / n_train"
                        )
                    s, legal = embedded_reber_string(rng)
                    if s not in seen:
                        seen.add(s)
                        sets[key].append((s, legal))
            self._fixed = sets
        return self._fixed

    def _encode(self, strings: list[tuple[str, list[str]]], extra: dict[str, Any] | None = None) -> Batch:
        n = len(strings)
        lens = np.array([len(s) - 1 for s, _ in strings], dtype=np.int64)
        t = int(lens.max())
        sym = {c: i for i, c in enumerate(REBER_SYMBOLS)}
        x = np.full((n, t), len(REBER_SYMBOLS), dtype=np.int64)
        y = np.zeros((n, t, len(REBER_SYMBOLS)), dtype=np.float32)
        for r, (s, legal) in enumerate(strings):
            x[r, : len(s) - 1] = [sym[c] for c in s[:-1]]
            for k, nxt in enumerate(legal[:-1]):
                y[r, k, [sym[c] for c in nxt]] = 1.0
        mask = np.arange(t)[None, :] < lens[:, None]
        return Batch(
            x=torch.from_numpy(x),
            y=torch.from_numpy(y),
            mask=torch.from_numpy(mask),
            lengths=torch.from_numpy(lens),
            meta={"strings": [s for s, _ in strings], **(extra or {})},
        )

    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        if self._params["n_train"] is None:
            return self._encode([embedded_reber_string(rng) for _ in range(batch_size)])
        pool = self._fixed_sets()["train"]
        return self._encode([pool[int(i)] for i in rng.integers(0, len(pool), batch_size)])

    def _eval_set(self, split: Split) -> Batch:
        # One stream draws all fixed sets, so that they can be disjoint.
        return self._encode(self._fixed_sets()[split])

    # -- metrics

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        mask = batch.mask if batch.mask is not None else torch.ones(batch.x.shape, dtype=torch.bool)
        step_ok = ((output > 0).float() == batch.y).all(-1) | ~mask
        real = mask.sum()
        bce = F.binary_cross_entropy_with_logits(output, batch.y, reduction="none")
        return {
            "strings_ok": float(step_ok.all(-1).sum()),
            "steps_ok": float((step_ok & mask).sum()),
            "steps": float(real),
            "bce": float(masked_mean(bce.mean(-1), mask) * real),
            "n": float(len(batch)),
        }

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "string_accuracy": sums["strings_ok"] / sums["n"],
            "step_accuracy": sums["steps_ok"] / sums["steps"],
            "bce": sums["bce"] / sums["steps"],
        }

    def render(self, x_row: torch.Tensor) -> list[str]:
        assert self.vocab is not None
        return [s if s != PAD else "" for s in tokens_to_strings(self.vocab, x_row)]

    def baseline(self) -> dict[str, float]:
        return {"string_accuracy": 0.5}
