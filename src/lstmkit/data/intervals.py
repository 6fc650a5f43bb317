"""Conformal calibration of forecast intervals: how far to widen the model's quantiles.

The quantile head is fitted on training windows, so on new data its intervals come out too narrow
(or too wide), and often more so on one side than the other. Each scored forecast target tells, for
each side of the interval, how far that side's outer quantile would have had to move out to contain
it, its **needs**: q_lo - y and y - q_hi, divided by the window's scale (the scale the model forecasts
in), so that windows of different levels are comparable. The **spreads** (widenings) applied to new
forecasts are, per side, the quantile of that side's needs at the share the side must hold
((1 + nominal) / 2: 0.9 for the 80% interval): conformalized quantile regression in its asymmetric
form (Romano et al. 2019), at the finite-sample level times (1 + 1/n) with n counted in windows,
since the steps of one window share their errors. A widening may be negative (the side was too
wide), down to MIN_SHARE (3/4) of the model's own distances: a side that few calibration targets
reached is narrowed a little, not to a sliver. With a quarter allowed (until session 15) a side the
validation period happened not to test shrank to almost nothing (airpassengers' 1961 forecast: 0.9
quantiles 5 above medians of 700) and missed 13% of the backtest's targets instead of 10%; at 3/4
the benchmark's per-side misses are 9-11% at h = 1 and the weighted quantile loss 1-2% lower
(BENCHMARKS.md, "Forecasting").
Measured against the alternatives (BENCHMARKS.md, "Coverage"): one factor multiplying both sides'
distances from the median (WQL 0.0376 over 35 default runs), a factor per side (0.0368; it stretched
a window's already wide side by a factor learnt where that side was narrow), a widening per side in
the window's scale (0.0352).

**Rolling calibration.** A forecast made at origin t may use every need whose target lies before t:
the validation windows' and, in a rolling-origin backtest, those of earlier test origins that have
been observed by then (for horizons above 1 also the observed first steps of windows still open).
A forecaster in production does the same as new data arrives. Where the errors of the recent past
are larger than the validation period's (a volatile stretch of a stock, an unusual week) the
intervals widen with them instead of staying at the validation period's width. The levels adapt
too (adaptive conformal inference, Gibbs & Candes 2021): each observed target raises a side's level
if that side of the interval its window was given missed it and lowers it if not, so that a
backtest's coverage is drawn to the nominal share where a pooled quantile alone widens too slowly
(goog h = 1: 0.42-0.58 covered with one pooled spread at a fixed level, 0.75 per side with the
levels adapting; BENCHMARKS.md). Forecasts of the future use every need the data holds, at the
levels the backtest's last targets left.

Pure NumPy, no model: :class:`lstmkit.data.forecast.ForecastTask` computes the needs from its
forecasts and applies the spreads.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8
SPREAD_RANGE = (-10.0, 10.0)  # widenings, in window scales: beyond this the quantiles are broken
MIN_SHARE = 0.75  # a negative widening leaves each quantile at least this share of its distance from the median
ADAPT = 0.1  # gamma of the adaptive level in rolling_spreads (BENCHMARKS.md: 0, 0.05, 0.1, 0.2 measured)


def needs(pred: np.ndarray, true: np.ndarray, median_index: int) -> np.ndarray:
    """(B, h, 2) how far each target lies beyond each side: q_lo - y and y - q_hi (negative inside),
    in the units of ``pred`` (the caller divides by the window's scale).

    A target lies inside the interval widened by (s_lo, s_hi) iff need[..., 0] <= s_lo and
    need[..., 1] <= s_hi. ``pred``: (B, h, Q) sorted quantile forecasts (not widened); ``true``: (B, h)."""
    return np.stack([pred[..., 0] - true, true - pred[..., -1]], axis=-1)


def side_level(nominal: float) -> float:
    """The share of targets each side of a central interval of coverage ``nominal`` must hold: each
    side may miss (1 - nominal) / 2 (0.9 for the 80% interval)."""
    return (1.0 + nominal) / 2.0


def spread(need: np.ndarray, windows: int, level: float) -> float:
    """The conformal widening of one side from its needs ``need`` (any shape) and ``windows`` windows:
    their level * (1 + 1/windows) quantile (linear interpolation; a level outside [0, 1] is clipped
    to it), kept within SPREAD_RANGE; 0 without needs."""
    f = np.asarray(need, dtype=np.float64).ravel()
    if f.size == 0:
        return 0.0
    q = min(1.0, max(0.0, level * (1.0 + 1.0 / max(1, windows))))
    return float(np.clip(np.quantile(f, q), *SPREAD_RANGE))


def spreads(need: np.ndarray, windows: int, levels: np.ndarray | tuple[float, float]) -> np.ndarray:
    """(2,) the spreads of the lower and upper side from needs (..., 2) at their levels."""
    return np.array([spread(need[..., k], windows, float(levels[k])) for k in (0, 1)])


def rolling_spreads(
    base_need: np.ndarray,
    base_windows: int,
    series: np.ndarray,
    origin: np.ndarray,
    need: np.ndarray,
    nominal: float,
    gamma: float | None = None,
) -> np.ndarray:
    """(B, 2) the widenings of each window (``series[j]``, first forecast step ``origin[j]``) of a
    backtest, lower side and upper side: from the calibration needs ``base_need`` (..., 2)
    (``base_windows`` windows, all before every origin) and the needs ``need`` (B, h, 2) of the
    backtest's own targets that lie before the window's origin, in the same series (a target at step
    k of a window with origin o lies at o + k). The windows counted are the calibration windows and
    the backtest windows whose every target lies before.

    Each side's level adapts as well (adaptive conformal inference, Gibbs & Candes 2021): it starts
    at ``side_level(nominal)`` and each target of the series observed before the origin moves it by
    ``gamma / h`` * (missed - (1 - nominal) / 2), where missed is 1 if the target fell beyond that
    side of the interval its own window was given. Misses raise the level, hits lower it, so that
    over a backtest the share covered is drawn to the nominal one even where the errors' scale
    keeps changing (a stock's volatile stretch). ``gamma`` 0: the plain rolling split-conformal
    quantile."""
    g = ADAPT if gamma is None else float(gamma)
    B, h, _ = need.shape
    base = np.asarray(base_need, dtype=np.float64).reshape(-1, 2)
    at = origin[:, None] + np.arange(h)[None, :]  # (B, h): where each backtest target lies
    out = np.full((B, 2), np.nan)
    for j in np.lexsort((origin, series)):  # each series' windows in time order: a target seen before
        same = series == series[j]  # window j's origin belongs to a window whose spreads are known
        seen = same[:, None] & (at < origin[j])
        done = int((same & (origin + h <= origin[j])).sum())
        for k in (0, 1):
            missed = need[..., k][seen] > np.broadcast_to(out[:, None, k], (B, h))[seen]
            level = _level(missed, h, nominal, g)
            out[j, k] = spread(np.concatenate([base[:, k], need[..., k][seen]]), base_windows + done, level)
    return out


def next_levels(
    series: np.ndarray, need: np.ndarray, spreads: np.ndarray, nominal: float, gamma: float | None = None
) -> np.ndarray:
    """(2,) each side's adaptive level after every target of a backtest (``rolling_spreads``' windows
    with the spreads it gave them): the levels of the next forecast, the future's, averaged over the
    series."""
    g = ADAPT if gamma is None else float(gamma)
    h = need.shape[1]
    missed = need > spreads[:, None, :]  # (B, h, 2)
    return np.array(
        [np.mean([_level(missed[series == s, :, k].ravel(), h, nominal, g) for s in np.unique(series)]) for k in (0, 1)]
    )


def _level(missed: np.ndarray, h: int, nominal: float, g: float) -> float:
    miss_share = (1.0 - nominal) / 2.0
    return side_level(nominal) + g / h * float(np.sum(missed - miss_share))


__all__ = [
    "ADAPT",
    "MIN_SHARE",
    "SPREAD_RANGE",
    "needs",
    "next_levels",
    "rolling_spreads",
    "side_level",
    "spread",
    "spreads",
]
