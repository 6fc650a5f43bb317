"""Forecast metrics: point errors, a scaled error, and scores of quantile forecasts. NumPy only.

Every function takes arrays of any shape -- (origins, horizon) from a backtest, or flat -- and
pools all their points; ``q_pred`` carries one more, last axis of Q quantiles. Let p be the
prediction, y the true value, N the number of points, q_j the quantile levels (j = 1..Q) and p_j
the prediction for level q_j:

    mae    = mean |p - y|
    rmse   = sqrt(mean (p - y)^2)
    mase   = mae / scale,   scale = mase_scale(history, season)  (Hyndman & Koehler 2006)
    smape  = 100 * mean 2|p - y| / (|p| + |y|)                   in [0, 200]; a 0/0 term counts 0
    pinball: rho_q(y, p) = max(q (y - p), (q - 1)(y - p)),       mean over all points and quantiles
    coverage = fraction of points with lo <= y <= hi
    wql    = (1/Q) sum_j [2 sum_t rho_qj(y_t, p_jt) / sum_t |y_t|]

``wql`` is GluonTS's ``mean_wQuantileLoss`` (its Evaluator sums the quantile loss and |y| over all
series and time steps, then averages the quantiles), which for one series equals
utilsforecast's ``scaled_crps`` (the "scaled CRPS" that statsforecast / Nixtla report, after
Rangapuram et al. 2021) up to its eps in the denominator. With quantiles spread evenly over (0, 1)
it estimates the CRPS divided by mean |y|.

True values must be finite: a NaN or inf there is a :class:`DataError` (fill the gaps first).
Non-finite predictions are a ValueError (a model that produced them has a bug worth seeing).

    s = score(median, y_true, scale=mase_scale(history, 12), q_pred=q, quantiles=(0.1, 0.5, 0.9))
    # {"mae": ..., "rmse": ..., "mase": ..., "smape": ..., "coverage_80": ..., "wql": ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import DataError

__all__ = ["coverage", "mae", "mase_scale", "pinball", "rmse", "score", "smape", "wql"]


def _true(true: Any, name: str = "true") -> np.ndarray:
    y = np.asarray(true, dtype=np.float64)
    if y.size == 0:
        raise DataError(f"scoring: {name} is empty; pass at least one true value")
    bad = ~np.isfinite(y)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"scoring: {name} holds {int(bad.sum())} NaN/inf value(s) (first at index {where}); "
            "fill or drop missing targets before scoring"
        )
    return y


def _pred(pred: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    if p.shape != shape:
        raise ValueError(f"scoring: {name} has shape {p.shape} but true has shape {shape}; they must match")
    if not np.isfinite(p).all():
        raise ValueError(f"scoring: {name} holds {int((~np.isfinite(p)).sum())} NaN/inf value(s)")
    return p


def _quantiles(q_pred: Any, true: np.ndarray, quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    qs = np.asarray(quantiles, dtype=np.float64).reshape(-1)
    if qs.size == 0 or not ((qs > 0) & (qs < 1)).all():
        raise ValueError(f"scoring: quantiles must be a non-empty list of levels in (0, 1), got {list(qs)}")
    q = _pred(q_pred, true.shape + (qs.size,), "q_pred (shape of true + (number of quantiles,))")
    return q, qs


def mae(pred: Any, true: Any) -> float:
    """Mean absolute error, mean |p - y|."""
    y = _true(true)
    p = _pred(pred, y.shape, "pred")
    return float(np.mean(np.abs(p - y)))


def rmse(pred: Any, true: Any) -> float:
    """Root mean squared error, sqrt(mean (p - y)^2)."""
    y = _true(true)
    p = _pred(pred, y.shape, "pred")
    return float(np.sqrt(np.mean((p - y) ** 2)))


def mase_scale(history: np.ndarray, season: int) -> float:
    """The MASE denominator: mean |y[t] - y[t - m]| over the in-sample history, t = m .. n-1.

    That is the in-sample MAE of the seasonal-naive forecast with season m (m = 1: the naive
    forecast). When the history is too short for the season (n <= m) it falls back to m = 1.
    Returns NaN, not an error, where the scale is undefined: a history of one point, or one whose
    differences are all zero (a constant series, or one that repeats its season exactly) -- so
    ``score`` then reports ``mase`` as NaN and the other metrics as usual.
    """
    y = _true(history, "history").reshape(-1)
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1:
        raise DataError(f"scoring: season must be an integer >= 1, got {season!r}")
    m = int(season) if y.size > season else 1
    if y.size <= m:
        return math.nan
    s = float(np.mean(np.abs(y[m:] - y[:-m])))
    return s if s > 0 else math.nan


def smape(pred: Any, true: Any) -> float:
    """Symmetric MAPE in percent: 100 * mean 2|p - y| / (|p| + |y|), in [0, 200].

    A point where p = y = 0 (so |p| + |y| = 0) counts as 0, a perfect forecast, not as NaN.
    """
    y = _true(true)
    p = _pred(pred, y.shape, "pred")
    den = np.abs(p) + np.abs(y)
    num = 2.0 * np.abs(p - y)
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * np.mean(terms))


def pinball(q_pred: Any, true: Any, quantiles: Sequence[float]) -> float:
    """Mean pinball (quantile) loss over all points and quantiles.

    rho_q(y, p) = max(q (y - p), (q - 1)(y - p)): under-prediction costs q per unit, over-prediction
    1 - q. ``q_pred`` has the shape of ``true`` plus a last axis of len(quantiles).
    """
    y = _true(true)
    q, qs = _quantiles(q_pred, y, quantiles)
    d = y[..., None] - q  # (..., Q)
    return float(np.mean(np.maximum(qs * d, (qs - 1.0) * d)))


def coverage(lo: Any, hi: Any, true: Any) -> float:
    """Fraction of true values inside the closed interval [lo, hi].

    A point whose bounds cross (lo > hi) is not covered.
    """
    y = _true(true)
    a = _pred(lo, y.shape, "lo")
    b = _pred(hi, y.shape, "hi")
    return float(np.mean((a <= y) & (y <= b)))


def wql(q_pred: Any, true: Any, quantiles: Sequence[float]) -> float:
    """Weighted quantile loss, the scaled-CRPS estimate (GluonTS mean_wQuantileLoss).

    wql = (1/Q) sum_j [2 sum_t rho_qj(y_t, p_jt) / sum_t |y_t|], sums over all points given.
    NaN where sum |y| = 0 (all true values zero): the weighting is undefined there.
    """
    y = _true(true)
    q, qs = _quantiles(q_pred, y, quantiles)
    norm = float(np.sum(np.abs(y)))
    if norm == 0:
        return math.nan
    d = (y[..., None] - q).reshape(-1, qs.size)  # (N, Q)
    loss = np.maximum(qs * d, (qs - 1.0) * d).sum(axis=0)  # (Q,)
    return float(np.mean(2.0 * loss / norm))


def _level_key(lo_q: float, hi_q: float) -> str:
    width = round(100.0 * (hi_q - lo_q), 6)
    return f"coverage_{width:g}"


def score(
    pred_median: Any,
    true: Any,
    *,
    scale: float,
    q_pred: Any = None,
    quantiles: Sequence[float] | None = None,
    interval: tuple[float, float] = (0.1, 0.9),
) -> dict[str, float]:
    """All metrics of one forecast (or one backtest) in a dict.

    Keys: ``mae``, ``rmse``, ``mase`` (= mae / scale; NaN where scale is NaN or not positive, see
    :func:`mase_scale`), ``smape``; and where ``q_pred`` is given, ``coverage_W`` of the interval
    between the quantiles ``interval`` (W its width in percent: (0.1, 0.9) gives ``coverage_80``)
    and ``wql``. The interval's two levels must be among ``quantiles``.
    """
    y = _true(true)
    out = {"mae": mae(pred_median, y), "rmse": rmse(pred_median, y)}
    s = float(scale)
    out["mase"] = out["mae"] / s if math.isfinite(s) and s > 0 else math.nan
    out["smape"] = smape(pred_median, y)
    if q_pred is None:
        return out
    if quantiles is None:
        raise ValueError("scoring: q_pred was given without quantiles; pass the quantile levels of its last axis")
    q, qs = _quantiles(q_pred, y, quantiles)
    lo_q, hi_q = float(interval[0]), float(interval[1])
    if not lo_q < hi_q:
        raise ValueError(f"scoring: interval must be (lower, upper) quantile levels with lower < upper, got {interval}")
    idx = []
    for level in (lo_q, hi_q):
        hit = np.flatnonzero(np.isclose(qs, level, rtol=0.0, atol=1e-9))
        if hit.size == 0:
            raise ValueError(
                f"scoring: interval level {level} is not among the quantiles {list(qs)}; "
                "pass an interval made of two of them"
            )
        idx.append(int(hit[0]))
    out[_level_key(lo_q, hi_q)] = coverage(q[..., idx[0]], q[..., idx[1]], y)
    out["wql"] = wql(q, y, qs.tolist())
    return out
