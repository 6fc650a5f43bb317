"""The baseline forecasts a forecaster is compared against, on rolling origins.

    naive           y_hat[T+k] = y[T]                                  (last value, k = 1..h)
    seasonal_naive  y_hat[T+k] = y[T + k - m * ceil(k / m)]            (same point one season ago)
    autoets         statsforecast's AutoETS (Hyndman's forecast::ets: ETS models chosen by AICc)
    autoarima       statsforecast's AutoARIMA (Hyndman-Khandakar stepwise search)

where y[0..T] is the history (T = n - 1) and m the season length. The two automatic models come
from statsforecast, a well-kept library; we only pick the model per origin and fall back where
it cannot run. statsforecast is imported inside the functions, so importing this module is cheap.

Fallbacks (each reported, per origin, in the result's ``"note"``; "" where the method ran as
named). Times measured on this project's 2-core VM while other jobs were running:

- Long seasons. statsforecast's AutoETS accepts any season but its cost grows with m (one state
  per season step): on a trend + sine + noise series, m = 24 (n = 500) took 1.3 s, m = 48 (n = 700)
  3.0 s, and m = 336 (n = 2000) 67 s with a forecast that missed the noiseless truth by MAE 7.6
  where the sine's amplitude is 3. Its AutoARIMA took 4.4 s at m = 12 (n = 144), 41 s at m = 24
  and 549 s at m = 48. So above ``ETS_MAX_SEASON`` = 24 (R's forecast::ets, which statsforecast
  mirrors, ignores seasons above 24 and points to stlf, the same idea) and ``ARIMA_MAX_SEASON`` = 12
  the model is statsforecast's MSTL: an STL decomposition, the non-seasonal model (AutoETS "ZZN" or
  AutoARIMA) on the seasonally adjusted series, and the last season of the seasonal component added
  back. Same series: m = 24 in 0.2 s (ETS) / 0.9 s (ARIMA), m = 48 in 0.2 s / 1.1 s, m = 336 in
  3.1 s / 4.7 s, MAE 0.06-0.12 against the truth (the direct fits at m = 24 and 48: 0.06-0.11).
  MSTL needs two full seasons of history (as R's mstl); with less, the model is non-seasonal.
- A history not longer than one season: the model is non-seasonal (statsforecast's ETS would drop
  the season silently; we say so).
- A constant history: autoets and autoarima forecast that constant with zero-width intervals
  (nothing is fitted).
- A fit that raises (AutoETS refuses histories of 6 points or fewer: "tiny datasets") or returns
  non-finite values: statsforecast's Naive, with its random-walk intervals (zero width for a
  one-point history).
- seasonal_naive with a history shorter than one season: naive.

Speed (median of 5, the same loaded machine): one AutoETS fit and forecast on the 144-point monthly
airpassengers series (m = 12) takes 0.31 s, one AutoARIMA 1.2 s. The models' ``forecast`` method
is called directly on the NumPy history: the same AutoETS through a StatsForecast DataFrame took
0.58 s.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import DataError

__all__ = [
    "ARIMA_MAX_SEASON",
    "BASELINES",
    "ETS_MAX_SEASON",
    "baseline_forecasts",
    "naive",
    "seasonal_naive",
]

BASELINES = ("naive", "seasonal_naive", "autoets", "autoarima")
ETS_MAX_SEASON = 24  # above this AutoETS runs inside MSTL (see the module docstring)
ARIMA_MAX_SEASON = 12  # above this AutoARIMA runs inside MSTL

_AUTO = {"autoets": "AutoETS", "autoarima": "AutoARIMA"}


def _history(history: Any, name: str = "history") -> np.ndarray:
    y = np.asarray(history, dtype=np.float64)
    if y.ndim != 1:
        raise DataError(f"baselines: {name} must be 1-D (one series), got shape {y.shape}")
    if y.size == 0:
        raise DataError(f"baselines: {name} is empty; a forecast needs at least one past value")
    if not np.isfinite(y).all():
        first = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(f"baselines: {name} holds NaN/inf (first at index {first}); fill missing values first")
    return y


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise DataError(f"baselines: {name} must be an integer >= 1, got {v!r}")
    return int(v)


def naive(history: np.ndarray, h: int) -> np.ndarray:
    """The last value repeated: (h,)."""
    y = _history(history)
    h = _positive_int(h, "h")
    return np.full(h, y[-1])


def seasonal_naive(history: np.ndarray, h: int, season: int) -> np.ndarray:
    """The value one season earlier, repeated season after season: (h,).

    y_hat[T+k] = y[T + k - m * ceil(k / m)], i.e. the last m values cycled. m = 1 is the naive
    forecast; a history shorter than one season (n < m) also gives the naive forecast.
    """
    y = _history(history)
    h = _positive_int(h, "h")
    m = _positive_int(season, "season")
    if y.size < m:
        return np.full(h, y[-1])
    k = np.arange(1, h + 1)
    return y[y.size - 1 + k - m * np.ceil(k / m).astype(np.int64)].copy()


def _naive_with_intervals(y: np.ndarray, h: int, levels: list[Any]) -> dict[str, np.ndarray]:
    """statsforecast's Naive (random-walk intervals); zero width if even that cannot run."""
    try:
        from statsforecast.models import Naive

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = Naive().forecast(y, h=h, level=levels)
        out = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in res.items()}
        if all(np.isfinite(v).all() and v.shape == (h,) for v in out.values()):
            return out
    except Exception:  # a baseline must never crash a backtest
        pass
    mean = np.full(h, y[-1])
    out = {"mean": mean}
    for level in levels:
        out[f"lo-{level}"] = mean.copy()
        out[f"hi-{level}"] = mean.copy()
    return out


def _auto_model(method: str, n: int, season: int) -> tuple[Any, str]:
    """The statsforecast model for one origin and the note saying how it departs from the named one."""
    from statsforecast.models import MSTL, AutoARIMA, AutoETS

    def plain(m: int) -> Any:
        return AutoETS(season_length=m) if method == "autoets" else AutoARIMA(season_length=m)

    name = _AUTO[method]
    limit = ETS_MAX_SEASON if method == "autoets" else ARIMA_MAX_SEASON
    if season == 1:
        return plain(1), ""
    if season <= limit:
        if n <= season:
            return plain(1), f"non-seasonal {name}: history of {n} points is not longer than one season ({season})"
        return plain(season), ""
    if n >= 2 * season:
        trend = AutoETS(model="ZZN") if method == "autoets" else AutoARIMA()
        return (
            MSTL(season_length=season, trend_forecaster=trend),
            f"MSTL + non-seasonal {name}: season {season} is above {name}'s limit here ({limit})",
        )
    return plain(1), (
        f"non-seasonal {name}: season {season} is above {name}'s limit here ({limit}) and the history "
        f"of {n} points is shorter than the two seasons MSTL needs"
    )


def _auto_forecast(
    method: str, y: np.ndarray, h: int, season: int, levels: list[Any]
) -> tuple[dict[str, np.ndarray], str]:
    """One origin of autoets / autoarima: the forecast dict and the note."""
    if np.all(y == y[0]):
        mean = np.full(h, y[0])
        out = {"mean": mean}
        for level in levels:
            out[f"lo-{level}"] = mean.copy()
            out[f"hi-{level}"] = mean.copy()
        return out, "constant history: its value repeated, zero-width intervals"
    note = ""
    try:
        model, note = _auto_model(method, y.size, season)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = model.forecast(y, h=h, level=levels)
        out = {k: np.asarray(res[k], dtype=np.float64).reshape(-1) for k in _keys(levels)}
        if not all(np.isfinite(v).all() and v.shape == (h,) for v in out.values()):
            raise FloatingPointError("the forecast holds NaN/inf")
        return out, note
    except Exception as e:  # a baseline must never crash a backtest
        reason = f"{type(e).__name__}: {e}".strip().rstrip(":")
        prefix = f"{note}; " if note else ""
        note = f"{prefix}naive: {_AUTO[method]} failed on {y.size} points ({reason})"
        return _naive_with_intervals(y, h, levels), note


def _keys(levels: list[Any]) -> list[str]:
    return ["mean"] + [f"{side}-{level}" for level in levels for side in ("lo", "hi")]


def _levels(levels: Sequence[float]) -> list[Any]:
    out: list[Any] = []
    for level in levels:
        v = float(level)
        if not 0 < v < 100:
            raise DataError(f"baselines: interval levels are percentages in (0, 100), got {level!r}")
        out.append(int(v) if v.is_integer() else v)
    return sorted(set(out))


def baseline_forecasts(
    y: np.ndarray,
    origins: Sequence[int],
    h: int,
    season: int,
    methods: Sequence[str] = BASELINES,
    levels: Sequence[float] = (80,),
) -> dict[str, dict[str, np.ndarray]]:
    """Forecasts of every baseline method from every origin.

    Origin o means the method sees y[:o] and forecasts y[o:o+h]; y[o:] is never read, so it may
    hold anything (NaN too), and o = len(y) forecasts the future. 1 <= o <= len(y).

    Returns {method: {"mean": (len(origins), h), "note": (len(origins),) str}} and, for autoets and
    autoarima, "lo-L" / "hi-L": (len(origins), h) for each level L in ``levels`` (percent). A note is
    "" where the method ran as named and otherwise says which fallback ran and why (module docstring).
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise DataError(f"baselines: y must be 1-D (one series), got shape {y.shape}")
    h = _positive_int(h, "h")
    season = _positive_int(season, "season")
    lv = _levels(levels)
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise DataError(f"baselines: unknown method {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    origin_list = [_positive_int(o, "an origin") for o in origins]
    for o in origin_list:
        if o > y.size:
            raise DataError(f"baselines: origin {o} is past the end of the series ({y.size} points); use 1..{y.size}")
    histories = [_history(y[:o], f"y[:{o}]") for o in origin_list]

    out: dict[str, dict[str, np.ndarray]] = {}
    for method in methods:
        keys = _keys(lv) if method in _AUTO else ["mean"]
        arrays = {k: np.empty((len(origin_list), h)) for k in keys}
        notes: list[str] = []
        for i, hist in enumerate(histories):
            note = ""
            if method == "naive":
                res = {"mean": naive(hist, h)}
            elif method == "seasonal_naive":
                res = {"mean": seasonal_naive(hist, h, season)}
                if hist.size < season:
                    note = f"naive: history of {hist.size} points is shorter than one season ({season})"
            else:
                res, note = _auto_forecast(method, hist, h, season, lv)
            for k in keys:
                arrays[k][i] = res[k]
            notes.append(note)
        out[method] = {**arrays, "note": np.array(notes, dtype=str)}
    return out
