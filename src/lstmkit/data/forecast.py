"""Forecasting as forecasters do it: many series, dates, quantiles, a rolling-origin backtest.

(One file of about 760 lines: it is one class, the task, whose windows, scaling, splits, metrics and
forecasts of the future all read the same per-window arrays; split up, each part would reach into
the others' private state.)

:class:`ForecastTask` (the ``csv`` task) reads long-format data (``read_panel``: one row per series
and date) and trains ONE global LSTM on windows of every series. Each window is

    L observed steps (the history) followed by h future steps (the forecast period),

one sequence of L + h steps, so the model is the plain :class:`lstmkit.models.SequenceModel` with a
per-step head (target kind ``regress_steps``) and everything built for it (explorer, compression,
ONNX, the NumPy runtime) works on forecasting runs. The inputs of step t are

    [y_t scaled (0 in the future), a future flag, the seasonal reference r_t scaled,
     past covariates (0 in the future), future-known covariates, calendar features]

where r_t is y_{t-m} at observed steps and the reference forecast at future step k (m the season):
with ``reference="seasonal-mean"`` the last season's mean plus the season's profile averaged over
up to 3 seasons, with ``"seasonal-naive"`` y_{T+k-m*ceil(k/m)} (without a season, m = 1, both are
the last value), with ``"ets"`` AutoETS's forecast (fitted on each series' training part; for
seasons above 24 a non-seasonal AutoETS of the seasonally adjusted series:
:mod:`lstmkit.data.references`), with ``"ets+seasonal-mean"`` the average of the last two. The
default ``"auto"`` is ``ets+seasonal-mean`` for panels of up to AUTO_ETS_SERIES series (AutoETS
costs ~0.1 s a series to fit, again when a run is loaded) and ``seasonal-mean`` beyond
(BENCHMARKS.md, "Forecasting": on the short benchmark series the average's geometric-mean MAE beat
the seasonal mean's by 4-5% and AutoETS's alone by 4% at h = season). The head's Q outputs at
future step k are quantiles of (y_{T+k} - r_{T+k}) in the window's scale: the network learns a
correction of a baseline every forecaster checks first, which is also what the untrained network
forecasts.

Scaling is per window (``scaling``), so a series that leaves its training range is forecast as well
as one that does not:

* ``mean`` (default): location 0, scale = the window's mean absolute value (DeepAR's mean scaling);
* ``last``: location = the last observed value, scale = the mean absolute one-step change inside
  the window (the naive forecast's in-window error);
* ``revin``: location, scale = the window's mean and standard deviation (RevIN, Kim et al. 2022).

BENCHMARKS.md ("Forecasting") gives the measurements behind the default.

Splits are by time, per series, at the end of each series: the last ``backtest`` origins (every
``step`` steps) are the test set, whose targets the model never trains on; the ``val_origins``
before them are the validation set (early stopping); training windows have all their targets
before the first validation target. Metrics: ``mae`` (main), ``rmse``, ``mase`` (scale: the
in-sample seasonal-naive MAE of the series' data before its first test origin), ``smape``,
``coverage`` of the outer quantile pair, ``wql`` (weighted quantile loss, a CRPS estimate).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from . import intervals
from .base import Batch, DataError, Split, Task, check_choice, check_int
from .baselines import ETS_MAX_SEASON
from .references import EtsReference, seasonal_reference
from .season import seasonal_period
from .series import Panel, Series, calendar_features, calendar_names, read_panel

SCALINGS = ("last", "revin", "mean")
REFERENCES = ("auto", "seasonal-mean", "seasonal-naive", "ets", "ets+seasonal-mean")
AUTO_ETS_SERIES = 50  # reference "auto": ets+seasonal-mean for at most this many series, else seasonal-mean
MIN_WINDOW = 24  # the default window's floor, in steps (plan_lengths)
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
FILLS = ("interpolate", "ffill", "zero", "error")
EPS = 1e-8


# ----------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class Plan:
    """The lengths a task works with, chosen from the data when not given."""

    season: int
    horizon: int
    window: int
    backtest: int
    step: int
    val_origins: int
    val_step: int = 1


def plan_lengths(
    n_min: int,
    y_for_season: np.ndarray,
    *,
    season: int | None,
    horizon: int | None,
    window: int | None,
    backtest: int | None,
    step: int,
    freq: str | None = None,
) -> Plan:
    """Season, horizon, window and backtest size for series of at least `n_min` points.

    Season: detected by autocorrelation (``seasonal_period``, helped by the dates' frequency `freq`)
    when not given. Horizon: one season, or 8 steps without one, at most a fifth of the shortest
    series. Window: two seasons or two horizons, whichever is longer, at least MIN_WINDOW = 24 steps
    (on the benchmark's quarterly series 16 beat 8, and 24 beat 16: BENCHMARKS.md), shrunk (never
    below one season) until each series keeps at least ~4 training windows. Backtest: 12 origins,
    fewer for short series (a tenth of the shortest series, at least 1). Validation: as many
    origins as the backtest, fewer for short series (a fifteenth of the shortest series, at least
    1), spaced so that they span up to a tenth of the shortest series: origins spread over a longer
    stretch (e.g. every time of day of half-hourly data) calibrate the intervals and pick the
    checkpoint better than a few neighbouring ones.
    """
    if season is None:
        season = seasonal_period(y_for_season, freq) if len(y_for_season) >= 8 else 1
    if horizon is None:
        horizon = season if season > 1 else 8
        horizon = max(1, min(horizon, n_min // 5))
    if backtest is None:
        backtest = max(1, min(12, n_min // 10))
    val = max(1, min(backtest, n_min // 15))
    val_step = max(1, n_min // (10 * val)) if val > 1 else 1
    reserved = horizon + (backtest - 1) * step + horizon + (val - 1) * val_step  # test span + validation span
    if window is None:
        window = max(2 * season, 2 * horizon, MIN_WINDOW)
        room = n_min - reserved - horizon - 3  # ~4 training windows at least
        window = max(min(window, room), season, 2)
    return Plan(
        season=season, horizon=horizon, window=window, backtest=backtest, step=step, val_origins=val, val_step=val_step
    )


# ----------------------------------------------------------------------------- the task


class ForecastTask(Task):
    """Global LSTM forecasting of one or many series with quantiles; see the module docstring.

    Data: ``csv=PATH`` in long format; ``target`` the column to forecast; ``date`` the date column
    (optional: without it rows are in time order); ``id`` the series column (optional: one series);
    ``features`` past covariates; ``future_features`` covariates known for the forecast period;
    ``calendar`` adds features derived from the dates; ``fill`` the policy for missing values.
    """

    name: ClassVar[str] = "csv"
    input_type = "vector"
    target = "regress_steps"
    main_metric = "mae"
    higher_is_better = False

    def __init__(
        self,
        seed: int = 0,
        *,
        csv: str | None = None,
        target: str | None = None,
        date: str | None = None,
        id: str | None = None,
        features: list[str] | str | None = None,
        future_features: list[str] | str | None = None,
        calendar: bool = False,
        fill: str = "interpolate",
        window: int | None = None,
        horizon: int | None = None,
        season: int | None = None,
        backtest: int | None = None,
        step: int = 1,
        quantiles: list[float] | str | None = None,
        scaling: str = "mean",
        reference: str = "auto",
        delimiter: str = ",",
        sha256: str | None = None,
    ) -> None:
        if csv is None or target is None:
            raise DataError("csv: the task needs csv=PATH and target=COLUMN (--csv F --target COLUMN)")
        if not isinstance(csv, (str, Path)) or not isinstance(target, str):
            raise DataError(f"csv: csv must be a path and target a column name, got {csv!r} and {target!r}")
        feats = _names("features", features)
        futs = _names("future_features", future_features)
        qs = _quantiles(quantiles)
        scaling = check_choice(self.name, "scaling", scaling, SCALINGS)
        reference = check_choice(self.name, "reference", reference, REFERENCES)
        fill = check_choice(self.name, "fill", fill, FILLS)
        step = check_int(self.name, "step", step, minimum=1)
        for k, v in (("window", window), ("horizon", horizon), ("season", season), ("backtest", backtest)):
            if v is not None:
                check_int(self.name, k, v, minimum=1)
        path = Path(csv).expanduser().resolve()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if sha256 is not None and digest is not None and sha256 != digest:
            raise DataError(
                f"csv: file {str(path)!r} differs from the one this task was made with (sha256 mismatch); "
                "use the original file"
            )
        panel = read_panel(
            path,
            target=target,
            date=date,
            id=id,
            features=feats,
            future_features=futs,
            fill=fill,
            delimiter=delimiter,
        )
        self.panel = panel
        lengths = [len(s.y) for s in panel.series]
        longest = panel.series[int(np.argmax(lengths))]
        plan = plan_lengths(
            min(lengths),
            # the first 70% of the longest series: never a test target (the test span is at most 30%)
            longest.y[: max(8, len(longest.y) * 7 // 10)],
            season=season,
            horizon=horizon,
            window=window,
            backtest=backtest,
            step=step,
            freq=panel.freq,
        )
        self.plan = plan
        self._given = {"season": season is not None, "window": window is not None, "horizon": horizon is not None}
        self.season, self.horizon, self.window = plan.season, plan.horizon, plan.window
        if self.window < self.season:
            raise DataError(
                f"csv: window {self.window} is shorter than the season {self.season}; "
                f"pass --window {self.season} or more"
            )
        val_span = (plan.val_origins - 1) * plan.val_step
        need = self.window + self.horizon + val_span + self.horizon + (plan.backtest - 1) * step
        for s in panel.series:
            if len(s.y) < need:
                who = f"series {s.id!r}" if panel.id else "the series"
                raise DataError(
                    f"csv: {who} has {len(s.y)} rows, fewer than window + horizon + validation + backtest = "
                    f"{need} ({self.window} + {self.horizon} + {val_span + self.horizon} + "
                    f"{(plan.backtest - 1) * step}); use a smaller --window, --horizon or --backtest"
                    + (", or drop that series" if panel.id else "")
                )
        self.quantiles = qs
        self.scaling = scaling
        self.reference = reference
        if reference == "auto":  # the reference in use (the config keeps "auto")
            self.reference = "ets+seasonal-mean" if len(panel.series) <= AUTO_ETS_SERIES else "seasonal-mean"
        self.calendar = bool(calendar)
        self.cal_names = calendar_names(panel.freq) if self.calendar else []
        self.n_past, self.n_future = len(feats), len(futs)
        self.input_size = 3 + self.n_past + self.n_future + len(self.cal_names)
        self.output_size = len(qs)
        # one long array per quantity, series one after another
        self._offsets = np.cumsum([0] + lengths)
        self._y = np.concatenate([s.y for s in panel.series]).astype(np.float64)
        self._csum = np.concatenate([[0.0], np.cumsum(self._y)])
        total = int(self._offsets[-1])
        self._past = np.concatenate([s.past for s in panel.series]).reshape(total, self.n_past)
        self._fut = np.concatenate([s.future for s in panel.series]).reshape(total, self.n_future)
        self._cal: np.ndarray | None = None
        if self.calendar:
            self._cal = np.concatenate([calendar_features(s.dates, panel.freq) for s in panel.series])
        # origins: e = index (within the series) of the first forecast step
        self._test_e: list[np.ndarray] = []
        self._val_e: list[np.ndarray] = []
        self._train_last_e: list[int] = []
        self.mase_scales = np.empty(len(lengths))
        for j, n in enumerate(lengths):
            test = n - self.horizon - step * np.arange(plan.backtest)[::-1]
            val = test[0] - self.horizon - plan.val_step * np.arange(plan.val_origins)[::-1]
            self._test_e.append(test)
            self._val_e.append(val)
            self._train_last_e.append(int(val[0]) - self.horizon)  # the last training window's origin
            hist = panel.series[j].y[: int(test[0])]
            m = self.season if len(hist) > self.season else 1
            sc = float(np.mean(np.abs(hist[m:] - hist[:-m])))
            self.mase_scales[j] = sc if sc > 0 else float(np.mean(np.abs(hist))) + EPS
        self._ets: EtsReference | None = None  # reference "ets" / "ets+seasonal-mean" (lstmkit.data.references)
        self._ref_cache: dict[tuple[int, int, int], np.ndarray] = {}  # (row, origin, h) -> AutoETS's forecast
        self._ets_tried: set[Any] = set()
        self._ets_notes: list[str] = []
        if self.reference.startswith("ets"):
            self._fit_ets()
        counts = [e - self.window + 1 for e in self._train_last_e]
        self._train_series = np.repeat(np.arange(len(lengths)), counts)
        self._train_e = np.concatenate([np.arange(self.window, e + 1) for e in self._train_last_e])
        self.notes = list(panel.notes) + self._ets_notes
        super().__init__(
            seed,
            {
                "csv": str(path),
                "target": target,
                "date": date,
                "id": id,
                "features": feats,
                "future_features": futs,
                "calendar": self.calendar,
                "fill": fill,
                "window": self.window,
                "horizon": self.horizon,
                "season": self.season,
                "backtest": plan.backtest,
                "step": step,
                "quantiles": list(qs),
                "scaling": scaling,
                "reference": reference,
                "delimiter": delimiter,
                "sha256": digest,
            },
        )
        self.spread = np.zeros(2)  # the intervals' widenings, lower and upper side (calibrate)
        # (series, origin) -> that window's (2,) widenings (calibrate_backtest)
        self._window_spread: dict[tuple[int, int], np.ndarray] = {}
        self._val_need = np.zeros((0, self.horizon, 2))
        self.spread_calibrated: np.ndarray | None = None
        self.normaliser = self.normaliser_dict()

    # -- description

    def normaliser_dict(self) -> dict[str, Any]:
        """JSON-able: what a reader needs to turn model outputs into forecasts (saved as normaliser.json)."""
        return {
            "kind": "per_window",
            "scaling": self.scaling,
            "season": self.season,
            "window": self.window,
            "horizon": self.horizon,
            "quantiles": list(self.quantiles),
            "inputs": self.input_names(),
            "freq": self.panel.freq,
        }

    def describe(self) -> list[str]:
        p, plan = self.panel, self.plan
        given = self._given
        n = len(p.series)
        lines = [
            f"{n} series"
            + (f" ({p.id})" if p.id else "")
            + f", {sum(len(s.y) for s in p.series)} rows"
            + (f", frequency {p.freq}" if p.freq else ", no dates"),
            f"season {self.season} ({'given' if given['season'] else 'detected'}), "
            f"window {self.window}, horizon {self.horizon}, quantiles {', '.join(f'{q:g}' for q in self.quantiles)}",
            f"backtest: the last {plan.backtest} origins of each series (step {plan.step}) are the test set, "
            f"{plan.val_origins} before them validate (step {plan.val_step}); scaling {self.scaling}, "
            f"reference {self.reference}",
        ]
        return lines + list(self.notes)

    def input_names(self) -> list[str]:
        p = self.panel
        return [p.target, "future", f"{p.target}[t-{self.season}]", *p.features, *p.future_features, *self.cal_names]

    @property
    def median_index(self) -> int:
        return self.quantiles.index(0.5)

    # -- windows

    def _windows(self, series: np.ndarray, e: np.ndarray, *, with_targets: bool = True) -> Batch:
        """Windows of series `series[j]` whose first forecast step is `e[j]` (index within the series)."""
        L, h, m = self.window, self.horizon, self.season
        base = self._offsets[series]
        obs = base[:, None] + e[:, None] - L + np.arange(L)[None, :]  # (B, L) absolute rows
        y_obs = self._y[obs]
        lag = obs - m
        lag_ok = lag >= base[:, None]
        ref_obs = np.where(lag_ok, self._y[np.where(lag_ok, lag, obs)], y_obs)
        loc, scale = self._scale(y_obs)
        B = len(e)
        x = np.zeros((B, L + h, self.input_size), np.float32)
        x[:, :L, 0] = (y_obs - loc[:, None]) / scale[:, None]
        x[:, L:, 1] = 1.0
        ref_fut_v = (self._reference(base, e, h) - loc[:, None]) / scale[:, None]
        x[:, :L, 2] = (ref_obs - loc[:, None]) / scale[:, None]
        x[:, L:, 2] = ref_fut_v
        c = 3
        if self.n_past:
            v = self._past[obs]  # (B, L, P)
            mu, sd = v.mean(1, keepdims=True), v.std(1, keepdims=True)
            x[:, :L, c : c + self.n_past] = (v - mu) / np.where(sd > EPS, sd, 1.0)
            c += self.n_past
        allrows = base[:, None] + e[:, None] - L + np.arange(L + h)[None, :]
        if self.n_future:
            v = self._fut[allrows]
            mu, sd = v.mean(1, keepdims=True), v.std(1, keepdims=True)
            x[:, :, c : c + self.n_future] = (v - mu) / np.where(sd > EPS, sd, 1.0)
            c += self.n_future
        if self._cal is not None:
            x[:, :, c:] = self._cal[allrows]
        meta = {
            "series": torch.from_numpy(series.astype(np.int64)),
            "origin": torch.from_numpy(e.astype(np.int64)),
            "loc": torch.from_numpy(loc),
            "scale": torch.from_numpy(scale),
            "ref": torch.from_numpy(ref_fut_v.astype(np.float64)),
        }
        if with_targets:
            fut = base[:, None] + e[:, None] + np.arange(h)[None, :]
            true = self._y[fut]
            meta["true"] = torch.from_numpy(true)
            y = ((true - loc[:, None]) / scale[:, None] - ref_fut_v).astype(np.float32)
        else:
            y = np.zeros((B, h), np.float32)
        return Batch(x=torch.from_numpy(x), y=torch.from_numpy(y), meta=meta)

    def _reference(self, base: np.ndarray, e: np.ndarray, h: int) -> np.ndarray:
        """(B, h) the reference forecast the model corrects, from origins `e` of the series starting
        at rows `base` (it reads only rows before each origin): :meth:`_seasonal_reference`, or with
        ``ets`` AutoETS's forecast (:mod:`lstmkit.data.references`; the seasonal mean where a series has
        no model), with ``ets+seasonal-mean`` the average of the two."""
        seasonal = self._seasonal_reference(base, e, h)
        if self._ets is None:
            return seasonal
        ets = self._ets_reference(base, e, h, seasonal)
        return ets if self.reference == "ets" else 0.5 * (ets + seasonal)

    def _seasonal_reference(self, base: np.ndarray, e: np.ndarray, h: int) -> np.ndarray:
        """(B, h) ``seasonal-naive`` for that reference, else ``seasonal-mean``
        (:func:`lstmkit.data.references.seasonal_reference`)."""
        naive = self.reference == "seasonal-naive"
        return seasonal_reference(self._y, self._csum, base, e, h, self.season, naive=naive)

    def _fit_ets(self) -> None:
        """Fit the AutoETS reference of every series on its data before its first validation origin;
        the series it cannot serve keep the seasonal mean (said in ``_ets_notes``)."""
        self._ets = EtsReference(self.season)
        ends = [int(v[0]) for v in self._val_e]
        failed = self._ets.fit_panel(self.panel, ends, f"reference {self.reference}")
        if self._ets.adjusted and self._ets.models:  # said only where some series use it
            self._ets_notes.append(
                f"reference {self.reference}: season {self.season} is above AutoETS's limit here "
                f"({ETS_MAX_SEASON}), so AutoETS forecasts the seasonally adjusted series and the season is added back"
            )
        self._ets_notes += failed

    def _ets_reference(self, base: np.ndarray, e: np.ndarray, h: int, fallback: np.ndarray) -> np.ndarray:
        """(B, h) AutoETS's forecasts from origins `e` of the series starting at rows `base`
        (:meth:`lstmkit.data.references.EtsReference.run`)."""
        assert self._ets is not None
        ids = [s.id for s in self.panel.series]
        return self._ets.run(self._y, self._offsets, ids, base, e, h, fallback, self._ref_cache, self._ets_tried)

    def window_values(self, batch: Batch) -> np.ndarray:
        """(B, window) the observed target values of each window of `batch`, in the target's units."""
        scaled = batch.x[:, : self.window, 0].double().numpy()
        return scaled * batch.meta["scale"].numpy()[:, None] + batch.meta["loc"].numpy()[:, None]

    def _scale(self, y_obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.scaling == "last":
            loc = y_obs[:, -1].copy()
            scale = np.mean(np.abs(np.diff(y_obs, axis=1)), axis=1) if y_obs.shape[1] > 1 else np.abs(loc)
        elif self.scaling == "revin":
            loc, scale = y_obs.mean(1), y_obs.std(1)
        else:
            loc, scale = np.zeros(len(y_obs)), np.mean(np.abs(y_obs), axis=1)
        floor = EPS * (1.0 + np.abs(loc)) + np.mean(np.abs(y_obs), axis=1) * 1e-3
        return loc, np.maximum(scale, floor)

    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        pick = rng.integers(0, len(self._train_e), batch_size)
        return self._windows(self._train_series[pick], self._train_e[pick])

    def _eval_set(self, split: Split) -> Batch:
        origins = self._test_e if split == "test" else self._val_e
        series = np.concatenate([np.full(len(o), k) for k, o in enumerate(origins)])
        return self._windows(series, np.concatenate(origins))

    # -- loss, predictions, metrics

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Pinball (quantile) loss of the forecast steps, averaged over steps and quantiles."""
        self._check_output(output, batch)
        pred = output[:, self.window :, :]
        y = batch.y.to(output.device, output.dtype).unsqueeze(-1)
        q = torch.tensor(self.quantiles, dtype=output.dtype, device=output.device)
        err = y - pred
        return torch.maximum(q * err, (q - 1) * err).mean()

    def expected_output_shape(self, batch: Batch) -> tuple[int, ...]:
        return (len(batch), int(batch.x.shape[1]), self.output_size)

    def to_values(self, output: torch.Tensor | np.ndarray, batch: Batch, spread: float | None = None) -> np.ndarray:
        """Model outputs -> (B, horizon, Q) forecasts in the target's units, quantiles sorted and widened
        by `spread` (default: the calibrated widenings, one for the quantiles below the median and one
        for those above: each backtest window's own after ``calibrate_backtest``, else
        ``self.spread``). A widening is in the window's scale (the scaled units the model forecasts
        in): the outer quantile of a side moves out by it, the inner ones by their share of the
        distance in level; a negative one moves them in, to no less than ``intervals.MIN_SHARE`` of
        their own distance from the median."""
        out = output.detach().double().cpu().numpy() if isinstance(output, torch.Tensor) else np.asarray(output)
        out = out[:, self.window :, :] + batch.meta["ref"].numpy()[:, :, None]
        out = np.sort(out, axis=-1)  # no crossing quantiles
        if spread is None:
            keys = zip(batch.meta["series"].tolist(), batch.meta["origin"].tolist())
            f = np.array([self._window_spread.get(k, self.spread) for k in keys]) if self._window_spread else None
            f = np.tile(np.asarray(self.spread, dtype=np.float64), (len(out), 1)) if f is None else f
        else:
            f = np.full((len(out), 2), float(spread))
        if np.any(f != 0.0):  # (B, 2) widenings in the window's scale: lower side, upper side
            mi = self.median_index
            med = out[..., mi : mi + 1]
            tau = np.asarray(self.quantiles, dtype=np.float64)
            upper = np.arange(out.shape[-1]) > mi
            # each quantile moves by its share of the outer one's distance in level (0 at the median)
            w_hi = (tau - tau[mi]) / max(tau[-1] - tau[mi], EPS)
            w = np.where(upper, w_hi, (tau[mi] - tau) / max(tau[mi] - tau[0], EPS))
            widen = np.where(upper[None, :], f[:, 1:2], f[:, 0:1]) * w[None, :]  # (B, Q)
            dist = np.abs(out - med)  # each quantile's distance from the median, then widened: never
            dist = np.maximum(dist + widen[:, None, :], intervals.MIN_SHARE * dist)  # under a share of its own
            out = med + np.where(upper[None, None, :], dist, -dist)
        return out * batch.meta["scale"].numpy()[:, None, None] + batch.meta["loc"].numpy()[:, None, None]

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        pred = self.to_values(output, batch)
        true = batch.meta["true"].numpy()
        med = pred[..., self.median_index]
        err = med - true
        scale = self.mase_scales[batch.meta["series"].numpy()][:, None]
        denom = np.abs(med) + np.abs(true)
        q = np.asarray(self.quantiles)
        e = true[..., None] - pred
        pin = np.maximum(q * e, (q - 1) * e)
        lo, hi = pred[..., 0], pred[..., -1]
        return {
            "abs": float(np.abs(err).sum()),
            "sq": float((err**2).sum()),
            "scaled": float((np.abs(err) / scale).sum()),
            "smape": float(np.where(denom > 0, 2 * np.abs(err) / np.where(denom > 0, denom, 1.0), 0.0).sum()),
            "covered": float(((true >= lo) & (true <= hi)).sum()),
            "pinball": float(pin.sum()),
            "absy": float(np.abs(true).sum()),
            "n": float(err.size),
        }

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        n = sums["n"]
        return {
            "mae": sums["abs"] / n,
            "rmse": math.sqrt(sums["sq"] / n),
            "mase": sums["scaled"] / n,
            "smape": 100.0 * sums["smape"] / n,
            "coverage": sums["covered"] / n,
            "wql": 2.0 * sums["pinball"] / len(self.quantiles) / max(sums["absy"], EPS),
        }

    def evaluate(
        self, predict: Callable[[Batch], torch.Tensor], split: Split, batch_size: int = 256
    ) -> dict[str, float]:
        """Metrics of `predict` on `split`; for the test split the intervals are first calibrated
        (``calibrate_backtest``: on the validation origins and the test targets before each origin)."""
        if split == "test":
            self.calibrate_backtest(predict, batch_size)
        else:
            self.uncalibrate()
        return super().evaluate(predict, split, batch_size)

    def uncalibrate(self) -> None:
        """The model's own quantiles (spread 1), as validation scores them."""
        self.spread, self._window_spread = np.zeros(2), {}

    def _needs(self, predict: Callable[[Batch], torch.Tensor], split: Split, batch_size: int) -> tuple[np.ndarray, ...]:
        """(series, origin, needs (B, h, 2)) of every window of `split` (lstmkit.data.intervals.needs)."""
        rows = []
        with torch.no_grad():
            for batch in self.eval_batches(split, batch_size):
                pred = self.to_values(predict(batch).detach().float().cpu(), batch, spread=0.0)
                scale = batch.meta["scale"].numpy()[:, None, None]
                f = intervals.needs(pred, batch.meta["true"].numpy(), self.median_index) / scale
                rows.append((batch.meta["series"].numpy(), batch.meta["origin"].numpy(), f))
        return tuple(np.concatenate([r[k] for r in rows]) for k in range(3))

    def calibrate(self, predict: Callable[[Batch], torch.Tensor], batch_size: int = 256) -> np.ndarray:
        """Set ``self.spread``: the widenings of the outer quantiles, one for each side, in the
        window's scale, that make the outer interval hold its nominal share (q_hi - q_lo) of the
        validation targets, each side missing half of the rest (conformalized quantile regression in
        its asymmetric form, Romano et al. 2019, on errors divided by the window's scale).

        Quantiles trained on the windows the model has fitted come out too narrow or too wide on new
        data; the validation origins lie after every training target, so they measure the real
        spread: split conformal prediction (:mod:`lstmkit.data.intervals`), with its finite-sample
        correction counted in windows. (0, 0) when the quantiles are only the median.
        """
        self.uncalibrate()
        if len(self.quantiles) < 2:
            return self.spread
        _, _, self._val_need = self._needs(predict, "val", batch_size)
        level = intervals.side_level(self._nominal)
        self.spread = intervals.spreads(self._val_need, len(self._val_need), (level, level))
        return self.spread

    def calibrate_backtest(self, predict: Callable[[Batch], torch.Tensor], batch_size: int = 256) -> None:
        """Rolling calibration of the test windows: each window's spread from the validation targets
        and the test targets of its series observed before its origin (``intervals.rolling_spreads``),
        as a forecaster re-calibrating with each new observation would have had it."""
        self.calibrate(predict, batch_size)
        if len(self.quantiles) < 2:
            return
        series, origin, need = self._needs(predict, "test", batch_size)
        f = intervals.rolling_spreads(self._val_need, len(self._val_need), series, origin, need, self._nominal)
        self._window_spread = {(int(k), int(o)): v for k, o, v in zip(series, origin, f)}

    @property
    def _nominal(self) -> float:
        return self.quantiles[-1] - self.quantiles[0]

    def forecast_frame(
        self,
        predict: Callable[[Batch], torch.Tensor],
        frame: Any = None,
        horizon: int | None = None,
    ) -> Any:
        """Forecasts of the future: a pandas DataFrame with [id], date, median and one column per quantile
        (``q0.1`` …) for the `horizon` steps after the end of every series.

        `frame`: newer data (a DataFrame or CSV path with the training file's columns) to forecast
        from, the newest `window` rows of each series being the context; rows after a series' last
        target value that carry the future covariates give the forecast period's covariates. Default:
        the task's own data. The model is not retrained: its window reads whatever history it is given.
        """
        import pandas as pd

        h = self.horizon if horizon is None else check_int("forecast", "horizon", horizon, minimum=1)
        if h > self.horizon:
            raise DataError(
                f"forecast: horizon {h} is longer than the {self.horizon} steps this run was trained for; "
                f"ask for at most {self.horizon}, or train with --horizon {h}"
            )
        panel, future = (self.panel, None) if frame is None else self.read_newer(frame)
        if self.n_future and frame is None:
            raise DataError(
                "forecast: this run uses future covariates; pass the newer data with rows for the forecast "
                f"period ({', '.join(self.panel.future_features)} filled, target empty) via --csv"
            )
        batch = self.future_batch(panel, future)
        if self.spread_calibrated is None:  # every target the data holds: validation and test windows
            self.calibrate(predict)
            if len(self.quantiles) >= 2:  # at the levels the backtest's last targets left (intervals.next_levels)
                series, origin, test_need = self._needs(predict, "test", 256)
                n_val = len(self._val_need)
                f = intervals.rolling_spreads(self._val_need, n_val, series, origin, test_need, self._nominal)
                levels = intervals.next_levels(series, test_need, f, self._nominal)
                need = np.concatenate([self._val_need.reshape(-1, 2), test_need.reshape(-1, 2)])
                self.spread = intervals.spreads(need, n_val + len(test_need), levels)
            self.spread_calibrated = self.spread
        # the future's widenings, whatever a backtest or a validation run left in between
        self.spread, self._window_spread = self.spread_calibrated, {}
        with torch.no_grad():
            vals = self.to_values(predict(batch).detach().float().cpu(), batch)[:, :h, :]
        rows: dict[str, list[Any]] = {"date": [], "median": [], **{_qname(q): [] for q in self.quantiles}}
        if panel.id:
            rows = {"id": [], **rows}
        for k, s in enumerate(panel.series):
            dates = panel.future_dates(s, h)
            for j in range(h):
                if panel.id:
                    rows["id"].append(s.id)
                rows["date"].append(dates[j])
                rows["median"].append(vals[k, j, self.median_index])
                for i, q in enumerate(self.quantiles):
                    rows[_qname(q)].append(vals[k, j, i])
        out = pd.DataFrame(rows)
        if panel.id:
            out = out.rename(columns={"id": panel.id})
        return out.rename(columns={"date": panel.date or "step"})

    def read_newer(self, frame: Any) -> tuple[Panel, dict[str, np.ndarray] | None]:
        """The panel of newer data, and the future covariates of rows after each series' last target."""
        import pandas as pd

        p = self.panel
        df = pd.read_csv(frame, sep=self._params["delimiter"]) if isinstance(frame, (str, Path)) else frame
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"forecast: newer data must be a pandas DataFrame or a CSV path, got {type(df).__name__}")
        future: dict[str, np.ndarray] | None = None
        if self.n_future:
            for c in (p.target, *p.future_features, *([p.date] if p.date else []), *([p.id] if p.id else [])):
                if c not in df.columns:
                    raise DataError(
                        f"forecast: newer data has no column {c!r}; its columns are: {', '.join(map(str, df.columns))}"
                    )
            df = df.copy()
            if p.date:
                df = (
                    df.assign(_d=pd.to_datetime(df[p.date], errors="coerce"))
                    .sort_values([*([p.id] if p.id else []), "_d"], kind="stable")
                    .drop(columns="_d")
                )
            ids = df[p.id].astype(str) if p.id else pd.Series("", index=df.index)
            has_y = pd.to_numeric(df[p.target], errors="coerce").notna()
            last_obs = has_y[has_y].groupby(ids[has_y]).apply(lambda s: s.index[-1])
            is_future = pd.Series(False, index=df.index)
            future = {}
            for sid, idx in ids.groupby(ids).groups.items():
                rows = list(idx)
                cut = rows.index(last_obs[sid]) + 1 if sid in last_obs.index else len(rows)
                tail = rows[cut:]
                if len(tail) < self.horizon:
                    raise DataError(
                        f"forecast: series {sid!r} has {len(tail)} rows of future covariates after its last "
                        f"target value; give {self.horizon} (the forecast period) with "
                        f"{', '.join(p.future_features)} filled and the target empty"
                    )
                vals = df.loc[tail[: self.horizon], list(p.future_features)].apply(pd.to_numeric, errors="coerce")
                if vals.isna().any().any():
                    raise DataError(
                        f"forecast: a future covariate is missing in the forecast period of series {sid!r}; "
                        "fill every future covariate for those rows"
                    )
                future[str(sid)] = vals.to_numpy(np.float64)
                is_future[tail] = True
            df = df[~is_future]
        panel = read_panel(
            df,
            target=p.target,
            date=p.date,
            id=p.id,
            features=p.features,
            future_features=p.future_features,
            fill=self._params["fill"],
        )
        return panel, future

    @property
    def interval(self) -> tuple[float, float]:
        return self.quantiles[0], self.quantiles[-1]

    def origins(self, split: Split) -> list[np.ndarray]:
        """Per series, the origins (first forecast step, an index within the series) of `split`."""
        return [o.copy() for o in (self._test_e if split == "test" else self._val_e)]

    def seasonal_naive(self, series: int, e: int, h: int | None = None) -> np.ndarray:
        """The seasonal-naive forecast of `series` from origin `e` (it sees y[:e] only)."""
        h = self.horizon if h is None else h
        y = self.panel.series[series].y
        k = np.arange(1, h + 1)
        return y[e - 1 + k - self.season * np.ceil(k / self.season).astype(np.int64)]

    def baseline(self) -> dict[str, float]:
        """Seasonal naive on the validation origins: MAE and MASE."""
        abs_sum = scaled = n = 0.0
        for k, origins in enumerate(self._val_e):
            y = self.panel.series[k].y
            for e in origins:
                err = np.abs(self.seasonal_naive(k, int(e)) - y[e : e + self.horizon])
                abs_sum += float(err.sum())
                scaled += float((err / self.mase_scales[k]).sum())
                n += err.size
        return {"mae": abs_sum / n, "mase": scaled / n}

    def render(self, x_row: torch.Tensor) -> list[str]:
        """Display strings of one window: the observed value (in window scale) or 'future'."""
        v = x_row.detach().double().cpu().numpy().reshape(-1, self.input_size)
        return [f"{r[0]:+.3g}" if r[1] < 0.5 else f"→{r[2]:+.3g}" for r in v]

    # -- the future

    def future_batch(self, panel: Panel | None = None, future: dict[str, np.ndarray] | None = None) -> Batch:
        """The newest window of every series of `panel` (default: the task's own data) to forecast from.

        `future` gives, per series id, the (horizon, F) future-known covariates of the forecast period.
        """
        panel = self.panel if panel is None else panel
        lengths = np.array([len(s.y) for s in panel.series], dtype=np.int64)
        if (lengths < self.window).any():
            k = int(np.argmin(lengths))
            raise DataError(
                f"forecast: series {panel.series[k].id!r} has {lengths[k]} rows, fewer than the "
                f"model's window of {self.window}; give at least {self.window} rows per series"
            )
        return self._with_panel(panel, future)._windows(np.arange(len(lengths)), lengths, with_targets=False)

    def _with_panel(self, panel: Panel, future: dict[str, np.ndarray] | None) -> ForecastTask:
        """A shallow copy of this task reading `panel`, each series followed by `horizon` empty rows
        (the forecast period: its future covariates and calendar are filled in, its target is 0)."""
        other = object.__new__(ForecastTask)
        other.__dict__.update(self.__dict__)
        other.panel = panel
        other._ref_cache, other._ets_tried = {}, set()  # other data: AutoETS runs over it afresh
        if self._ets is not None:  # and is fitted afresh to a series that no longer starts where it did
            other._ets = self._ets.aligned(self.panel, panel)
        h = self.horizon
        ys, pasts, futs, cals = [], [], [], []
        for s in panel.series:
            n = len(s.y)
            ys.append(np.concatenate([s.y, np.zeros(h)]))
            pasts.append(np.concatenate([s.past.reshape(n, -1), np.zeros((h, self.n_past))]))
            if self.n_future:
                if future is None or s.id not in future:
                    raise DataError(
                        f"forecast: future covariates {', '.join(panel.future_features)} are missing for the "
                        f"forecast period of series {s.id!r}; add {h} rows after its last date with those "
                        "columns filled and the target empty"
                    )
                f = np.asarray(future[s.id], dtype=np.float64).reshape(h, self.n_future)
                futs.append(np.concatenate([s.future.reshape(n, -1), f]))
            else:
                futs.append(np.zeros((n + h, 0)))
            if self.calendar:
                dates = np.concatenate([s.dates, panel.future_dates(s, h)])
                cals.append(calendar_features(dates, panel.freq))
        other._offsets = np.cumsum([0] + [len(s.y) + h for s in panel.series])
        other._y = np.concatenate(ys)
        other._csum = np.concatenate([[0.0], np.cumsum(other._y)])
        total = int(other._offsets[-1])
        other._past = np.concatenate(pasts).reshape(total, self.n_past)
        other._fut = np.concatenate(futs).reshape(total, self.n_future)
        other._cal = np.concatenate(cals) if self.calendar else None
        return other


def _qname(q: float) -> str:
    return f"q{q:g}"


def _names(what: str, v: list[str] | str | None) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        v = [c.strip() for c in v.split(",") if c.strip()]
    if any(not isinstance(c, str) for c in v) or len(set(v)) != len(v):
        raise DataError(f"csv: {what} must be distinct column names, got {v!r}")
    return list(v)


def _quantiles(v: list[float] | str | None) -> tuple[float, ...]:
    if v is None:
        return DEFAULT_QUANTILES
    if isinstance(v, str):
        try:
            v = [float(c) for c in v.split(",") if c.strip()]
        except ValueError:
            raise DataError(f"csv: quantiles must be numbers like 0.1,0.5,0.9, got {v!r}") from None
    qs = sorted(float(q) for q in v)
    if not qs or any(not 0 < q < 1 for q in qs) or len(set(qs)) != len(qs):
        raise DataError(f"csv: quantiles must be distinct numbers strictly between 0 and 1, got {v!r}")
    if 0.5 not in qs:
        raise DataError(f"csv: quantiles must include 0.5 (the median forecast), got {v!r}; e.g. 0.1,0.5,0.9")
    return tuple(qs)


__all__ = ["ForecastTask", "Plan", "plan_lengths", "SCALINGS", "DEFAULT_QUANTILES", "Series"]
