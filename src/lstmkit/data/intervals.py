"""Conformal calibration of forecast intervals: how far to stretch the model's quantiles.

The quantile head is fitted on training windows, so on new data its intervals come out too narrow
(or too wide). Each scored forecast target tells how much the interval would have had to be
stretched around the median to contain it, its **need**: the distance of the target from the median
over the interval's half on that side. The **spread** applied to new forecasts is the
nominal-share quantile of the needs (split conformal prediction), at the finite-sample level
nominal * (1 + 1/n) with n counted in windows, since the steps of one window share their errors.

**Rolling calibration.** A forecast made at origin t may use every need whose target lies before t:
the validation windows' and, in a rolling-origin backtest, those of earlier test origins that have
been observed by then (for horizons above 1 also the observed first steps of windows still open).
A forecaster in production does the same as new data arrives. Where the errors of the recent past
are larger than the validation period's (a volatile stretch of a stock, an unusual week) the
intervals widen with them instead of staying at the validation period's width. The level adapts
too (adaptive conformal inference, Gibbs & Candes 2021): each observed target raises it if the
interval its window was given missed it and lowers it if not, so that a backtest's coverage is drawn
to the nominal share where a pooled quantile alone widens too slowly (goog: 0.42-0.58 covered at
h = 1 with the pooled quantile, 0.67 with the level adapting; BENCHMARKS.md). Forecasts of the
future use every need the data holds, at the level the backtest's last targets left.

Pure NumPy, no model: :class:`lstmkit.data.forecast.ForecastTask` computes the needs from its
forecasts and applies the spreads.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8
SPREAD_RANGE = (0.25, 10.0)  # a spread outside this says the quantiles are broken, not mis-scaled
ADAPT = 0.1  # gamma of the adaptive level in rolling_spreads (BENCHMARKS.md: 0, 0.05, 0.1, 0.2 measured)


def needs(pred: np.ndarray, true: np.ndarray, median_index: int) -> np.ndarray:
    """(B, h) the factor each target needs: |y - median| over the interval's half on y's side.

    ``pred``: (B, h, Q) sorted quantile forecasts (spread 1); ``true``: (B, h)."""
    med = pred[..., median_index]
    dy = true - med
    half = np.where(dy >= 0, pred[..., -1] - med, med - pred[..., 0])
    return np.abs(dy) / np.maximum(half, EPS * (1.0 + np.abs(med)))


def spread(need: np.ndarray, windows: int, nominal: float) -> float:
    """The conformal spread of the needs ``need`` (any shape) from ``windows`` windows: their
    nominal * (1 + 1/windows) quantile (linear interpolation; a level outside [0, 1] is clipped to
    it), kept within SPREAD_RANGE."""
    f = np.asarray(need, dtype=np.float64).ravel()
    if f.size == 0:
        return 1.0
    level = min(1.0, max(0.0, nominal * (1.0 + 1.0 / max(1, windows))))
    return float(np.clip(np.quantile(f, level), *SPREAD_RANGE))


def rolling_spreads(
    base_need: np.ndarray,
    base_windows: int,
    series: np.ndarray,
    origin: np.ndarray,
    need: np.ndarray,
    nominal: float,
    gamma: float | None = None,
) -> np.ndarray:
    """(B,) the spread of each window (``series[j]``, first forecast step ``origin[j]``) of a backtest:
    from the calibration needs ``base_need`` (``base_windows`` windows, all before every origin) and
    the needs ``need`` (B, h) of the backtest's own targets that lie before the window's origin, in
    the same series (a target at step k of a window with origin o lies at o + k). The windows
    counted are the calibration windows and the backtest windows whose every target lies before.

    The level of the quantile adapts as well (adaptive conformal inference, Gibbs & Candes 2021):
    it starts at ``nominal`` and each target of the series observed before the origin moves it by
    ``gamma / h`` * (missed - (1 - nominal)), where missed is 1 if the target fell outside the
    interval its own window was given. Misses raise the level, hits lower it, so that over a backtest
    the share covered is drawn to the nominal one even where the errors' scale keeps changing (a
    stock's volatile stretch). ``gamma`` 0: the plain rolling split-conformal quantile."""
    g = ADAPT if gamma is None else float(gamma)
    B, h = need.shape
    base = np.asarray(base_need, dtype=np.float64).ravel()
    at = origin[:, None] + np.arange(h)[None, :]  # (B, h): where each backtest target lies
    out = np.full(B, np.nan)
    for j in np.lexsort((origin, series)):  # each series' windows in time order: a target seen before
        same = series == series[j]  # window j's origin belongs to a window whose spread is known
        seen = same[:, None] & (at < origin[j])
        done = int((same & (origin + h <= origin[j])).sum())
        missed = need[seen] > np.broadcast_to(out[:, None], need.shape)[seen]
        out[j] = spread(np.concatenate([base, need[seen]]), base_windows + done, _level(missed, h, nominal, g))
    return out


def next_level(
    series: np.ndarray, need: np.ndarray, spreads: np.ndarray, nominal: float, gamma: float | None = None
) -> float:
    """The adaptive level after every target of a backtest (``rolling_spreads``' windows with the
    spreads it gave them): the level of the next forecast, the future's, averaged over the series."""
    g = ADAPT if gamma is None else float(gamma)
    h = need.shape[1]
    missed = need > spreads[:, None]
    return float(np.mean([_level(missed[series == k].ravel(), h, nominal, g) for k in np.unique(series)]))


def _level(missed: np.ndarray, h: int, nominal: float, g: float) -> float:
    return nominal + g / h * float(np.sum(missed - (1.0 - nominal)))


__all__ = ["ADAPT", "SPREAD_RANGE", "needs", "next_level", "rolling_spreads", "spread"]
