"""The seasonal period of a series, detected by autocorrelation."""

from __future__ import annotations

import numpy as np


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


# the season a calendar frequency suggests (pandas aliases: the part before any "-" anchor)
FREQ_SEASONS = {"MS": 12, "ME": 12, "M": 12, "QS": 4, "QE": 4, "Q": 4, "W": 52, "D": 7, "B": 5, "h": 24, "H": 24}


def freq_season(freq: str | None) -> int:
    """The natural season of a pandas frequency alias (12 for monthly, 4 quarterly, 7 daily, 5 business
    days, 24 hourly, one day of steps for sub-hourly data such as "30min" -> 48), or 1."""
    if not freq:
        return 1
    base = freq.split("-")[0]
    if base in FREQ_SEASONS:
        return FREQ_SEASONS[base]
    if base.endswith("min") and base[:-3].isdigit() and 1440 % int(base[:-3]) == 0:
        return 1440 // int(base[:-3])
    return 1


def seasonal_period(y: np.ndarray, freq: str | None = None) -> int:
    """The season of `y`: ``detect_season``, or, where that finds none in a short series, the season of
    the calendar frequency when the detrended autocorrelation peaks at that lag above 0.3 (a series
    of four or five seasons is too short for the significance tests of ``detect_season``)."""
    m = detect_season(y)
    p = freq_season(freq)
    y = np.asarray(y, dtype=np.float64)
    if m == 1 and p > 1 and len(y) >= 2 * p + 2:
        t = np.arange(len(y), dtype=np.float64)
        r = y - np.polyval(np.polyfit(t, y, 1), t)
        r -= r.mean()
        var = float(r @ r)
        acf = [float(r[k:] @ r[:-k]) / var if var > 0 else 0.0 for k in (p - 1, p, p + 1)]
        # a real season peaks at its lag; a trend or a random walk only decays (e.g. stock closes
        # on business days have no weekly season)
        if acf[1] > 0.3 and acf[1] > acf[0] and acf[1] > acf[2]:
            return p
    return m
