"""The adding problem, in its modern form (default) or its 1997 form."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .base import Batch, SyntheticTask, check_choice, check_int


class AddingTask(SyntheticTask):
    """The adding problem: remember two marked values across a long sequence and output their sum.

    **Modern form** (``form="modern"``, the default; Arjovsky, Shah & Bengio 2016, "Unitary
    Evolution Recurrent Neural Networks", from the authors' code). Every sequence has exactly T
    steps of 2 features: channel 0 a value drawn from U[0, 1], channel 1 a marker that is 1 at one
    uniform position in [0, ceil(T/2)) and at one uniform position in [ceil(T/2), T), else 0. The
    target is X1 + X2, the sum of the two marked values, scored by MSE on the output after the last
    step. Baseline: always predicting 1 gives MSE = Var(X1 + X2) = 2/12 = 1/6 ≈ 0.167 (Le et al.
    2015 print 0.1767; the analytic value is 1/6).

    **1997 form** (``form="1997"``; Hochreiter & Schmidhuber 1997, "Long Short-Term Memory",
    experiment 4). Pairs (value U[-1, 1], marker); the length is uniform in [T, T + T//10], so
    batches are padded at the end and carry `lengths`. One of the first 10 pairs is marked (X1),
    then one of the first T//2 - 1 still unmarked pairs (X2); the markers of the first and last
    pair are -1 unless marked. A marked first pair has its value set to 0 (the paper's rule for X1,
    applied here to whichever marked pair is first so that the target is always the sum of the
    marked values). Target 0.5 + (X1 + X2)/4 at the end only; a sequence is a success when
    |error| < 0.04 (metric `success_rate`). Baseline: always predicting 0.5, whose MSE and success
    rate `baseline()` computes exactly (about 1/24 ≈ 0.04 and 0.154 at T = 100).

    Metrics: `mse` (main, lower is better) and, in the 1997 form, `success_rate`.
    Batch.meta["marker_pos"]: (B, 2) int64 positions of X1 and X2.
    """

    name: ClassVar[str] = "adding"
    input_type = "vector"
    input_size = 2
    target = "regress_last"
    output_size = 1
    main_metric = "mse"
    higher_is_better = False

    def __init__(
        self, seed: int = 0, *, T: int = 100, form: str = "modern", n_val: int = 1000, n_test: int = 2560
    ) -> None:
        form = check_choice(self.name, "form", form, ("modern", "1997"))
        T = check_int(self.name, "T", T, minimum=2 if form == "modern" else 20)
        super().__init__(seed, {"T": T, "form": form, "n_val": n_val, "n_test": n_test})
        self.T = T
        self.form = form

    def _generate(self, n: int, rng: np.random.Generator) -> Batch:
        T = self.T
        rows = np.arange(n)
        if self.form == "modern":
            half = (T + 1) // 2
            values = rng.random((n, T))
            pos = np.stack([rng.integers(0, half, n), rng.integers(half, T, n)], axis=1)
            markers = np.zeros((n, T))
            markers[rows, pos[:, 0]] = 1.0
            markers[rows, pos[:, 1]] = 1.0
            target = values[rows, pos[:, 0]] + values[rows, pos[:, 1]]
            x = np.stack([values, markers], axis=-1)
            lengths = None
        else:
            t_max = T + T // 10
            lens = rng.integers(T, t_max + 1, n)
            values = rng.uniform(-1.0, 1.0, (n, t_max))
            p1 = rng.integers(0, 10, n)
            r = rng.integers(0, T // 2 - 1, n)  # among the first T//2 - 1 pairs other than p1
            p2 = r + (r >= p1)
            pos = np.stack([p1, p2], axis=1)
            markers = np.zeros((n, t_max))
            markers[:, 0] = -1.0
            markers[rows, lens - 1] = -1.0
            markers[rows, p1] = 1.0
            markers[rows, p2] = 1.0
            values[markers[:, 0] == 1.0, 0] = 0.0
            valid = np.arange(t_max)[None, :] < lens[:, None]
            values = np.where(valid, values, 0.0)
            target = 0.5 + (values[rows, p1] + values[rows, p2]) / 4.0
            x = np.stack([values, markers], axis=-1)
            lengths = torch.from_numpy(lens.astype(np.int64))
        return Batch(
            x=torch.from_numpy(x.astype(np.float32)),
            y=torch.from_numpy(target.astype(np.float32)).unsqueeze(1),
            lengths=lengths,
            meta={"marker_pos": torch.from_numpy(pos.astype(np.int64))},
        )

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        err = output[:, 0] - batch.y[:, 0]
        return {
            "se": float((err.double() ** 2).sum()),
            "ok": float((err.abs() < 0.04).sum()),
            "n": float(len(batch)),
        }

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {"mse": sums["se"] / sums["n"]}
        if self.form == "1997":
            out["success_rate"] = sums["ok"] / sums["n"]
        return out

    def render(self, x_row: torch.Tensor) -> list[str]:
        out = []
        for value, marker in x_row.tolist():
            tag = {1.0: " *", -1.0: " |"}.get(marker, "")
            out.append(f"{value:.2f}{tag}")
        return out

    def baseline(self) -> dict[str, float]:
        if self.form == "modern":
            return {"mse": 1.0 / 6.0}
        # Predicting 0.5. X1 is 0 when the first pair is marked as X1 (prob a), X2 when it is marked
        # as X2 (prob q); otherwise each is U[-1, 1] with E[X^2] = 1/3. Both are never 0 at once.
        a = 1.0 / 10.0
        q = (1.0 - a) / (self.T // 2 - 1)
        mse = ((1.0 - a) / 3.0 + (1.0 - q) / 3.0) / 16.0
        # success: |X1 + X2| < 0.16. One uniform: P = 0.16; sum of two: P = c - c^2/4 with c = 0.16.
        c = 0.16
        success = (a + q) * c + (1.0 - a - q) * (c - c * c / 4.0)
        return {"mse": mse, "success_rate": success}
