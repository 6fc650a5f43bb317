"""Tests of the csv (time-series forecasting) task, on small files written into tmp_path."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lstmkit.data import DataError, make_task
from lstmkit.data.timeseries import detect_season, forecast_metrics


def write_csv(path: Path, header: list[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """40 rows: a date, the target y (a noisy weekly pattern on a trend), a feature f and a text column."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(40):
        y = 10 + 0.5 * t + 3 * (t % 7 == 5) + round(float(rng.normal()), 3)
        rows.append([f"2024-01-{t + 1:02d}", round(y, 3), round(float(rng.normal()), 3), "note"])
    return write_csv(tmp_path / "series.csv", ["date", "y", "f", "comment"], rows)


def test_windows_splits_and_normaliser(series: Path) -> None:
    task = make_task("csv", csv=str(series), target="y", features="f", window=3, horizon=2)
    raw = np.genfromtxt(series, delimiter=",", skip_header=1, usecols=(1, 2))  # independent reader
    y, f = raw[:, 0], raw[:, 1]
    assert task.input_type == "vector" and task.input_size == 2 and task.output_size == 2
    assert task.target == "regress_horizon" and task.main_metric == "mae"
    # 40 rows: 28 train, 6 validation, 6 test, in order
    norm = task.normaliser
    assert norm is not None and norm["columns"] == ["y", "f"]
    assert norm["mean"] == pytest.approx([y[:28].mean(), f[:28].mean()])
    assert norm["std"] == pytest.approx([y[:28].std(), f[:28].std()])
    json.dumps(norm)
    val = task.eval_batches("val", 100)
    assert len(val) == 1 and len(val[0]) == 6 - 5 + 1  # windows lie inside the split
    starts = val[0].meta["start"].tolist()
    assert starts == [28, 29]
    for b in [task.train_batch(16, np.random.default_rng(0)), val[0], task.eval_batches("test", 100)[0]]:
        for row in range(len(b)):
            s = int(b.meta["start"][row])
            x = b.x[row].double().numpy() * np.array(norm["std"]) + np.array(norm["mean"])
            assert np.allclose(x[:, 0], y[s : s + 3], atol=1e-4)
            assert np.allclose(x[:, 1], f[s : s + 3], atol=1e-4)
            target = b.y[row].double().numpy() * norm["std"][0] + norm["mean"][0]
            assert np.allclose(target, y[s + 3 : s + 5], atol=1e-4)
    assert task.eval_batches("test", 100)[0].meta["start"].tolist() == [34, 35]
    train_starts = task.train_batch(500, np.random.default_rng(1)).meta["start"]
    assert int(train_starts.min()) == 0 and int(train_starts.max()) == 28 - 5
    assert len(task.render(val[0].x[0])) == 3 and task.render(val[0].x[0])[0].startswith("y=")


def test_normaliser_is_fitted_on_training_rows_only(series: Path, tmp_path: Path) -> None:
    # Same file, but from data row 29 on (the validation and test parts) y is 1e6.
    lines = series.read_text().splitlines()
    changed = [*lines[:30], *(line.split(",")[0] + ",1e6,0,x" for line in lines[30:])]
    other = tmp_path / "other.csv"
    other.write_text("\n".join(changed) + "\n")
    a = make_task("csv", csv=str(series), target="y", window=3, season=7)
    b = make_task("csv", csv=str(other), target="y", window=3, season=7)
    assert a.normaliser == b.normaliser  # rows after the 28 training rows do not move it
    assert a.eval_batches("test", 10)[0].y.abs().max() < 10 < b.eval_batches("test", 10)[0].y.abs().max()


def test_mase_by_hand(tmp_path: Path) -> None:
    # 20 rows: train = rows 0..13 (y = 0..13), val = rows 14..16, test = rows 17..19.
    y = [*range(14), 20, 30, 40, 50, 60, 70]
    path = write_csv(tmp_path / "hand.csv", ["y"], [[v] for v in y])
    task = make_task("csv", csv=str(path), target="y", window=1, horizon=1, season=2)
    # seasonal naive on the training part: |y[t] - y[t-2]| = 2 for every t, so the scale is 2.
    # A model that always predicts 0 in normalised units forecasts the training mean, 6.5.
    # Validation windows: input row 14 -> target 30, input row 15 -> target 40.
    got = task.evaluate(lambda b: torch.zeros(len(b), 1), "val")
    assert got["mae"] == pytest.approx((23.5 + 33.5) / 2)
    assert got["rmse"] == pytest.approx(math.sqrt((23.5**2 + 33.5**2) / 2))
    assert got["mase"] == pytest.approx(28.5 / 2)
    # the baseline is the seasonal-naive forecast of the same windows: y[t+1-2] -> 13 for 30, 20 for 40
    base = task.baseline()
    assert base["mae"] == pytest.approx((17 + 20) / 2) and base["mase"] == pytest.approx(18.5 / 2)
    # season 1 (the naive forecast): |y[t] - y[t-1]| = 1 on the training part
    naive = make_task("csv", csv=str(path), target="y", window=2, horizon=1, season=1)
    assert naive.normaliser is not None and naive.normaliser["mase_scale"] == pytest.approx(1.0)
    assert forecast_metrics(np.array([1.0, 2.0]), np.array([2.0, 4.0]), 0.5) == {
        "mae": 1.5,
        "rmse": pytest.approx(math.sqrt(2.5)),
        "mase": 3.0,
    }


def test_seasonal_naive_beyond_one_season(tmp_path: Path) -> None:
    y = [float(v) for v in np.random.default_rng(3).normal(size=60).round(3)]
    path = write_csv(tmp_path / "s.csv", ["y"], [[v] for v in y])
    task = make_task("csv", csv=str(path), target="y", window=4, horizon=5, season=2)
    starts = np.array([42, 43])
    fc = task.seasonal_naive(starts)  # type: ignore[attr-defined]
    for r, s in enumerate(starts):
        last = s + 3  # the last observed row of the window
        want = [y[last - 1], y[last], y[last - 1], y[last], y[last - 1]]  # phase of each step ahead
        assert fc[r].tolist() == pytest.approx(want)


def test_season_detection(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300)
    assert detect_season(np.sin(2 * np.pi * t / 12) + 0.5 * rng.normal(size=300)) == 12
    assert detect_season(0.05 * t + 3.0 * (t % 7 == 5) + 0.5 * rng.normal(size=300)) == 7
    assert detect_season(rng.normal(size=300)) == 1
    assert detect_season(np.cumsum(rng.normal(size=300))) == 1
    rows = [[round(float(v), 4)] for v in np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=300)]
    task = make_task("csv", csv=str(write_csv(tmp_path / "sine.csv", ["y"], rows)), target="y")
    assert task.config()["season"] == 12  # detected on the training part and recorded


def test_round_trip_and_changed_file(series: Path) -> None:
    task = make_task("csv", csv=str(series), target="y", features=["f"], window=4, seed=5)
    again = make_task(**task.config())
    assert again.normaliser == task.normaliser
    assert torch.equal(again.eval_batches("test", 8)[0].x, task.eval_batches("test", 8)[0].x)
    a = task.train_batch(4, np.random.default_rng(9))
    assert torch.equal(a.x, task.train_batch(4, np.random.default_rng(9)).x)
    series.write_text(series.read_text().replace("note", "NOTE"))
    with pytest.raises(DataError, match="sha256"):
        make_task(**task.config())


def test_perfect_forecast(series: Path) -> None:
    task = make_task("csv", csv=str(series), target="y", window=3, horizon=2, season=7)
    got = task.evaluate(lambda b: b.y.clone(), "test")
    assert got["mae"] == pytest.approx(0.0, abs=1e-4) and got["mase"] == pytest.approx(0.0, abs=1e-4)


def test_bad_csv(tmp_path: Path, series: Path) -> None:
    good: list[list[Any]] = [[i, float(i % 5) + i * 0.1] for i in range(40)]

    def bad(rows: Sequence[Sequence[Any]], **kw: Any) -> str:
        p = write_csv(tmp_path / "bad.csv", ["t", "y"], rows)
        with pytest.raises(DataError) as e:
            make_task("csv", csv=str(p), **{"target": "y", "window": 3, **kw})
        msg = str(e.value)
        assert msg and "\n" not in msg
        return msg

    assert "'z'" in bad(good, target="z") and "t, y" in bad(good, target="z")  # lists the real columns
    assert "'f'" in bad(good, features="f")
    assert "abc" in bad([*good[:10], [10, "abc"], *good[11:]])
    assert "line 12" in bad([*good[:10], [10, "abc"], *good[11:]])
    assert "empty" in bad([*good[:10], [10, ""], *good[11:]])
    assert "NaN" in bad([*good[:10], [10, "nan"], *good[11:]])
    assert "inf" in bad([*good[:10], [10, "inf"], *good[11:]])
    assert "window" in bad(good[:12])  # 12 rows: the validation part has 1 row
    assert "window" in bad(good, window=10)  # 40 rows: 6 in validation, fewer than 10 + 1
    assert "constant" in bad([[i, 4.0] for i in range(40)])
    assert "season" in bad(good, season=40)
    assert "season" in bad([[i, float(i % 4)] for i in range(40)], season=4)  # exactly periodic
    assert "no value" in bad([*good[:10], [10], *good[11:]])
    with pytest.raises(DataError, match="does not exist"):
        make_task("csv", csv=str(tmp_path / "nope.csv"), target="y")
    with pytest.raises(DataError, match="empty"):
        make_task("csv", csv=str(write_csv(tmp_path / "e.csv", [], [])), target="y")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("caf\u00e9,y\n1,2\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        make_task("csv", csv=str(latin), target="y")
    with pytest.raises(DataError, match="target"):
        make_task("csv", csv=str(series))
    with pytest.raises(DataError, match="horizon"):
        make_task("csv", csv=str(series), target="y", horizon=0)
