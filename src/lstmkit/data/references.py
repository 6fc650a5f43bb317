"""AutoETS as the reference forecast a ``csv`` run's network corrects (``--reference ets``, and
``ets+seasonal-mean``, the average of the two references).

One AutoETS model (statsforecast, the baseline the backtest compares against) is fitted per series,
once, on the series' data before its first validation origin: what the network itself trains on.
The reference from an origin is that model run over the series up to the origin with the fitted
parameters (statsforecast's ``forward``): its states filtered through the history, nothing fitted
again, so a reference reads only data before its origin, and the backtest's test origins and the
future are forecast by the model the training part chose. Fitting takes ~40 ms on a quarterly
series of 100 points and each origin ~0.05 ms.

A series the model cannot be fitted to (too short, constant, a fit that fails or returns non-finite
values) and seasons above ``baselines.ETS_MAX_SEASON`` (24: ETS carries a state per season step;
statsforecast's AutoETS is then slow and R's forecast::ets refuses it) keep the seasonal-mean
reference; the run says which (``notes``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .baselines import ETS_MAX_SEASON

MIN_FIT = 8  # points of history an AutoETS fit needs here (statsforecast refuses 6 or fewer)


class EtsReference:
    """AutoETS models of a panel's series, by series id; :meth:`forecast` runs one from an origin."""

    def __init__(self, season: int) -> None:
        self.season = int(season)
        self.models: dict[Any, Any] = {}

    @staticmethod
    def usable(season: int) -> bool:
        return 1 <= season <= ETS_MAX_SEASON

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
                model = AutoETS(season_length=self.season).fit(y)
                check = np.asarray(model.forward(y=y, h=1)["mean"], dtype=np.float64)
        except Exception as e:  # a reference must never stop a run: the seasonal mean stands in
            return f"AutoETS failed ({type(e).__name__}: {e})".strip()
        if not np.isfinite(check).all():
            return "AutoETS gave non-finite values"
        self.models[sid] = model
        return None

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


__all__ = ["EtsReference", "MIN_FIT"]
