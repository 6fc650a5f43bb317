"""Forecasts of the future and backtests of forecasting runs (the ``csv`` task).

    run = lstmkit.load("runs/csv")
    df = run.forecast(horizon=12)                       # a DataFrame: [id], date, median, q0.1, q0.5, q0.9
    lstmkit.forecasting.write_forecast(run, "f.csv")    # the same as a CSV, and f.png beside it
    print(lstmkit.forecasting.format_table(lstmkit.forecasting.backtest(run)))

The command line: ``lstmkit forecast RUN --out F.csv`` and ``lstmkit evaluate RUN`` (the table).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import InputError
from .backtest import Backtest, backtest, forecasting_task, format_table, model_forecasts

__all__ = [
    "Backtest",
    "backtest",
    "forecasting_task",
    "format_table",
    "model_forecasts",
    "forecast",
    "write_forecast",
    "plot_forecast",
]


def forecast(run: Any, frame: Any = None, horizon: int | None = None) -> Any:
    """The run's forecast of the `horizon` steps after the end of every series, as a DataFrame
    (the same as ``run.forecast``; see :meth:`lstmkit.data.forecast.ForecastTask.forecast_frame`)."""
    forecasting_task(run)
    return run.forecast(frame, horizon)


def write_forecast(
    run: Any, out: str | Path, *, horizon: int | None = None, csv: str | Path | None = None, png: bool = True
) -> tuple[Path, Path | None]:
    """Write the forecast as CSV at `out` and, with `png`, a plot of the history and the forecast with
    its interval beside it (same name, ``.png``). Returns the two paths. Nothing is written when the
    input is bad."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(f"forecast: --out must name a .csv file, got {str(out)!r}")
    if out.exists() and out.is_dir():
        raise InputError(f"forecast: --out {str(out)!r} is a folder; give a file name ending in .csv")
    if csv is not None and not Path(csv).is_file():
        raise InputError(f"forecast: --csv {str(csv)!r} is not a file; give the CSV of newer data")
    df = forecast(run, csv, horizon)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, df.to_csv(index=False, float_format="%.6g"))
    png_path = None
    if png:
        png_path = out.with_suffix(".png")
        atomic.write_bytes(png_path, plot_forecast(run, df, csv))
    return out, png_path


def plot_forecast(run: Any, df: Any, csv: str | Path | None = None, max_series: int = 6) -> bytes:
    """PNG bytes: for up to `max_series` series, the recent history and the forecast's median with the
    outer quantile interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    task = forecasting_task(run)
    panel = task.panel if csv is None else task.read_newer(csv)[0]
    series = panel.series[:max_series]
    n = len(series)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n + 0.4), squeeze=False)
    lo_name, hi_name = f"q{task.quantiles[0]:g}", f"q{task.quantiles[-1]:g}"
    date_col = panel.date or "step"
    for ax, s in zip(axes[:, 0], series):
        part = df[df[panel.id] == s.id] if panel.id else df
        keep = min(len(s.y), max(4 * task.window, 3 * task.horizon))
        hist_x = s.dates[-keep:]
        fut_x = part[date_col].to_numpy()
        ax.plot(hist_x, s.y[-keep:], color="#333333", lw=1.2, label="history")
        ax.fill_between(
            fut_x,
            part[lo_name].to_numpy(float),
            part[hi_name].to_numpy(float),
            color="#4c72b0",
            alpha=0.25,
            label=f"{round(100 * (task.quantiles[-1] - task.quantiles[0]))}% interval",
        )
        ax.plot(
            np.concatenate([hist_x[-1:], fut_x]),
            np.concatenate([s.y[-1:], part["median"].to_numpy(float)]),
            color="#4c72b0",
            lw=1.8,
            label="median forecast",
        )
        title = f"{panel.target}" + (f" — {panel.id} {s.id}" if panel.id else "")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        if panel.date:  # ticks that fit at any frequency (full dates overlap on half-hourly data)
            locator = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[0, 0].legend(loc="best", fontsize=8, framealpha=0.85)  # where it hides the least of the lines
    if len(panel.series) > n:
        fig.text(0.99, 0.005, f"first {n} of {len(panel.series)} series", ha="right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
