"""Time-series forecasting from any CSV file."""

from __future__ import annotations

import csv as csvlib
import hashlib
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Batch, DataError, Split, Task, check_int

SPLIT_FRACTIONS = (0.70, 0.15)  # train, val; the rest is test


def read_csv_columns(path: Path, columns: list[str], delimiter: str = ",") -> dict[str, np.ndarray]:
    """The named columns of a CSV file with a header row, as float64 arrays; DataError on bad input."""
    if not path.exists():
        raise DataError(f"csv file {str(path)!r} does not exist; pass the path of a CSV file with a header")
    if not path.is_file():
        raise DataError(f"csv file {str(path)!r} is not a regular file; pass the path of a CSV file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"csv file {str(path)!r} is not valid UTF-8 (byte {e.start}); convert it to UTF-8"
        ) from None
    rows = list(csvlib.reader(text.splitlines(), delimiter=delimiter))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise DataError(f"csv file {str(path)!r} is empty; it needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"csv file {str(path)!r} has no column {missing[0]!r}; its columns are: {', '.join(header)}"
        )
    where = {c: header.index(c) for c in columns}
    out = {c: np.empty(len(rows) - 1, dtype=np.float64) for c in columns}
    for r, row in enumerate(rows[1:]):
        line = r + 2  # 1-based, after the header
        for c, j in where.items():
            if j >= len(row):
                raise DataError(f"csv file {str(path)!r}, line {line}: no value for column {c!r}; fill it in")
            cell = row[j].strip()
            try:
                v = float(cell)
            except ValueError:
                what = "is empty" if not cell else f"holds {cell!r}, not a number"
                raise DataError(
                    f"csv file {str(path)!r}, line {line}: column {c!r} {what}; "
                    "clean the column or leave it out of target/features"
                ) from None
            if not math.isfinite(v):
                raise DataError(
                    f"csv file {str(path)!r}, line {line}: column {c!r} holds {cell!r} (NaN or inf); "
                    "fill or drop those rows"
                )
            out[c][r] = v
    return out


def detect_season(y: np.ndarray, max_lag: int | None = None) -> int:
    """The seasonal period of `y` by autocorrelation, or 1 when there is none to speak of.

    The series is detrended by a least-squares line and its (biased) autocorrelation r_k computed for
    lags up to `max_lag` (default len(y) // 3). A lag L >= 2 is a candidate when r_L is a local
    maximum, r_L > 0.2, r_L exceeds twice its standard error under Bartlett's formula,
    sqrt((1 + 2 * sum_{k<L} r_k^2) / n), and r_L rises at least 0.1 above the lowest r_k at a smaller
    lag (a real peak, not the slow decay of a trend or random walk). The season is the smallest
    candidate whose r_L is within 80% of the best candidate's, so a multiple of the period loses to
    the period itself. A heuristic: pass the season explicitly when you know it.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    max_lag = min(n // 3 if max_lag is None else max_lag, n - 2)
    if max_lag < 3:
        return 1
    t = np.arange(n, dtype=np.float64)
    r = y - np.polyval(np.polyfit(t, y, 1), t)
    r -= r.mean()
    var = float(r @ r)
    if var <= 1e-12 * max(1.0, float(y @ y)):
        return 1
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(r, size)
    acf = np.fft.irfft(f * np.conj(f), size)[: max_lag + 2] / var
    lags = np.arange(2, max_lag + 1)
    val = acf[lags]
    low = np.minimum.accumulate(acf[1:])[lags - 2]  # lowest r_k over k = 1..L-1
    bartlett = np.sqrt((1.0 + 2.0 * np.cumsum(acf[1:] ** 2)[lags - 2]) / n)
    peak = (val >= acf[lags - 1]) & (val >= acf[lags + 1])
    ok = peak & (val > 0.2) & (val > 2.0 * bartlett) & (val - low >= 0.1)
    if not ok.any():
        return 1
    cand = lags[ok]
    strong = cand[acf[cand] >= 0.8 * acf[cand].max()]
    return int(strong.min())


def seasonal_naive_scale(y_train: np.ndarray, season: int) -> float:
    """MASE's denominator: mean |y[t] - y[t - season]| over the training part."""
    return float(np.mean(np.abs(y_train[season:] - y_train[:-season])))


def forecast_metrics(pred: np.ndarray, true: np.ndarray, scale: float) -> dict[str, float]:
    """MAE, RMSE (target units) and MASE = MAE / scale of forecasts `pred` of `true` (same shape)."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    mae = float(np.mean(np.abs(err)))
    return {"mae": mae, "rmse": float(np.sqrt(np.mean(err**2))), "mase": mae / scale}


class CsvTask(Task):
    """Time-series forecasting: `window` past steps predict the next `horizon` steps of a target column.

    Data: any CSV file with a header row (``csv=PATH``); `target` names the column to forecast and
    `features` (a list or a comma-separated string) any other numeric columns to use as inputs;
    columns not named are ignored. Each step's input vector is [target, *features], normalised by
    the mean and standard deviation of the TRAINING part only (`task.normaliser`). Splits are
    chronological: the first 70% of the rows train, the next 15% validate, the last 15% test; every
    window (inputs and targets) lies inside one split, so each split needs at least
    window + horizon rows.

    Output: (B, horizon) forecasts in normalised units; the loss is their MSE. Metrics in the target's
    own units: `mae` (main), `rmse`, and `mase` = MAE / the in-sample MAE of the seasonal-naive
    forecast y_hat[t] = y[t - season] on the training part (Hyndman & Koehler 2006); MASE < 1 beats
    seasonal naive. `season` is given, or detected by autocorrelation on the training part
    (`detect_season`), 1 (the naive forecast) when no season shows; config() records the season used.
    Baseline: the seasonal-naive forecast itself over each validation window (y_hat[t+k] =
    y[t + k - season * ceil(k / season)], the latest observed value of the same phase).

    Batch.meta["start"]: (B,) row of each window's first step (0 = first data row).
    """

    name: ClassVar[str] = "csv"
    input_type = "vector"
    target = "regress_horizon"
    main_metric = "mae"
    higher_is_better = False

    def __init__(
        self,
        seed: int = 0,
        *,
        csv: str | None = None,
        target: str | None = None,
        features: list[str] | str | None = None,
        window: int = 24,
        horizon: int = 1,
        season: int | None = None,
        delimiter: str = ",",
        sha256: str | None = None,
    ) -> None:
        if csv is None or target is None:
            raise DataError("csv: the task needs csv=PATH and target=COLUMN (--csv F --target COLUMN)")
        if not isinstance(csv, (str, Path)) or not isinstance(target, str):
            raise DataError(f"csv: csv must be a path and target a column name, got {csv!r} and {target!r}")
        if isinstance(features, str):
            features = [f.strip() for f in features.split(",") if f.strip()]
        feats = [f for f in (features or []) if f != target]
        if any(not isinstance(f, str) for f in feats) or len(set(feats)) != len(feats):
            raise DataError(f"csv: features must be distinct column names, got {features!r}")
        window = check_int(self.name, "window", window, minimum=1)
        horizon = check_int(self.name, "horizon", horizon, minimum=1)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise DataError(f"csv: delimiter must be one character, got {delimiter!r}")
        path = Path(csv).expanduser().resolve()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if sha256 is not None and digest is not None and sha256 != digest:
            raise DataError(
                f"csv: file {str(path)!r} differs from the one this task was made with (sha256 mismatch); "
                "use the original file"
            )
        columns = [target, *feats]
        data = read_csv_columns(path, columns, delimiter)
        n = len(data[target])
        n_train, n_val = int(n * SPLIT_FRACTIONS[0]), int(n * SPLIT_FRACTIONS[1])
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        need = window + horizon
        for split, (a, b) in bounds.items():
            if b - a < need:
                raise DataError(
                    f"csv: file {str(path)!r} has {n} data rows, so its {split} part (70/15/15 split) has "
                    f"{b - a}, fewer than window + horizon = {need}; use a smaller window or horizon"
                )
        y_train = data[target][:n_train]
        raw = np.stack([data[c] for c in columns], axis=1)  # (N, I)
        mean = raw[:n_train].mean(0)
        std = raw[:n_train].std(0)
        if std[0] <= 1e-12 * max(1.0, abs(mean[0])):
            raise DataError(
                f"csv: the target {target!r} is constant on the training part; choose a column that varies"
            )
        if season is None:
            season = detect_season(y_train)
        season = check_int(self.name, "season", season, minimum=1, maximum=n_train - 1)
        scale = seasonal_naive_scale(y_train, season)
        if scale <= 0.0:
            raise DataError(
                f"csv: the target {target!r} repeats exactly with season {season} on the training part, "
                "so MASE is undefined; pass another season or another target"
            )
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # constant features stay 0

        super().__init__(
            seed,
            {
                "csv": str(path),
                "target": target,
                "features": feats,
                "window": window,
                "horizon": horizon,
                "season": season,
                "delimiter": delimiter,
                "sha256": digest,
            },
        )
        self.columns = columns
        self.window, self.horizon, self.season = window, horizon, season
        self.input_size = len(columns)
        self.output_size = horizon
        self.bounds = bounds
        self.raw = raw
        self.mase_scale = scale
        self._mean, self._std = mean, std
        self._norm = ((raw - mean) / std).astype(np.float32)
        self.normaliser = self.normaliser_dict()

    def normaliser_dict(self) -> dict[str, Any]:
        """JSON-able: the columns, their training mean and std, the target, the season and MASE's scale."""
        return {
            "columns": list(self.columns),
            "mean": [float(v) for v in self._mean],
            "std": [float(v) for v in self._std],
            "target": self.columns[0],
            "season": self.season,
            "mase_scale": self.mase_scale,
        }

    def denormalise_target(self, values: torch.Tensor | np.ndarray) -> np.ndarray:
        """Target values from normalised to original units."""
        v = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        return v * self._std[0] + self._mean[0]

    # -- data

    def _windows(self, starts: np.ndarray) -> Batch:
        steps = starts[:, None] + np.arange(self.window)[None, :]
        ahead = starts[:, None] + self.window + np.arange(self.horizon)[None, :]
        return Batch(
            x=torch.from_numpy(self._norm[steps]),
            y=torch.from_numpy(self._norm[ahead, 0]),
            meta={"start": torch.from_numpy(starts.astype(np.int64))},
        )

    def _starts(self, split: str) -> np.ndarray:
        a, b = self.bounds[split]
        return np.arange(a, b - self.window - self.horizon + 1)

    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        starts = self._starts("train")
        return self._windows(starts[rng.integers(0, len(starts), batch_size)])

    def _eval_set(self, split: Split) -> Batch:
        return self._windows(self._starts(split))

    # -- metrics

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        err = self.denormalise_target(output) - self.denormalise_target(batch.y)
        return {"abs": float(np.abs(err).sum()), "sq": float((err**2).sum()), "n": float(err.size)}

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        mae = sums["abs"] / sums["n"]
        return {"mae": mae, "rmse": math.sqrt(sums["sq"] / sums["n"]), "mase": mae / self.mase_scale}

    def seasonal_naive(self, starts: np.ndarray) -> np.ndarray:
        """(len(starts), horizon) seasonal-naive forecasts in target units for windows at `starts`."""
        k = np.arange(1, self.horizon + 1)
        last = starts[:, None] + self.window - 1
        idx = last + k[None, :] - self.season * np.ceil(k / self.season).astype(np.int64)[None, :]
        return self.raw[np.clip(idx, 0, None), 0]

    def baseline(self) -> dict[str, float]:
        starts = self._starts("val")
        true = self.raw[starts[:, None] + self.window + np.arange(self.horizon)[None, :], 0]
        return forecast_metrics(self.seasonal_naive(starts), true, self.mase_scale)

    def render(self, x_row: torch.Tensor) -> list[str]:
        v = x_row.detach().double().cpu().numpy().reshape(-1, len(self.columns)) * self._std + self._mean
        if len(self.columns) == 1:
            return [f"{row[0]:.4g}" for row in v]
        return [" ".join(f"{c}={val:.4g}" for c, val in zip(self.columns, row)) for row in v]
