"""The backtest table: lstmkit's forecasts against the baselines a forecaster checks, on the same origins.

A forecasting run (the ``csv`` task) holds out, at the end of every series, ``backtest`` rolling
origins; its model never trained on their targets. :func:`backtest` forecasts each origin with the
run's model and with naive, seasonal naive and AutoETS (and AutoARIMA when asked) from statsforecast,
each seeing only the data before the origin, and scores all of them per series and overall with the
same metrics (``lstmkit.data.scoring``): MAE, RMSE, MASE (scale: the in-sample seasonal-naive MAE of
the data before the first test origin), sMAPE, coverage of the run's outer quantile interval and the
weighted quantile loss (the baselines' intervals: statsforecast's prediction intervals at the same
level where the model gives them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import scoring
from ..data.base import Batch
from ..data.baselines import baseline_forecasts
from ..data.forecast import ForecastTask
from ..errors import InputError

METRICS = ("mae", "rmse", "mase", "smape", "coverage", "wql")


@dataclass
class Backtest:
    """Forecasts of one split's origins: ``true`` (S series each (origins, h)); per method the median
    (``mean``) and, where known, the interval (``lo``/``hi``) and all quantiles (``quantiles``)."""

    series: list[str]
    origins: list[np.ndarray]
    true: list[np.ndarray]
    forecasts: dict[str, list[dict[str, np.ndarray]]]
    scales: np.ndarray
    quantiles: tuple[float, ...]
    notes: list[str]

    def scores(self) -> dict[str, dict[str, dict[str, float]]]:
        """{method: {series id or "overall": {metric: value}}}; overall pools every point (MASE: each
        error divided by its own series' scale, as the mean of per-series MASEs weighted by points)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for method, per_series in self.forecasts.items():
            table = {
                self.series[k]: self._score([f], [self.true[k]], [float(self.scales[k])])
                for k, f in enumerate(per_series)
            }
            table["overall"] = self._score(per_series, self.true, [float(v) for v in self.scales])
            out[method] = table
        return out

    def _score(self, fs: list[dict[str, np.ndarray]], trues: list[np.ndarray], scales: list[float]) -> dict[str, float]:
        pred = np.concatenate([f["mean"].ravel() for f in fs])
        true = np.concatenate([t.ravel() for t in trues])
        sc = np.concatenate([np.full(t.size, s) for t, s in zip(trues, scales)])
        r = {
            "mae": scoring.mae(pred, true),
            "rmse": scoring.rmse(pred, true),
            "mase": scoring.mae(pred / sc, true / sc),
            "smape": scoring.smape(pred, true),
            "coverage": float("nan"),
            "wql": float("nan"),
        }
        if all("lo" in f for f in fs):
            lo = np.concatenate([f["lo"].ravel() for f in fs])
            hi = np.concatenate([f["hi"].ravel() for f in fs])
            r["coverage"] = scoring.coverage(lo, hi, true)
        if all("quantiles" in f for f in fs):
            q = np.concatenate([f["quantiles"].reshape(-1, len(self.quantiles)) for f in fs])
            r["wql"] = scoring.wql(q, true, list(self.quantiles))
        return r


def model_forecasts(task: ForecastTask, model: torch.nn.Module, split: str = "test") -> list[dict[str, np.ndarray]]:
    """The model's forecasts of every origin of `split`, per series: mean (the median), lo, hi, quantiles."""
    if split not in ("val", "test"):
        raise InputError(f"split must be 'val' or 'test', got {split!r}")

    def predict(b: Batch) -> torch.Tensor:
        return model(b.x)

    model.eval()
    with torch.no_grad():
        if split == "test":
            task.calibrate_backtest(predict)
        else:
            task.uncalibrate()
        chunks = []
        for batch in task.eval_batches(split, 256):  # type: ignore[arg-type]
            chunks.append((batch.meta["series"].numpy(), task.to_values(predict(batch), batch)))
    series = np.concatenate([c[0] for c in chunks])
    vals = np.concatenate([c[1] for c in chunks])
    out = []
    for k in range(len(task.panel.series)):
        v = vals[series == k]
        out.append({"mean": v[..., task.median_index], "lo": v[..., 0], "hi": v[..., -1], "quantiles": v})
    return out


def forecasting_task(run: Any) -> ForecastTask:
    """The run's task, or InputError when the run is not a forecasting run."""
    task = run.task
    if not isinstance(task, ForecastTask):
        raise InputError(f"{run.path}: this needs a forecasting run (lstmkit train csv), this one is {task.name}")
    return task


def backtest(run: Any, split: str = "test", *, arima: bool = False, baselines: bool = True) -> Backtest:
    """The run's forecasts and the baselines' on the same origins (see the module docstring);
    ``baselines=False`` scores the run alone (AutoETS takes ~0.3 s per series and origin)."""
    task = forecasting_task(run)
    origins = task.origins(split)  # type: ignore[arg-type]
    h = task.horizon
    true = [s.y[o[:, None] + np.arange(h)[None, :]] for s, o in zip(task.panel.series, origins)]
    ours = model_forecasts(task, run.model, split)
    level = round(100 * (task.quantiles[-1] - task.quantiles[0]))
    methods = (["naive", "seasonal_naive", "autoets"] + (["autoarima"] if arima else [])) if baselines else []
    forecasts: dict[str, list[dict[str, np.ndarray]]] = {"lstmkit": ours}
    notes: list[str] = []
    for m in methods:
        forecasts[m] = []
    for k, s in enumerate(task.panel.series if methods else []):
        res = baseline_forecasts(
            s.y, [int(o) for o in origins[k]], h, task.season, methods=tuple(methods), levels=(level,)
        )
        for m in methods:
            r = res[m]
            f = {"mean": np.asarray(r["mean"])}
            if f"lo-{level}" in r:
                f["lo"], f["hi"] = np.asarray(r[f"lo-{level}"]), np.asarray(r[f"hi-{level}"])
            forecasts[m].append(f)
            note = r.get("note")
            if isinstance(note, str) and note:
                notes.append(f"{m} on series {s.id!r}: {note}")
    return Backtest(
        series=[s.id or "series" for s in task.panel.series],
        origins=origins,
        true=true,
        forecasts=forecasts,
        scales=task.mase_scales.copy(),
        quantiles=tuple(task.quantiles),
        notes=notes,
    )


def format_table(bt: Backtest, per_series: bool = True, max_series: int = 20) -> str:
    """The scores as a text table: one block per series (the first `max_series`) and one overall."""
    scores = bt.scores()
    methods = list(scores)
    names = bt.series[:max_series] if per_series and len(bt.series) > 1 else []
    lines = []
    head = f"{'series':<16} {'method':<15} " + " ".join(f"{m:>10}" for m in METRICS)
    lines.append(head)
    lines.append("-" * len(head))
    for name in [*names, "overall"]:
        for m in methods:
            row = scores[m][name]
            cells = " ".join(_fmt(row[k], k) for k in METRICS)
            lines.append(f"{name[:16]:<16} {m:<15} {cells}")
        lines.append("")
    if len(bt.series) > len(names) + (1 if len(bt.series) == 1 else 0) and per_series and len(bt.series) > 1:
        lines.append(f"({len(bt.series) - len(names)} more series not shown; the overall rows pool all of them)")
    n_origins = sum(len(o) for o in bt.origins)
    lo, hi = bt.quantiles[0], bt.quantiles[-1]
    lines.append(
        f"{len(bt.series)} series, {n_origins} origins, horizon {bt.true[0].shape[1]}; coverage of the "
        f"{round(100 * (hi - lo))}% interval; MASE < 1 beats the in-sample seasonal-naive forecast"
    )
    lines.extend(bt.notes[:10])
    return "\n".join(lines).rstrip()


def _fmt(v: float, metric: str) -> str:
    if not np.isfinite(v):
        return f"{'-':>10}"
    if metric == "coverage":
        return f"{100 * v:>9.1f}%"
    return f"{v:>10.4g}"
