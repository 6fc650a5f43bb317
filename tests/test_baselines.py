"""Baseline forecasts: the naive ones by hand, the statsforecast ones on series whose answer is known."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lstmkit.data.base import DataError
from lstmkit.data.baselines import BASELINES, baseline_forecasts, naive, seasonal_naive


def _noisy_seasonal(n: int, season: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    return 20 + 0.1 * t + 3 * np.sin(2 * np.pi * t / season) + np.random.default_rng(seed).normal(0, 0.5, n)


# ----------------------------------------------------------------------------- naive, seasonal naive


def test_naive_by_hand() -> None:
    np.testing.assert_array_equal(naive(np.array([4.0, 1.0, 7.0]), 3), [7.0, 7.0, 7.0])
    np.testing.assert_array_equal(naive(np.array([2.5]), 1), [2.5])


def test_seasonal_naive_by_hand() -> None:
    hist = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # T = 6, last season (m = 3): 5, 6, 7
    # k=1: y[6+1-3*1] = y[4] = 5; k=3: y[6+3-3] = y[6] = 7; k=4: y[6+4-3*2] = y[4] = 5; k=7: y[6+7-9] = y[4] = 5
    np.testing.assert_array_equal(seasonal_naive(hist, 7, 3), [5.0, 6.0, 7.0, 5.0, 6.0, 7.0, 5.0])
    np.testing.assert_array_equal(seasonal_naive(hist, 2, 3), [5.0, 6.0])
    # season 1 is naive; season = n uses the whole history; a history shorter than a season is naive
    np.testing.assert_array_equal(seasonal_naive(hist, 3, 1), [7.0, 7.0, 7.0])
    np.testing.assert_array_equal(seasonal_naive(hist, 8, 7), [1, 2, 3, 4, 5, 6, 7, 1])
    np.testing.assert_array_equal(seasonal_naive(hist[:2], 4, 3), [2.0, 2.0, 2.0, 2.0])


def test_naive_bad_input() -> None:
    with pytest.raises(DataError, match="empty"):
        naive(np.array([]), 2)
    with pytest.raises(DataError, match="NaN"):
        naive(np.array([1.0, np.nan]), 2)
    with pytest.raises(DataError, match="h must be"):
        seasonal_naive(np.array([1.0, 2.0]), 0, 1)
    with pytest.raises(DataError, match="season must be"):
        seasonal_naive(np.array([1.0, 2.0]), 2, 0)


# ----------------------------------------------------------------------------- baseline_forecasts


def test_shapes_keys_and_notes() -> None:
    y = _noisy_seasonal(48, 4)
    r = baseline_forecasts(y, [30, 40, 48], 6, 4, levels=(80, 95))
    assert set(r) == set(BASELINES)
    for method in BASELINES:
        assert r[method]["mean"].shape == (3, 6)
        assert r[method]["note"].shape == (3,)
        assert np.isfinite(r[method]["mean"]).all()
    for method in ("autoets", "autoarima"):
        assert set(r[method]) == {"mean", "note", "lo-80", "hi-80", "lo-95", "hi-95"}
        assert list(r[method]["note"]) == ["", "", ""]
    assert set(r["naive"]) == {"mean", "note"}
    np.testing.assert_array_equal(r["naive"]["mean"][1], np.full(6, y[39]))
    np.testing.assert_array_equal(r["seasonal_naive"]["mean"][2], np.tile(y[44:48], 2)[:6])


def test_origin_never_reads_the_future() -> None:
    y = _noisy_seasonal(40, 4, seed=1)
    origins = [25, 33]
    clean = baseline_forecasts(y, origins, 5, 4)
    for i, o in enumerate(origins):
        for poison in (np.nan, 1e12):
            bad = y.copy()
            bad[o:] = poison  # everything from the origin on
            got = baseline_forecasts(bad, [o], 5, 4)
            for method in BASELINES:
                for key, value in clean[method].items():
                    np.testing.assert_array_equal(got[method][key][0], value[i], err_msg=f"{method} {key} {o} {poison}")


def test_autoets_continues_a_linear_trend() -> None:
    t = np.arange(30.0)
    y = 3 + 2 * t
    r = baseline_forecasts(y, [30], 8, 1, methods=("autoets",))
    np.testing.assert_allclose(r["autoets"]["mean"][0], 3 + 2 * np.arange(30.0, 38.0), rtol=0, atol=1e-3)
    assert r["autoets"]["note"][0] == ""


def test_autoets_repeats_a_pure_season() -> None:
    pattern = np.array([11.0, 15.0, 12.0, 18.0])
    y = np.tile(pattern, 10)  # 40 points
    r = baseline_forecasts(y, [40], 10, 4, methods=("autoets",))
    np.testing.assert_allclose(r["autoets"]["mean"][0], np.tile(pattern, 3)[:10], rtol=0, atol=1e-2)
    assert r["autoets"]["note"][0] == ""


def test_intervals_are_ordered() -> None:
    y = _noisy_seasonal(60, 4, seed=2)
    r = baseline_forecasts(y, [50, 60], 6, 4, methods=("autoets", "autoarima"), levels=(80, 95))
    for method in ("autoets", "autoarima"):
        d = r[method]
        assert (d["lo-80"] < d["mean"]).all() and (d["mean"] < d["hi-80"]).all(), method
        assert (d["lo-95"] < d["lo-80"]).all() and (d["hi-80"] < d["hi-95"]).all(), method


def test_short_history_falls_back_to_naive() -> None:
    y = np.array([5.0, 7.0, 6.0, 100.0])  # only y[:3] is seen
    r = baseline_forecasts(y, [3], 4, 1, methods=("autoets", "autoarima", "seasonal_naive"))
    ets = r["autoets"]
    assert "naive" in ets["note"][0] and "tiny datasets" in ets["note"][0]
    np.testing.assert_array_equal(ets["mean"][0], [6.0] * 4)
    assert (ets["lo-80"] <= ets["mean"]).all() and (ets["mean"] <= ets["hi-80"]).all()
    assert np.isfinite(r["autoarima"]["mean"]).all()  # AutoARIMA fits 3 points (a mean model)
    # a history of one point: every method still answers
    one = baseline_forecasts(np.array([4.0]), [1], 3, 12)
    for method in BASELINES:
        np.testing.assert_array_equal(one[method]["mean"][0], [4.0] * 3)
    assert "shorter than one season" in one["seasonal_naive"]["note"][0]


def test_constant_history() -> None:
    y = np.full(30, 2.5)
    r = baseline_forecasts(y, [30], 5, 4, methods=("autoets", "autoarima"))
    for method in ("autoets", "autoarima"):
        assert r[method]["note"][0].startswith("constant history")
        for key in ("mean", "lo-80", "hi-80"):
            np.testing.assert_array_equal(r[method][key][0], [2.5] * 5)


def test_failed_or_nan_fit_falls_back_to_naive(monkeypatch: pytest.MonkeyPatch) -> None:
    import statsforecast.models as sm

    def boom(self: object, y: np.ndarray, h: int, **kw: object) -> dict[str, np.ndarray]:
        raise RuntimeError("optimizer diverged")

    def nans(self: object, y: np.ndarray, h: int, **kw: object) -> dict[str, np.ndarray]:
        return {"mean": np.full(h, np.nan), "lo-80": np.zeros(h), "hi-80": np.zeros(h)}

    y = _noisy_seasonal(30, 4)
    monkeypatch.setattr(sm.AutoETS, "forecast", boom)
    monkeypatch.setattr(sm.AutoARIMA, "forecast", nans)
    r = baseline_forecasts(y, [30], 3, 4, methods=("autoets", "autoarima"))
    assert "RuntimeError: optimizer diverged" in r["autoets"]["note"][0]
    assert "NaN" in r["autoarima"]["note"][0]
    for method in ("autoets", "autoarima"):
        np.testing.assert_array_equal(r[method]["mean"][0], [y[-1]] * 3)
        assert (r[method]["lo-80"] < r[method]["mean"]).all()


def test_long_season_uses_mstl() -> None:
    season = 30  # above AutoETS's limit (24) and AutoARIMA's (12)
    t = np.arange(90 + season)
    truth = 20 + 0.05 * t + 3 * np.sin(2 * np.pi * t / season)
    y = truth + np.random.default_rng(3).normal(0, 0.2, t.size)
    r = baseline_forecasts(y, [90, 50], season, season, methods=("autoets", "autoarima"))
    for method in ("autoets", "autoarima"):
        notes = r[method]["note"]
        assert notes[0].startswith("MSTL"), notes[0]  # 90 points = 3 seasons
        assert notes[1].startswith("non-seasonal") and "two seasons" in notes[1], notes[1]  # 50 < 60
        # the seasonal shape is kept: far better than the amplitude (3) of the season
        assert np.abs(r[method]["mean"][0] - truth[90:]).mean() < 0.5, method
        assert (r[method]["lo-80"][0] < r[method]["hi-80"][0]).all()


def test_history_within_one_season_is_non_seasonal() -> None:
    y = _noisy_seasonal(10, 12)
    r = baseline_forecasts(y, [10], 3, 12, methods=("autoets",))
    assert r["autoets"]["note"][0].startswith("non-seasonal AutoETS: history of 10 points")


def test_bad_input() -> None:
    y = _noisy_seasonal(20, 4)
    with pytest.raises(DataError, match="past the end"):
        baseline_forecasts(y, [21], 2, 4)
    with pytest.raises(DataError, match="origin"):
        baseline_forecasts(y, [0], 2, 4)
    with pytest.raises(DataError, match="unknown method 'prophet'"):
        baseline_forecasts(y, [10], 2, 4, methods=("prophet",))
    with pytest.raises(DataError, match="levels"):
        baseline_forecasts(y, [10], 2, 4, levels=(100,))
    gap = y.copy()
    gap[5] = np.nan
    with pytest.raises(DataError, match=r"y\[:10\] holds NaN/inf \(first at index 5\)"):
        baseline_forecasts(gap, [10], 2, 4, methods=("naive",))
    with pytest.raises(DataError, match="1-D"):
        baseline_forecasts(y.reshape(4, 5), [3], 2, 4)


def test_import_is_lazy() -> None:
    code = "import sys, lstmkit.data.baselines, lstmkit.data.scoring; assert 'statsforecast' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_autoets_beats_seasonal_naive_on_airpassengers() -> None:
    from pmdarima.datasets import load_airpassengers

    y = np.asarray(load_airpassengers(), dtype=np.float64)  # 144 months
    h = 12
    origins = [y.size - h - k for k in range(11, -1, -1)]  # the last 12 origins with a full horizon
    r = baseline_forecasts(y, origins, h, 12, methods=("seasonal_naive", "autoets"))
    true = np.stack([y[o : o + h] for o in origins])
    mae = {m: float(np.abs(r[m]["mean"] - true).mean()) for m in r}
    # measured: AutoETS 40.8, seasonal naive 51.8
    assert mae["autoets"] < 0.9 * mae["seasonal_naive"], mae
