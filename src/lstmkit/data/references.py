"""The reference forecasts a ``csv`` run's network corrects: the seasonal ones
(:func:`seasonal_reference`) and AutoETS's (:class:`EtsReference`; ``--reference ets``, and
``ets+seasonal-mean``, the average of the two).

One AutoETS model (statsforecast, the baseline the backtest compares against) is fitted per series,
once, on the series' data before its first validation origin: what the network itself trains on.
The reference from an origin is that model run over the series up to the origin with the fitted
parameters (statsforecast's ``forward``): its states filtered through the history, nothing fitted
again, so a reference reads only data before its origin, and the backtest's test origins and the
future are forecast by the model the training part chose. Fitting takes ~40 ms on a quarterly
series of 100 points and each origin ~0.05 ms.

Seasons above ``baselines.ETS_MAX_SEASON`` (24: ETS carries a state per season step; statsforecast's
AutoETS is then slow and R's forecast::ets refuses it; half-hourly data's 48, weekly data's 52) take
the route R's stlf and the backtest's own baseline take (``lstmkit.data.baselines``): AutoETS without
a season on the series minus its season, the season added back to the forecast. Here the season is
classical decomposition's profile (:func:`season_profile`), taken once from the fitted data, so a
reference is still one pass over the history (the baseline's MSTL would decompose every origin's
history afresh). On taylor (half-hourly, season 48), with this reference averaged with the seasonal
mean, the network's three-seed mean MAE was 449 at h = 1 against 611 from the seasonal mean alone,
and 1207 against 901 at h = 48, where its seeds now agree (BENCHMARKS.md, "Forecasting").

A series the model cannot be fitted to (too short, constant, a fit that fails or returns non-finite
values) keeps the seasonal-mean reference; the run says which (``notes``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .baselines import ETS_MAX_SEASON

MIN_FIT = 8  # points of history an AutoETS fit needs here (statsforecast refuses 6 or fewer)
REFERENCE_SEASONS = 3  # seasons the seasonal-mean reference averages (fewer where the history is shorter)


def seasonal_reference(
    y: np.ndarray, csum: np.ndarray, base: np.ndarray, e: np.ndarray, h: int, m: int, *, naive: bool
) -> np.ndarray:
    """(B, h) the seasonal reference from origins `e` of the series starting at rows `base` of the
    concatenated values `y` (`csum`: their cumulative sums with a leading 0); it reads only rows
    before each origin.

    ``naive``: y[t - m], the value one season back (seasonal naive). Else the seasonal mean: the mean
    of the last season plus the season's profile averaged over up to REFERENCE_SEASONS past seasons
    (each value minus the mean of its season-long block): averaging several seasons halves the noise
    of a one-season copy, which on the noisy short seasonal series of the benchmark (wineind,
    woolyrnq, ausbeer) is 10-35% better than seasonal naive. Without a season (m = 1) both are the
    last value. Each origin must have at least one season before it."""
    k = np.arange(1, h + 1)[None, :]
    back = m * np.ceil(k / m).astype(np.int64)  # (1, h): the same phase, one season back
    snaive = y[base[:, None] + e[:, None] - 1 + k - back]
    if naive or m == 1:
        return snaive
    a = base + e  # absolute row of the origin

    def block_mean(j: np.ndarray) -> np.ndarray:  # mean of the j-th season-long block before the origin
        return (csum[a - (j - 1) * m] - csum[a - j * m]) / m

    seasons = np.minimum(REFERENCE_SEASONS, e // m)  # (B,) at least 1
    total = np.zeros((len(e), h))
    for j in range(1, REFERENCE_SEASONS + 1):
        on = (j <= seasons)[:, None]
        jj = np.minimum(j, seasons)
        rows = a[:, None] - 1 + k - back - (jj[:, None] - 1) * m
        total += np.where(on, y[rows] - block_mean(jj)[:, None], 0.0)
    return block_mean(np.ones_like(e))[:, None] + total / seasons[:, None]


def season_profile(y: np.ndarray, m: int) -> np.ndarray:
    """(m,) the additive season of `y` by phase (row index mod m, from the series' first row), as
    classical decomposition takes it: the deviations from the centred moving average of one season
    (2 x m for even m, which a linear trend passes through exactly), averaged by phase and centred on
    0. `y` needs at least 2m values."""
    w = np.full(m + 1 - m % 2, 1.0 / m)
    if m % 2 == 0:
        w[0] = w[-1] = 0.5 / m
    trend = np.convolve(y, w, mode="valid")
    half = (len(w) - 1) // 2
    phase = np.arange(half, half + len(trend)) % m
    dev = y[half : half + len(trend)] - trend
    prof = np.bincount(phase, weights=dev, minlength=m) / np.maximum(np.bincount(phase, minlength=m), 1)
    return prof - prof.mean()


class _Adjusted:
    """A non-seasonal AutoETS model of a series minus its season (:func:`season_profile`, of the
    fitted data), for seasons above ETS_MAX_SEASON; ``forward`` as statsforecast's models have it."""

    def __init__(self, y: np.ndarray, m: int) -> None:
        from statsforecast.models import AutoETS

        self.profile = season_profile(y, m)
        self.model = AutoETS(season_length=1).fit(y - self._season(0, len(y)))

    def _season(self, start: int, n: int) -> np.ndarray:  # the profile at rows start..start+n-1
        return self.profile[np.arange(start, start + n) % len(self.profile)]

    def forward(self, y: np.ndarray, h: int) -> dict[str, np.ndarray]:
        t = len(y)
        out = np.asarray(self.model.forward(y=y - self._season(0, t), h=h)["mean"], dtype=np.float64)
        return {"mean": out + self._season(t, h)}


class EtsReference:
    """AutoETS models of a panel's series, by series id; :meth:`forecast` runs one from an origin."""

    def __init__(self, season: int) -> None:
        self.season = int(season)
        self.models: dict[Any, Any] = {}

    @property
    def adjusted(self) -> bool:
        """Whether the models are non-seasonal ones of the seasonally adjusted series (:class:`_Adjusted`)."""
        return self.season > ETS_MAX_SEASON

    def fit(self, sid: Any, y: np.ndarray) -> str | None:
        """Fit series `sid` on `y`; None when it worked, else why not (the series keeps the seasonal
        mean)."""
        from statsforecast.models import AutoETS

        y = np.asarray(y, dtype=np.float64)
        if y.size < max(MIN_FIT, 2 * self.season):
            return f"{y.size} points before validation, fewer than {max(MIN_FIT, 2 * self.season)}"
        if np.all(y == y[0]):
            return "constant before validation"
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                if self.adjusted:
                    model: Any = _Adjusted(y, self.season)
                else:
                    model = AutoETS(season_length=self.season).fit(y)
                check = np.asarray(model.forward(y=y, h=1)["mean"], dtype=np.float64)
        except Exception as e:  # a reference must never stop a run: the seasonal mean stands in
            return f"AutoETS failed ({type(e).__name__}: {e})".strip()
        if not np.isfinite(check).all():
            return "AutoETS gave non-finite values"
        self.models[sid] = model
        return None

    def aligned(self, old: Any, new: Any) -> EtsReference:
        """A copy holding the models of the series of panel `new` that start as they did in panel
        `old`, the data they were fitted on (the same first season of values). A model's states and
        season run from its series' first row, so on newer data that starts elsewhere (a file of the
        recent rows only) it would forecast out of phase; those series are fitted afresh on their
        history when first run (:meth:`run`)."""
        out = EtsReference(self.season)
        first = {s.id: s.y[: max(self.season, MIN_FIT)] for s in old.series}
        for s in new.series:
            f = first.get(s.id)
            if s.id in self.models and f is not None and np.array_equal(s.y[: len(f)], f):
                out.models[s.id] = self.models[s.id]
        return out

    def fit_panel(self, panel: Any, ends: list[int], name: str) -> list[str]:
        """Fit every series of `panel` on its values before `ends[j]`; the notes on those that keep
        the seasonal mean ([] when none)."""
        failed = []
        for j, s in enumerate(panel.series):
            why = self.fit(s.id, s.y[: ends[j]])
            if why is not None:
                failed.append(f"{s.id!r}: {why}" if panel.id else why)
        if not failed:
            return []
        listed = "; ".join(failed[:3]) + ("; ..." if len(failed) > 3 else "")
        return [f"{name}: the seasonal mean instead of AutoETS for {len(failed)} series ({listed})"]

    def run(
        self,
        y: np.ndarray,
        offsets: np.ndarray,
        ids: list[Any],
        base: np.ndarray,
        e: np.ndarray,
        h: int,
        fallback: np.ndarray,
        cache: dict[tuple[int, int, int], np.ndarray],
        tried: set[Any],
    ) -> np.ndarray:
        """(B, h) the forecasts from origins `e` of the series starting at rows `base` of the
        concatenated values `y` (series j: rows offsets[j]..offsets[j+1], id ids[j]), each computed
        once (`cache`, by row, origin and h), `fallback`'s rows where a series has no model. A series
        never fitted (newer data with another series) is fitted on its history here, once (`tried`)."""
        out = fallback.copy()
        which = np.searchsorted(offsets, base, side="right") - 1
        for i, (b, ee, j) in enumerate(zip(base.tolist(), e.tolist(), which.tolist())):
            key = (b, ee, h)
            got = cache.get(key)
            if got is None:
                sid = ids[j]
                if sid not in self.models and sid not in tried:
                    tried.add(sid)
                    self.fit(sid, y[b : b + ee])
                got = self.forecast(sid, y[b : b + ee], h)
                if got is None:
                    continue
                cache[key] = got
            out[i] = got
        return out

    def forecast(self, sid: Any, history: np.ndarray, h: int) -> np.ndarray | None:
        """(h,) series `sid`'s fitted model run over `history` (the values before the origin), or None
        where it has no model (or the history is too short to run it)."""
        model = self.models.get(sid)
        if model is None or len(history) < max(2, self.season):
            return None
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = np.asarray(model.forward(y=np.asarray(history, dtype=np.float64), h=h)["mean"], dtype=np.float64)
        return out if out.shape == (h,) and np.isfinite(out).all() else None


__all__ = ["EtsReference", "MIN_FIT", "REFERENCE_SEASONS", "seasonal_reference"]
