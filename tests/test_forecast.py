"""The forecasting task (``csv``): windows and splits by hand, metrics of known forecasts, and trained
models on synthetic series whose right answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lstmkit.data import DataError, intervals, make_task
from lstmkit.data.base import Batch
from lstmkit.data.forecast import ForecastTask, plan_lengths


def write(tmp_path: Path, df: pd.DataFrame, name: str = "s.csv") -> str:
    p = tmp_path / name
    df.to_csv(p, index=False)
    return str(p)


def monthly(y: np.ndarray, **cols: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.date_range("2000-01-01", periods=len(y), freq="MS"), "y": y, **cols})


def perfect(task: ForecastTask):  # a model that knows the answer: the median is the target, the outer quantiles +-1
    def predict(b: Batch) -> torch.Tensor:
        out = torch.zeros(len(b), b.x.shape[1], task.output_size)
        out[:, task.window :, :] = b.y.unsqueeze(-1) + torch.tensor([-1.0, 0.0, 1.0])
        return out

    return predict


# ----------------------------------------------------------------------------- windows and splits


def test_windows_splits_and_targets_by_hand(tmp_path: Path) -> None:
    y = np.arange(40, dtype=float)  # a straight line: y_t = t
    task = make_task(
        "csv",
        csv=write(tmp_path, monthly(y)),
        target="y",
        date="date",
        season=4,
        window=8,
        horizon=3,
        backtest=2,
        reference="seasonal-naive",
        scaling="last",
    )
    assert isinstance(task, ForecastTask)
    # test origins: the last 2 (each forecasts 3 steps inside the data); validation: 2 origins (40 // 15)
    # spaced 2 apart (a tenth of the series over 2 origins), the last one's targets ending right before
    # the first test target; training windows end before the first validation target
    assert task.origins("test")[0].tolist() == [36, 37]
    assert task.origins("val")[0].tolist() == [31, 33]
    assert task._train_e.min() == 8 and task._train_e.max() == 28
    b = task._windows(np.array([0]), np.array([20]))
    x = b.x[0].numpy()
    assert x.shape == (8 + 3, 3)
    # scaling "last": location y[19] = 19, scale = mean |step| = 1
    np.testing.assert_allclose(x[:8, 0], np.arange(12, 20) - 19)
    np.testing.assert_allclose(x[8:, 0], 0)
    np.testing.assert_allclose(x[:, 1], [0] * 8 + [1] * 3)
    np.testing.assert_allclose(x[:8, 2], np.arange(8, 16) - 19)  # y[t-4]
    np.testing.assert_allclose(x[8:, 2], np.array([16, 17, 18]) - 19)  # seasonal naive of steps 20, 21, 22: y[t-4]
    # the target is the correction of seasonal naive in window scale: y[t] - y[t-4] = 4
    np.testing.assert_allclose(b.y[0].numpy(), [4, 4, 4])
    np.testing.assert_allclose(b.meta["true"][0].numpy(), [20, 21, 22])


def test_seasonal_mean_reference_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    m, n, h = 4, 60, 6
    y = 100 + np.arange(n) + 5 * np.tile([1.0, -2.0, 3.0, -2.0], n // m) + rng.normal(size=n)
    task = make_task("csv", csv=write(tmp_path, monthly(y)), target="y", date="date", season=m, window=8, horizon=h,
                     reference="seasonal-mean")  # fmt: skip
    origins = np.array([8, 11, 12, 20, 40])
    got = task._reference(np.zeros(len(origins), dtype=np.int64), origins, h)
    for row, e in zip(got, origins):
        seasons = min(3, e // m)  # 2 seasons of history at e = 8 and 11, 3 from e = 12 on
        level = y[e - m : e].mean()
        for k in range(1, h + 1):
            back = m * -(-k // m)  # the same phase, one season back
            profile = [
                y[e - 1 + k - back - (j - 1) * m] - y[e - j * m : e - (j - 1) * m].mean() for j in range(1, seasons + 1)
            ]
            assert row[k - 1] == pytest.approx(level + np.mean(profile), rel=1e-12)
    # the model's future inputs (channel 2) are that reference, and its target the correction of it
    b = task._windows(np.array([0]), np.array([20]))
    loc, scale = b.meta["loc"].numpy()[0], b.meta["scale"].numpy()[0]
    np.testing.assert_allclose(b.x[0, 8:, 2].numpy() * scale + loc, got[3], rtol=1e-5)
    np.testing.assert_allclose(b.y[0].numpy() * scale, y[20 : 20 + h] - got[3], rtol=1e-4, atol=1e-4)


def test_revin_and_mean_scaling(tmp_path: Path) -> None:
    y = np.arange(1, 41, dtype=float)
    csv = write(tmp_path, monthly(y))
    w = np.arange(12, 20, dtype=float) + 1  # y values of the window of origin 20
    for scaling, loc, scale in (("revin", w.mean(), w.std()), ("mean", 0.0, np.abs(w).mean())):
        task = make_task(
            "csv", csv=csv, target="y", date="date", season=1, window=8, horizon=3, backtest=2, scaling=scaling
        )
        b = task._windows(np.array([0]), np.array([20]))
        np.testing.assert_allclose(b.x[0, :8, 0].numpy(), (w - loc) / scale, rtol=1e-5)


def test_known_forecasts_score_as_computed_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = 50 + rng.normal(size=60).cumsum()
    task = make_task(
        "csv",
        csv=write(tmp_path, monthly(y)),
        target="y",
        date="date",
        season=1,
        window=8,
        horizon=2,
        backtest=3,
        scaling="last",
        reference="seasonal-naive",
    )
    m = task.evaluate(perfect(task), "test")
    assert m["mae"] == pytest.approx(0, abs=1e-5) and m["coverage"] == 1.0  # float32 targets

    # a constant output 1 (window scale) above the seasonal-naive reference: error = the window's scale
    def plus_one(b: Batch) -> torch.Tensor:
        out = torch.zeros(len(b), b.x.shape[1], task.output_size)
        out[:, task.window :, :] = 1.0
        return out

    m = task.evaluate(plus_one, "test")
    origins = task.origins("test")[0]
    errs = []
    for e in origins:
        w = y[e - 8 : e]
        scale = np.mean(np.abs(np.diff(w)))
        pred = y[e - 1] + scale  # naive + 1 scale
        errs += [pred - y[e], pred - y[e + 1]]
    errs = np.array(errs)
    hist = y[: origins[0]]
    mase_scale = np.mean(np.abs(np.diff(hist)))
    assert m["mae"] == pytest.approx(np.abs(errs).mean(), rel=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt((errs**2).mean()), rel=1e-6)
    assert m["mase"] == pytest.approx(np.abs(errs).mean() / mase_scale, rel=1e-6)


def test_defaults_from_season_and_length() -> None:
    t = np.arange(120)
    y = np.sin(2 * np.pi * t / 12) + 0.01 * t
    p = plan_lengths(120, y[:96], season=None, horizon=None, window=None, backtest=None, step=1)
    assert (p.season, p.horizon, p.window, p.backtest) == (12, 12, 24, 12)
    p = plan_lengths(60, y[:42], season=None, horizon=None, window=None, backtest=None, step=1, freq="MS")
    assert p.season == 12 and p.horizon == 12 and p.window >= 12 and p.backtest == 6
    p = plan_lengths(
        300, np.random.default_rng(0).normal(size=240), season=None, horizon=None, window=None, backtest=None, step=1
    )
    assert (p.season, p.horizon, p.window) == (1, 8, 24)  # two horizons are 16: the floor is 24 steps
    q = np.arange(200)
    p = plan_lengths(
        200, np.sin(2 * np.pi * q[:160] / 4), season=None, horizon=None, window=None, backtest=None, step=1
    )
    assert (p.season, p.horizon, p.window) == (4, 4, 24)  # quarterly: six years, not two
    p = plan_lengths(40, np.sin(2 * np.pi * q[:28] / 4), season=None, horizon=None, window=None, backtest=None, step=1)
    # a short series keeps ~4 training windows: 40 - (4 + 3) for the test origins - (4 + 2) for the validation
    # ones - 4 for the last training window's targets - 3 = 20
    assert (p.season, p.horizon, p.backtest, p.val_origins, p.window) == (4, 4, 4, 2, 20)


def test_bad_input(tmp_path: Path) -> None:
    y = np.arange(30, dtype=float)
    csv = write(tmp_path, monthly(y))
    with pytest.raises(DataError, match="fewer than window"):
        make_task("csv", csv=csv, target="y", date="date", window=12, horizon=12, backtest=4)
    with pytest.raises(DataError, match="include 0.5"):
        make_task("csv", csv=csv, target="y", date="date", quantiles="0.1,0.9")
    with pytest.raises(DataError, match="between 0 and 1"):
        make_task("csv", csv=csv, target="y", date="date", quantiles="0.5,1.5")
    with pytest.raises(DataError, match="scaling"):
        make_task("csv", csv=csv, target="y", date="date", scaling="zscore")
    long = pd.concat([monthly(np.arange(60.0)).assign(id="a"), monthly(np.arange(10.0)).assign(id="b")])
    with pytest.raises(DataError, match="series 'b' has 10 rows"):
        make_task(
            "csv",
            csv=write(tmp_path, long, "l.csv"),
            target="y",
            date="date",
            id="id",
            season=1,
            window=8,
            horizon=2,
            backtest=2,
        )


# ----------------------------------------------------------------------------- trained models


def _train(tmp_path: Path, csv: str, steps: int = 300, **params: object):
    from lstmkit.train import TrainConfig, load_run, train

    cfg = TrainConfig(
        task="csv",
        task_params={"csv": csv, "target": "y", "date": "date", **params},
        hidden_size=32,
        max_steps=steps,
        eval_every=50,
        patience=0,
        lr=3e-3,
        seed=0,
    )
    train(cfg, tmp_path / "run", progress=False)
    return load_run(tmp_path / "run")


@pytest.mark.slow
def test_trend_and_season_are_extrapolated(tmp_path: Path) -> None:
    """A linear trend plus a season leaves its training range; per-window scaling still forecasts it
    better than seasonal naive (MASE < 1, the in-sample seasonal-naive error)."""
    t = np.arange(180)
    rng = np.random.default_rng(1)
    y = 100 + 2.0 * t + 15 * np.sin(2 * np.pi * t / 12) + rng.normal(scale=1.0, size=len(t))
    run = _train(tmp_path, write(tmp_path, monthly(y)))
    m = run.evaluate("test")
    assert m["mase"] < 1.0, m
    assert y[-24:].min() > y[:120].max()  # the test part lies outside everything trained on


@pytest.mark.slow
def test_gaussian_noise_gives_nominal_coverage(tmp_path: Path) -> None:
    """IID noise around a level: the calibrated 80% interval covers about 80% of the backtest."""
    rng = np.random.default_rng(2)
    frames = [monthly(10 + rng.normal(size=120)).assign(id=f"s{k}") for k in range(8)]
    run = _train(
        tmp_path, write(tmp_path, pd.concat(frames)), steps=250, id="id", season=1, horizon=4, window=16, backtest=12
    )
    m = run.evaluate("test")
    assert 0.65 <= m["coverage"] <= 0.93, m
    # better than the naive forecast on the same origins (the noise's own MAE is 0.80, naive's ~1.13)
    task = run.task
    naive = [
        abs(s.y[e + k] - s.y[e - 1])
        for s, o in zip(task.panel.series, task.origins("test"))
        for e in o
        for k in range(4)
    ]
    assert m["mae"] < np.mean(naive), (m, np.mean(naive))


@pytest.mark.slow
def test_backtest_never_sees_data_after_its_origin(tmp_path: Path) -> None:
    """Poison every value after the first test origin: the trained weights are the same, and the
    forecast of each origin does not change when everything from that origin on is poisoned."""
    rng = np.random.default_rng(3)
    t = np.arange(100)
    y = 20 + 0.3 * t + 3 * np.sin(2 * np.pi * t / 6) + rng.normal(scale=0.3, size=len(t))
    params = dict(season=6, window=12, horizon=3, backtest=5)
    clean = _train(tmp_path / "a", write(tmp_path, monthly(y), "a.csv"), steps=60, **params)
    first = int(clean.task.origins("test")[0][0])
    bad = y.copy()
    bad[first:] = 1e6
    poisoned = _train(tmp_path / "b", write(tmp_path, monthly(bad), "b.csv"), steps=60, **params)
    for (k, a), b in zip(clean.model.state_dict().items(), poisoned.model.state_dict().values()):
        assert torch.equal(a, b), k
    task = clean.task
    model = clean.model
    for e in task.origins("test")[0]:
        b1 = task._windows(np.array([0]), np.array([e]), with_targets=False)
        y2 = task._y.copy()
        task._y[e:] = np.nan  # anything read from the origin on would turn the forecast into NaN
        try:
            b2 = task._windows(np.array([0]), np.array([e]), with_targets=False)
        finally:
            task._y[:] = y2
        with torch.no_grad():
            f1 = task.to_values(model(b1.x), b1)
            f2 = task.to_values(model(b2.x), b2)
        np.testing.assert_array_equal(f1, f2)


@pytest.mark.slow
def test_forecast_of_the_future(tmp_path: Path) -> None:
    t = np.arange(96)
    y = 50 + 10 * np.sin(2 * np.pi * t / 12) + 0.5 * t
    csv = write(tmp_path, monthly(y))
    run = _train(tmp_path, csv, steps=100)
    df = run.forecast()
    assert list(df.columns) == ["date", "median", "q0.1", "q0.5", "q0.9"]
    assert len(df) == 12
    assert df["date"].iloc[0] == pd.Timestamp("2008-01-01") and df["date"].iloc[-1] == pd.Timestamp("2008-12-01")
    assert (df["q0.1"] <= df["median"]).all() and (df["median"] <= df["q0.9"]).all()
    assert len(run.forecast(horizon=3)) == 3
    with pytest.raises(DataError, match="longer than the 12 steps"):
        run.forecast(horizon=13)
    # newer data: one more year, the forecast starts after it
    newer = monthly(
        np.concatenate([y, 50 + 10 * np.sin(2 * np.pi * np.arange(96, 108) / 12) + 0.5 * np.arange(96, 108)])
    )
    df2 = run.forecast(newer)
    assert df2["date"].iloc[0] == pd.Timestamp("2009-01-01")


# ----------------------------------------------------------------------------- the commands on one run


@pytest.fixture(scope="module")
def fc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small forecasting run over two monthly series with a future-known covariate."""
    from lstmkit.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("fc")
    t = np.arange(84)
    frames = []
    for k, level in enumerate((50.0, 500.0)):
        promo = (t % 5 == 0).astype(float)
        y = level * (1 + 0.01 * t + 0.2 * np.sin(2 * np.pi * t / 12)) + 3 * promo * (k + 1)
        frames.append(monthly(y, promo=promo).assign(shop=f"shop{k}"))
    df = pd.concat(frames)
    df.to_csv(tmp / "sales.csv", index=False)
    params = {
        "csv": str(tmp / "sales.csv"),
        "target": "y",
        "date": "date",
        "id": "shop",
        "future_features": ["promo"],
        "calendar": True,
        "horizon": 6,
        "backtest": 4,
    }
    cfg = TrainConfig(task="csv", task_params=params, hidden_size=16, max_steps=40, eval_every=20, seed=0)
    train(cfg, tmp / "run", progress=False)
    return tmp / "run"


@pytest.mark.slow
def test_forecast_command_writes_csv_and_png(fc_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lstmkit.cli import main

    sales = pd.read_csv(fc_run.parent / "sales.csv")
    # newer data: the same file plus 6 future months per shop with the promo known and the target empty
    future = []
    for shop in ("shop0", "shop1"):
        dates = pd.date_range("2007-01-01", periods=6, freq="MS").strftime("%Y-%m-%d")
        future.append(pd.DataFrame({"date": dates, "y": np.nan, "promo": [1, 0, 0, 0, 0, 1], "shop": shop}))
    newer = tmp_path / "newer.csv"
    pd.concat([sales, *future]).to_csv(newer, index=False)
    out = tmp_path / "f.csv"
    assert main(["forecast", str(fc_run), "--csv", str(newer), "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["shop", "date", "median", "q0.1", "q0.5", "q0.9"]
    assert df["shop"].tolist() == ["shop0"] * 6 + ["shop1"] * 6
    assert df["date"].iloc[0] == "2007-01-01"
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without the future covariates: one line, exit 2, nothing written
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    assert main(["forecast", str(fc_run), "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "future covariates" in err[0] and not bad.exists()
    assert main(["forecast", str(fc_run), "--csv", str(newer), "--horizon", "7", "--out", str(bad)]) == 2
    assert "longer than the 6 steps" in capsys.readouterr().err and not bad.exists()
    assert main(["forecast", str(fc_run), "--csv", str(newer), "--out", str(tmp_path / "f.txt")]) == 2


@pytest.mark.slow
def test_evaluate_prints_the_backtest_table(fc_run: Path, capsys: pytest.CaptureFixture) -> None:
    from lstmkit.cli import main

    assert main(["evaluate", str(fc_run)]) == 0
    out = capsys.readouterr().out
    for word in ("mae ", "coverage", "seasonal_naive", "autoets", "shop0", "shop1", "overall"):
        assert word in out
    # the table's lstmkit MAE is the run's own test MAE
    assert out.splitlines()[0].startswith("split: test")
    mae = float(next(line for line in out.splitlines() if line.startswith("mae ")).split()[1])
    row = next(line for line in out.splitlines() if line.startswith("overall") and "lstmkit" in line)
    assert float(row.split()[2]) == pytest.approx(mae, rel=1e-3)


@pytest.mark.slow
def test_int8_and_the_numpy_runtime_forecast_the_same(fc_run: Path, tmp_path: Path) -> None:
    from lstmkit.compress import compress
    from lstmkit.export import export_runtime
    from lstmkit.runtime import load as load_bundle
    from lstmkit.train import load_run

    run = load_run(fc_run)
    task = run.task
    batch = task.eval_batches("test", 64)[0]
    with torch.no_grad():
        ref = task.to_values(run.model(batch.x), batch, spread=1.0)
    export_runtime(run, tmp_path / "bundle")
    np_out = load_bundle(tmp_path / "bundle").run(batch.x.numpy())
    np.testing.assert_allclose(task.to_values(np_out, batch, spread=1.0), ref, rtol=1e-4, atol=1e-3)
    compress(run, "quantize", tmp_path / "q8", bits=8, evaluate=False)
    q = load_run(tmp_path / "q8")
    with torch.no_grad():
        q_out = task.to_values(q.model(batch.x), batch, spread=1.0)
    scale = np.abs(ref).mean()
    assert np.abs(q_out - ref).mean() < 0.02 * scale  # int8 weights: within 2% of the forecasts' size


# ----------------------------------------------------------------------------- rolling calibration


def fixed_band(task: ForecastTask, c: float = 1.0):  # median = the reference, outer quantiles +-c (window scale)
    def predict(b: Batch) -> torch.Tensor:
        out = torch.zeros(len(b), b.x.shape[1], task.output_size)
        out[:, task.window :, :] = torch.tensor([-c, 0.0, c])
        return out

    return predict


def test_forecast_after_a_backtest_keeps_its_intervals(tmp_path: Path) -> None:
    """A backtest (or a validation run) in between re-calibrates the task for its own windows; the
    next forecast of the future must use the future's widenings again, not what the backtest left."""
    rng = np.random.default_rng(3)
    y = 50 + rng.normal(size=90) * np.where(np.arange(90) >= 70, 3.0, 1.0)
    task = make_task("csv", csv=write(tmp_path, monthly(y)), target="y", date="date", season=1, horizon=3, window=8,
                     backtest=8, scaling="mean")  # fmt: skip
    predict = fixed_band(task, 0.02)
    first = task.forecast_frame(predict)
    for split in ("test", "val"):
        task.evaluate(predict, split)
        again = task.forecast_frame(predict)
        pd.testing.assert_frame_equal(first, again)
    assert (first["q0.9"] - first["q0.1"]).min() > 0


def test_rolling_calibration_by_hand(tmp_path: Path) -> None:
    """Two series of noise around a level whose noise grows threefold in the test period: each side of
    each test window's interval is widened by the conformal quantile of that side's needs (how far in
    window scales each target lay beyond that side) of the validation targets and of its own series'
    test targets that lie before its origin, at a level that each of those targets moved up if that
    side of the interval its window had missed it and down if not (adaptive conformal inference;
    computed here target by target), so the windows' intervals grow through the test period, and the
    metrics use them."""
    rng = np.random.default_rng(5)
    n, h, bt = 90, 3, 8
    frames = []
    for k in range(2):
        y = 50 + rng.normal(size=n) * np.where(np.arange(n) >= n - h - bt + 1, 3.0, 1.0)
        frames.append(monthly(y).assign(id=f"s{k}"))
    task = make_task("csv", csv=write(tmp_path, pd.concat(frames)), target="y", date="date", id="id", season=1,
                     horizon=h, window=8, backtest=bt, scaling="mean")  # fmt: skip
    predict = fixed_band(task, 0.02)  # the window's scale is its mean, about 50: a band of about +-1
    m = task.evaluate(predict, "test")

    def need(s, e: int, k: int) -> tuple[float, float]:  # how far target k of origin e lies beyond each side
        b = task._windows(np.array([s]), np.array([e]))
        scale, ref = float(b.meta["scale"][0]), float(b.meta["ref"][0, k])
        med = ref * scale + float(b.meta["loc"][0])
        d = (task.panel.series[s].y[e + k] - med) / scale  # in the window's scale; the band is +-0.02 there
        return -d - 0.02, d - 0.02

    val_f = [need(s, int(e), k) for s, o in enumerate(task.origins("val")) for e in o for k in range(h)]
    n_val = sum(len(o) for o in task.origins("val"))
    covered = total = 0
    spreads = []
    given: dict[tuple[int, int], tuple[float, float]] = {}  # (series, origin) -> its window's widenings
    for s, origins in enumerate(task.origins("test")):
        for e in sorted(int(o) for o in origins):
            f = list(val_f)
            done = 0
            level = [0.9, 0.9]  # each side may miss 10%; each earlier target moves it by ADAPT / h * (missed - 0.1)
            for e2 in origins:
                for k in range(h):
                    if e2 + k < e:
                        f.append(need(s, int(e2), k))
                        for side in (0, 1):
                            level[side] += intervals.ADAPT / h * ((f[-1][side] > given[(s, int(e2))][side]) - 0.1)
                done += int(e2 + h <= e)
            want = tuple(
                float(np.clip(np.quantile([v[side] for v in f], np.clip(level[side] * (1 + 1 / (n_val + done)), 0, 1)),
                              -10.0, 10.0))
                for side in (0, 1)
            )  # fmt: skip
            given[(s, e)] = want
            b = task._windows(np.array([s]), np.array([e]))
            got = task.to_values(predict(b), b)[0]  # (h, Q)
            unit = float(b.meta["scale"][0])  # each side: the band's half plus its widening (at least a share)
            half = [max(0.02 + want[0], 0.02 * intervals.MIN_SHARE), max(0.02 + want[1], 0.02 * intervals.MIN_SHARE)]
            np.testing.assert_allclose((got[:, 1] - got[:, 0]) / unit, half[0], rtol=1e-5, atol=1e-7)  # float32 band
            np.testing.assert_allclose((got[:, 2] - got[:, 1]) / unit, half[1], rtol=1e-5, atol=1e-7)
            spreads.append(sum(half) / 2)
            true = task.panel.series[s].y[e : e + h]
            covered += int(((true >= got[:, 0]) & (true <= got[:, -1])).sum())
            total += h
    assert m["coverage"] == pytest.approx(covered / total)
    # the noise grew: the last windows' intervals are wider than the first ones' (calibrated on validation)
    assert spreads[bt - 1] > 1.3 * spreads[0] and spreads[-1] > 1.3 * spreads[bt], spreads
    # the future's intervals use every target the data holds (validation and all test windows), at the
    # levels the last targets left, averaged over the two series
    future_f = val_f + [need(s, int(e), k) for s, o in enumerate(task.origins("test")) for e in o for k in range(h)]
    fc = task.forecast_frame(predict)
    b = task.future_batch()
    unit = np.repeat(b.meta["scale"].numpy(), h)
    for side, (a_col, b_col) in enumerate((("q0.1", "q0.5"), ("q0.5", "q0.9"))):
        levels = []
        for s, origins in enumerate(task.origins("test")):
            miss = [need(s, int(e), k)[side] > given[(s, int(e))][side] for e in origins for k in range(h)]
            levels.append(0.9 + intervals.ADAPT / h * sum(m - 0.1 for m in miss))
        q = np.clip(np.mean(levels) * (1 + 1 / (n_val + 2 * bt)), 0, 1)
        want_side = 0.02 + float(np.clip(np.quantile([v[side] for v in future_f], q), -10, 10))
        want_side = max(want_side, 0.02 * intervals.MIN_SHARE)
        got_side = (fc[b_col].to_numpy() - fc[a_col].to_numpy()) / unit
        np.testing.assert_allclose(got_side, want_side, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- the AutoETS reference


def quarterly(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.date_range("1990-01-01", periods=len(y), freq="QS"), "y": y})


def half_hourly(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"date": pd.date_range("2000-06-05", periods=len(y), freq="30min"), "y": y})


@pytest.mark.parametrize("season", [4, 48])
def test_ets_reference_extrapolates_trend_and_season_and_reads_nothing_after_its_origin(
    tmp_path: Path, season: int
) -> None:
    """On a line plus an exact season AutoETS continues the pattern: with a quarterly season the
    model's own additive trend and season; with 48 (above AutoETS's limit of 24) a non-seasonal model
    of the series minus its season, the season added back. The reference from each test origin is the
    true continuation (the seasonal mean, which has no trend, lags it); the model is fitted before the
    validation period, so poisoning everything from there on changes no training window's reference;
    and a reference reads nothing from its origin on."""
    t = np.arange(120 if season == 4 else 700)
    pattern = np.array([6.0, -3.0, 4.0, -7.0]) if season == 4 else 5 * np.sin(2 * np.pi * np.arange(48) / 48) ** 3
    y = 100 + 0.8 * t + pattern[t % season]
    frame = quarterly if season == 4 else half_hourly
    kw = dict(target="y", date="date", season=season, horizon=4, backtest=6)
    task = make_task("csv", csv=write(tmp_path, frame(y)), reference="ets", **kw)
    smean = make_task("csv", csv=write(tmp_path, frame(y), "m.csv"), reference="seasonal-mean", **kw)
    adjusted = [n for n in task.notes if "reference" in n]
    assert adjusted == ([] if season == 4 else [adjusted[0]])
    assert season == 4 or "AutoETS forecasts the seasonally adjusted series" in adjusted[0]
    e = task.origins("test")[0]
    base = np.zeros(len(e), dtype=np.int64)
    truth = y[e[:, None] + np.arange(4)[None, :]]
    ref = task._reference(base, e, 4)
    assert np.abs(ref - truth).max() < 0.05 * 0.8  # within 5% of one step's trend
    assert np.abs(smean._reference(base, e, 4) - truth).mean() > 1.0  # the seasonal mean lags the trend
    # fitted before validation: poison the validation and test periods, the training references stay
    first_val = int(task.origins("val")[0][0])
    bad = y.copy()
    bad[first_val:] = 1e6
    poisoned = make_task("csv", csv=write(tmp_path, frame(bad), "b.csv"), reference="ets", **kw)
    tr = task._train_e
    np.testing.assert_allclose(
        poisoned._reference(np.zeros(len(tr), dtype=np.int64), tr, 4),
        task._reference(np.zeros(len(tr), dtype=np.int64), tr, 4),
        rtol=1e-9,
    )
    # nothing from the origin on is read
    for o in e:
        before = task._reference(np.array([0]), np.array([o]), 4)
        saved = task._y.copy()
        task._y[o:] = np.nan
        task._ref_cache.clear()
        try:
            after = task._reference(np.array([0]), np.array([o]), 4)
        finally:
            task._y[:] = saved
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("season", [4, 48])
def test_ets_reference_refits_newer_data_that_starts_elsewhere(tmp_path: Path, season: int) -> None:
    """Newer data given to a forecast may hold only the recent rows. AutoETS's states (and, above a
    season of 24, the season's phase) run from a series' first row, so a series that no longer starts
    where it did is fitted afresh on its history: from the end of the data its reference continues
    the pattern exactly, as it does from the whole history, where the trained model is kept."""
    t = np.arange(140 if season == 4 else 760)
    pattern = np.array([6.0, -3.0, 4.0, -7.0]) if season == 4 else 5 * np.sin(2 * np.pi * np.arange(48) / 48) ** 3
    y = 100 + 0.8 * t + pattern[t % season]
    frame = quarterly if season == 4 else half_hourly
    kw = dict(target="y", date="date", season=season, horizon=4, backtest=6, reference="ets")
    task = make_task("csv", csv=write(tmp_path, frame(y[: len(t) - 20])), **kw)
    sid = task.panel.series[0].id
    for start in (0, 3):  # the whole history, then the same without its first 3 rows (out of phase)
        newer = frame(y).iloc[start : len(t) - 4]
        panel, future = task.read_newer(newer)
        other = task._with_panel(panel, future)
        assert other._ets is not None
        ref = other._reference(np.array([0]), np.array([len(newer)]), 4)
        np.testing.assert_allclose(ref[0], y[len(t) - 4 :], atol=0.05 * 0.8)
        kept = other._ets.models.get(sid) is task._ets.models[sid]
        assert kept == (start == 0)


def test_ets_reference_falls_back_to_the_seasonal_mean_and_says_so(tmp_path: Path) -> None:
    # a series that is constant before validation keeps the seasonal mean, named in the notes
    rows = [
        ("a", d, 5.0 if k < 90 else 5.0 + k) for k, d in enumerate(pd.date_range("2000-01-01", periods=100, freq="MS"))
    ]
    rows += [("b", d, 10 + np.sin(k)) for k, d in enumerate(pd.date_range("2000-01-01", periods=100, freq="MS"))]
    df = pd.DataFrame(rows, columns=["id", "date", "y"])
    task = make_task("csv", csv=write(tmp_path, df, "ab.csv"), target="y", date="date", id="id", season=4,
                     horizon=4, reference="ets+seasonal-mean")  # fmt: skip
    assert any("'a': constant before validation" in n for n in task.notes)
    assert "b" in task._ets.models and "a" not in task._ets.models
    smean = make_task("csv", csv=write(tmp_path, df, "ab.csv"), target="y", date="date", id="id", season=4,
                      horizon=4, reference="seasonal-mean")  # fmt: skip
    e = task.origins("test")[0]  # series a's: the average of the seasonal mean with itself
    base = np.zeros(len(e), dtype=np.int64)
    np.testing.assert_allclose(task._reference(base, e, 4), smean._reference(base, e, 4), rtol=1e-12)
