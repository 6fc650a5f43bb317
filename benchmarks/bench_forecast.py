"""Forecasting quality: lstmkit's default csv run against naive, seasonal naive, AutoETS and AutoARIMA.

For each development series (pmdarima's bundled airpassengers, wineind, woolyrnq, ausbeer, taylor and
matplotlib's goog.npz closes; pmdarima's gasoline is fetched from the web, which these machines
cannot reach) and each horizon (1, and one season or 8 without one), a run with default settings is
trained on the data before the last 12 rolling origins and backtested on them, with every baseline
on the same origins (``lstmkit.forecasting.backtest``). Prints per case the MAE of each method, the
coverage of the 80% interval and the training time; then the targets of issue 18: lstmkit's MAE below
seasonal naive's on every series, the geometric mean of MAE relative to AutoETS (and AutoARIMA) per
horizon, coverage in 70-90%, training time per series.

``--global`` also trains one model over 1,000 synthetic series of 200 points and compares its
accuracy on a sample of them with separate models per series.

    python benchmarks/bench_forecast.py [--only airpassengers,goog] [--param scaling=revin] [--seeds 3]
                                        [--global] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lstmkit.forecasting import backtest
from lstmkit.train import TrainConfig, load_run, train

SERIES = {  # name: (start date, frequency, season)
    "airpassengers": ("1949-01-01", "MS", 12),
    "wineind": ("1980-01-01", "MS", 12),
    "woolyrnq": ("1965-01-01", "QS", 4),
    "ausbeer": ("1956-01-01", "QS", 4),
    "taylor": ("2000-06-05", "30min", 48),
    "goog": (None, "B", 1),
}


def load_series(name: str) -> pd.DataFrame:
    if name == "goog":
        import matplotlib.cbook as cbook

        g = cbook.get_sample_data("goog.npz")["price_data"]
        return pd.DataFrame({"date": g["date"].astype("datetime64[D]"), "y": g["close"].astype(float)})
    from pmdarima import datasets

    y = getattr(datasets, f"load_{name}")(as_series=True).to_numpy(float)
    y = y[~np.isnan(y)] if np.isnan(y[-1]) else y  # ausbeer ends with one missing quarter
    start, freq, _ = SERIES[name]
    return pd.DataFrame({"date": pd.date_range(start, periods=len(y), freq=freq), "y": y})


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_case(
    name: str,
    h: int,
    work: Path,
    max_steps: int | None,
    extra: dict[str, str] | None = None,
    seed: int = 0,
    train_kw: dict[str, object] | None = None,
) -> dict[str, object]:
    df = load_series(name)
    csv = work / f"{name}.csv"
    df.to_csv(csv, index=False)
    params = {"csv": str(csv), "target": "y", "date": "date", "horizon": h, "backtest": 12, **(extra or {})}
    kw: dict[str, object] = dict(train_kw or {})
    if max_steps is not None:
        kw["max_steps"] = max_steps
    cfg = TrainConfig.for_task("csv", task_params=params, seed=seed, **kw)  # what `lstmkit train csv` uses
    out = work / f"run-{name}-{h}-{seed}"
    secs = train(cfg, out, progress=False).elapsed  # training only (a first kernel build is not counted)
    run = load_run(out)
    bt = backtest(run, arima=True)
    scores = bt.scores()
    row: dict[str, object] = {"series": name, "h": h, "season": run.task.season, "train_s": secs}
    for m, table in scores.items():
        row[m] = table["overall"]["mae"]
    row["coverage"] = scores["lstmkit"]["overall"]["coverage"]
    row["ets_coverage"] = scores["autoets"]["overall"]["coverage"]  # its own 80% interval, same origins
    row["mase"] = scores["lstmkit"]["overall"]["mase"]
    row["median"] = np.concatenate([f["mean"].ravel() for f in bt.forecasts["lstmkit"]])  # for seed ensembles
    row["true"] = np.concatenate([t.ravel() for t in bt.true])
    return row


def synthetic_panel(n: int, length: int, seed: int = 0) -> pd.DataFrame:
    """n monthly series: level * (1 + trend) with a season of 12, multiplicative noise, levels 1..1000."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    frames = []
    for k in range(n):
        level = 10 ** rng.uniform(0, 3)
        trend = rng.normal(0, 0.004)
        amp = rng.uniform(0, 0.3)
        phase = rng.uniform(0, 2 * np.pi)
        y = (
            level
            * (1 + trend * t)
            * (1 + amp * np.sin(2 * np.pi * t / 12 + phase))
            * (1 + 0.05 * rng.normal(size=length))
        )
        frames.append(
            pd.DataFrame({"id": f"s{k:04d}", "date": pd.date_range("2000-01-01", periods=length, freq="MS"), "y": y})
        )
    return pd.concat(frames, ignore_index=True)


def global_case(work: Path, n: int, sample: int, max_time: float) -> None:
    panel = synthetic_panel(n, 200)
    csv = work / "panel.csv"
    panel.to_csv(csv, index=False)
    params = {"csv": str(csv), "target": "y", "date": "date", "id": "id", "horizon": 12, "backtest": 12}
    secs = train(
        TrainConfig.for_task("csv", task_params=params, max_steps=2000, max_time=max_time),  # both: the first ends it
        work / "global",
        progress=False,
    ).elapsed
    run = load_run(work / "global")
    g_scores = backtest(run, baselines=False).scores()["lstmkit"]
    ids = sorted(panel["id"].unique())[:sample]
    ratios = []
    sep_secs = []
    for sid in ids:
        one = work / f"{sid}.csv"
        panel[panel["id"] == sid].drop(columns="id").to_csv(one, index=False)
        p = {"csv": str(one), "target": "y", "date": "date", "horizon": 12, "backtest": 12}
        sep_secs.append(train(TrainConfig.for_task("csv", task_params=p), work / f"sep-{sid}", progress=False).elapsed)
        sep = backtest(load_run(work / f"sep-{sid}"), baselines=False).scores()["lstmkit"]["overall"]["mae"]
        ratios.append(g_scores[sid]["mae"] / sep)
    print(f"\nglobal model: {n} series x 200 points, trained in {secs:.0f} s (budget {max_time:.0f} s)")
    print(f"  overall MASE {g_scores['overall']['mase']:.3f}, coverage {g_scores['overall']['coverage']:.3f}")
    print(
        f"  MAE global / separate on {len(ids)} series: geometric mean {math.exp(np.mean(np.log(ratios))):.3f}, "
        f"median {np.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
        f"(separate models: {np.mean(sep_secs):.0f} s each)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated series names")
    ap.add_argument("--quick", action="store_true", help="200 training steps (a smoke run, not the defaults)")
    ap.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="a csv task parameter (e.g. scaling=revin)"
    )
    ap.add_argument(
        "--train", action="append", default=[], metavar="KEY=VALUE", help="a TrainConfig field (e.g. ema=0.99)"
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train each case with seeds 0..N-1 and score the mean MAE (seeds move a short series' MAE by about "
        "10%%), and the MAE of the seeds' medians averaged (an ensemble)",
    )
    ap.add_argument("--global", dest="global_", action="store_true", help="the 1,000-series global model too")
    ap.add_argument("--global-only", action="store_true")
    ap.add_argument("--global-series", type=int, default=1000)
    ap.add_argument("--global-sample", type=int, default=10)
    ap.add_argument("--global-time", type=float, default=300.0)
    args = ap.parse_args()
    train_kw = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.train)}
    print(
        f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"{args.param or ''}{args.train or ''}"
    )
    names = args.only.split(",") if args.only else list(SERIES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.global_only:
            for name in names:
                season = SERIES[name][2]
                for h in (1, season if season > 1 else 8):
                    extra = dict(kv.split("=", 1) for kv in args.param)
                    runs = [
                        run_case(name, h, work, 200 if args.quick else None, extra, s, train_kw)
                        for s in range(args.seeds)
                    ]
                    r = dict(runs[0])
                    for k in ("lstmkit", "coverage", "train_s", "mase"):
                        r[k] = float(np.mean([x[k] for x in runs]))  # type: ignore[arg-type]
                    rows.append(r)
                    each = " ".join(f"{x['lstmkit']:.4g}" for x in runs)
                    # the seeds' medians averaged: what an ensemble of the runs would have forecast
                    ens = float(np.mean(np.abs(np.mean([x["median"] for x in runs], axis=0) - runs[0]["true"])))
                    r["ensemble"] = ens
                    spread = f" seeds {each} ensemble {ens:.4g}" if args.seeds > 1 else ""
                    print(
                        f"{name:<14} h={h:<3} m={r['season']:<3} lstmkit {r['lstmkit']:<10.4g} "
                        f"naive {r['naive']:<10.4g} snaive {r['seasonal_naive']:<10.4g} "
                        f"ets {r['autoets']:<10.4g} arima {r['autoarima']:<10.4g} "
                        f"cov80 {r['coverage']:.2f} (ets {r['ets_coverage']:.2f})  train {r['train_s']:.0f} s{spread}",
                        flush=True,
                    )
            df = pd.DataFrame(rows)
            print()
            for label, part in (("h=1", df[df.h == 1]), ("h=season", df[df.h != 1])):
                if part.empty:
                    continue
                g_ets = math.exp(np.mean(np.log(part.lstmkit / part.autoets)))
                g_arima = math.exp(np.mean(np.log(part.lstmkit / part.autoarima)))
                beats = int((part.lstmkit < part.seasonal_naive).sum())
                print(
                    f"{label:<9} geomean MAE lstmkit/AutoETS {g_ets:.3f}, /AutoARIMA {g_arima:.3f}; "
                    f"below seasonal naive on {beats}/{len(part)}; mean coverage {part.coverage.mean():.2f} "
                    f"(AutoETS {part.ets_coverage.mean():.2f})"
                )
                if args.seeds > 1:
                    g_ens = math.exp(np.mean(np.log(part.ensemble / part.autoets)))
                    beats_ens = int((part.ensemble < part.seasonal_naive).sum())
                    print(
                        f"{'':<9} the {args.seeds} seeds' medians averaged: geomean MAE / AutoETS {g_ens:.3f}; "
                        f"below seasonal naive on {beats_ens}/{len(part)}"
                    )
            print(f"training time per run: median {df.train_s.median():.0f} s, max {df.train_s.max():.0f} s")
        if args.global_ or args.global_only:
            global_case(work, args.global_series, args.global_sample, args.global_time)


if __name__ == "__main__":
    main()
