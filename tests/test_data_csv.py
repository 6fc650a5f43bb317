"""The csv task's file handling: season detection, rebuilding from its config, and bad files (the
forecasting itself: tests/test_forecast.py; the reader: tests/test_series.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lstmkit.data import DataError, make_task
from lstmkit.data.season import detect_season, freq_season, seasonal_period


def write_csv(path: Path, header: list[str], rows: Sequence[Sequence[Any]]) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """60 daily rows: the target y (a noisy weekly pattern on a trend), a feature f and a text column."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(60):
        y = 10 + 0.5 * t + 3 * (t % 7 == 5) + round(float(rng.normal()), 3)
        day = np.datetime64("2024-01-01") + t
        rows.append([str(day), round(y, 3), round(float(rng.normal()), 3), "note"])
    return write_csv(tmp_path / "series.csv", ["date", "y", "f", "comment"], rows)


def test_season_detection(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(300)
    assert detect_season(np.sin(2 * np.pi * t / 12) + 0.5 * rng.normal(size=300)) == 12
    assert detect_season(0.05 * t + 3.0 * (t % 7 == 5) + 0.5 * rng.normal(size=300)) == 7
    assert detect_season(rng.normal(size=300)) == 1
    assert detect_season(np.cumsum(rng.normal(size=300))) == 1
    # four seasons are too few for the significance tests; the monthly dates' season fills in
    short = np.sin(2 * np.pi * t[:48] / 12) + 0.05 * t[:48]
    assert detect_season(short) == 1 and seasonal_period(short, "MS") == 12
    assert seasonal_period(rng.normal(size=48), "MS") == 1  # no season in the data: none taken
    walk = 100 + np.cumsum(rng.normal(size=300))  # closes on business days: no weekly season
    assert seasonal_period(walk, "B") == 1
    assert [freq_season(f) for f in ("MS", "QS-OCT", "D", "B", "30min", "h", None, "YS")] == [12, 4, 7, 5, 48, 24, 1, 1]
    rows = [[round(float(v), 4)] for v in np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=300)]
    task = make_task("csv", csv=str(write_csv(tmp_path / "sine.csv", ["y"], rows)), target="y")
    assert task.config()["season"] == 12  # detected and recorded


def test_round_trip_and_changed_file(series: Path) -> None:
    task = make_task("csv", csv=str(series), target="y", date="date", features=["f"], window=8, seed=5)
    again = make_task(**task.config())
    assert again.normaliser == task.normaliser
    assert torch.equal(again.eval_batches("test", 8)[0].x, task.eval_batches("test", 8)[0].x)
    a = task.train_batch(4, np.random.default_rng(9))
    assert torch.equal(a.x, task.train_batch(4, np.random.default_rng(9)).x)
    series.write_text(series.read_text().replace("note", "NOTE"))
    with pytest.raises(DataError, match="sha256"):
        make_task(**task.config())


def test_bad_csv(tmp_path: Path, series: Path) -> None:
    good: list[list[Any]] = [[i, float(i % 5) + i * 0.1] for i in range(60)]

    def bad(rows: Sequence[Sequence[Any]], **kw: Any) -> str:
        p = write_csv(tmp_path / "bad.csv", ["t", "y"], rows)
        with pytest.raises(DataError) as e:
            make_task("csv", csv=str(p), **{"target": "y", "window": 6, **kw})
        msg = str(e.value)
        assert msg and "\n" not in msg
        return msg

    assert "'z'" in bad(good, target="z") and "t, y" in bad(good, target="z")  # lists the real columns
    assert "'f'" in bad(good, features="f")
    assert "abc" in bad([*good[:10], [10, "abc"], *good[11:]])
    assert "line 12" in bad([*good[:10], [10, "abc"], *good[11:]])
    assert "inf" in bad([*good[:10], [10, "inf"], *good[11:]])
    assert "window" in bad(good[:7])  # 7 rows: too short for a window of 6, a horizon and a backtest
    assert "window" in bad(good, window=60)
    only_missing = bad([[i, ""] for i in range(60)])  # only missing values in the target
    assert "no data rows" in only_missing or "no value" in only_missing
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


def test_missing_values_are_filled_and_counted(tmp_path: Path) -> None:
    rows: list[list[Any]] = [[i, float(i)] for i in range(60)]
    rows[20][1] = ""
    rows[21][1] = "nan"
    task = make_task("csv", csv=str(write_csv(tmp_path / "m.csv", ["t", "y"], rows)), target="y", window=8)
    assert task.panel.series[0].y[20:22].tolist() == [20.0, 21.0]  # linear interpolation
    assert any("2" in n and "interpolation" in n for n in task.notes)
