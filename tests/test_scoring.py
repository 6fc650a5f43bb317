"""Forecast metrics against values computed by hand (each comment shows the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmkit.data.base import DataError
from lstmkit.data.scoring import coverage, mae, mase_scale, pinball, rmse, score, smape, wql

Y = np.array([1.0, 2.0, 3.0, 4.0])
P = np.array([2.0, 2.0, 1.0, 4.0])  # errors p - y: +1, 0, -2, 0


def test_mae_rmse_by_hand() -> None:
    assert mae(P, Y) == pytest.approx(0.75)  # (1 + 0 + 2 + 0) / 4
    assert rmse(P, Y) == pytest.approx(math.sqrt(1.25))  # sqrt((1 + 0 + 4 + 0) / 4)
    assert mae(Y, Y) == 0.0 and rmse(Y, Y) == 0.0


def test_metrics_pool_origins_and_horizon() -> None:
    # (origins, horizon) = (2, 2): the same four points as the flat case, so the same numbers
    assert mae(P.reshape(2, 2), Y.reshape(2, 2)) == pytest.approx(0.75)
    assert smape(P.reshape(2, 2), Y.reshape(2, 2)) == pytest.approx(smape(P, Y))


def test_mase_scale_by_hand() -> None:
    hist = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    # season 1: |3-1|, |2-3|, |5-2|, |4-5| = 2, 1, 3, 1 -> 7/4
    assert mase_scale(hist, 1) == pytest.approx(1.75)
    # season 2: |2-1|, |5-3|, |4-2| = 1, 2, 2 -> 5/3
    assert mase_scale(hist, 2) == pytest.approx(5 / 3)
    # season 5 (n = 5 <= 5): falls back to season 1 -> 7/4
    assert mase_scale(hist, 5) == pytest.approx(1.75)
    assert mase_scale(hist, 12) == pytest.approx(1.75)


def test_mase_scale_degenerate_is_nan() -> None:
    assert math.isnan(mase_scale(np.array([3.0]), 1))  # one point: no difference at all
    assert math.isnan(mase_scale(np.full(10, 2.0), 1))  # constant: every difference 0
    # repeats its season exactly: every seasonal difference 0
    assert math.isnan(mase_scale(np.tile([1.0, 5.0, 2.0], 4), 3))
    with pytest.raises(DataError, match="season"):
        mase_scale(Y, 0)


def test_smape_by_hand_and_zero_terms() -> None:
    # terms 2|p-y|/(|p|+|y|): 2/3, 0, 4/4 = 1, 0 -> mean 5/12 -> 41.666...%
    assert smape(P, Y) == pytest.approx(100 * 5 / 12)
    # p = y = 0 counts 0; p = 1, y = 0 counts 2/1 = 2 -> mean (0 + 2) / 2 = 1 -> 100%
    assert smape(np.array([0.0, 1.0]), np.array([0.0, 0.0])) == pytest.approx(100.0)
    assert smape(np.zeros(3), np.zeros(3)) == 0.0
    # opposite signs: 2*|1-(-1)| / (1+1) = 2 -> the maximum, 200%
    assert smape(np.array([1.0]), np.array([-1.0])) == pytest.approx(200.0)


def test_pinball_by_hand() -> None:
    y = np.array([10.0, 0.0])
    q = np.array([[8.0, 12.0], [1.0, -1.0]])  # quantiles 0.1 and 0.9 of each point
    # y=10: q0.1=8  -> d=+2 -> 0.1*2 = 0.2;   q0.9=12 -> d=-2 -> (0.9-1)*(-2) = 0.2
    # y=0 : q0.1=1  -> d=-1 -> 0.9*1 = 0.9;   q0.9=-1 -> d=+1 -> 0.9*1 = 0.9
    # mean of 0.2, 0.2, 0.9, 0.9 = 0.55
    assert pinball(q, y, [0.1, 0.9]) == pytest.approx(0.55)
    # at the median the pinball loss is half the absolute error
    assert pinball(P[:, None], Y, [0.5]) == pytest.approx(mae(P, Y) / 2)


def test_coverage_by_hand() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0])
    lo = np.array([0.0, 2.0, 3.5, 5.0])
    hi = np.array([2.0, 3.0, 4.0, 3.0])  # the last interval is crossed (lo > hi)
    # inside: 1 in [0,2] yes; 2 in [2,3] yes (closed); 3 in [3.5,4] no; crossed no -> 2/4
    assert coverage(lo, hi, y) == pytest.approx(0.5)


def test_wql_by_hand() -> None:
    y = np.array([10.0, 0.0])
    q = np.array([[8.0, 12.0], [1.0, -1.0]])
    # sum |y| = 10; q0.1 losses 0.2 + 0.9 = 1.1; q0.9 losses 0.2 + 0.9 = 1.1
    # each 2 * 1.1 / 10 = 0.22; mean over the two quantiles = 0.22
    assert wql(q, y, [0.1, 0.9]) == pytest.approx(0.22)
    # asymmetric: q0.1 = 10 exact (loss 0), q0.9 = 5 -> d = +5 -> 0.9*5 = 4.5, sum|y| = 10
    # -> quantile 0.1: 0; quantile 0.9: 2*4.5/10 = 0.9; mean = 0.45
    assert wql(np.array([[10.0, 5.0]]), np.array([10.0]), [0.1, 0.9]) == pytest.approx(0.45)
    # all-zero truth: the weight is undefined -> NaN
    assert math.isnan(wql(np.array([[1.0, 2.0]]), np.array([0.0]), [0.1, 0.9]))


def test_wql_is_twice_the_pinball_over_mean_abs() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(5, 1, (3, 4))
    q = np.sort(rng.normal(5, 1, (3, 4, 3)), axis=-1)
    qs = [0.1, 0.5, 0.9]
    # (1/Q) sum_j 2 S_j / sum|y| = 2 * (sum_j S_j / (N Q)) * N / sum|y| = 2 * pinball / mean|y|
    assert wql(q, y, qs) == pytest.approx(2 * pinball(q, y, qs) / np.mean(np.abs(y)))


def test_score_keys_and_values() -> None:
    y = np.array([10.0, 0.0])
    med = np.array([9.0, 0.5])
    q = np.stack([np.array([8.0, 1.0]), med, np.array([12.0, -1.0])], axis=-1)  # 0.1, 0.5, 0.9
    s = score(med, y, scale=2.0, q_pred=q, quantiles=[0.1, 0.5, 0.9])
    assert set(s) == {"mae", "rmse", "mase", "smape", "coverage_80", "wql"}
    assert s["mae"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert s["rmse"] == pytest.approx(math.sqrt(0.625))  # sqrt((1 + 0.25) / 2)
    assert s["mase"] == pytest.approx(0.375)  # 0.75 / 2
    assert s["smape"] == pytest.approx(100 * (2 / 19 + 2) / 2)  # 2*1/19 and 2*0.5/0.5 = 2
    # [8, 12] holds 10; [1, -1] is crossed and holds nothing -> 0.5
    assert s["coverage_80"] == pytest.approx(0.5)
    # q0.1: 0.2 + 0.9; q0.5: 0.5*1 + 0.5*0.5 = 0.75; q0.9: 0.2 + 0.9 -> 2/10 * (1.1, 0.75, 1.1), mean
    assert s["wql"] == pytest.approx(np.mean([0.22, 0.15, 0.22]))
    # no quantiles: the four point metrics only; another interval names its width
    assert set(score(med, y, scale=2.0)) == {"mae", "rmse", "mase", "smape"}
    s90 = score(med, y, scale=2.0, q_pred=q[..., [0, 2]], quantiles=[0.05, 0.95], interval=(0.05, 0.95))
    assert "coverage_90" in s90


def test_score_mase_nan_for_degenerate_scale() -> None:
    assert math.isnan(score(P, Y, scale=math.nan)["mase"])
    assert math.isnan(score(P, Y, scale=0.0)["mase"])


def test_bad_input() -> None:
    with pytest.raises(DataError, match="NaN"):
        mae(P, np.array([1.0, np.nan, 3.0, 4.0]))
    with pytest.raises(ValueError, match="NaN"):
        score(P, np.array([1.0, 2.0, np.inf, 4.0]), scale=1.0)
    with pytest.raises(ValueError, match="shape"):
        mae(P[:3], Y)
    with pytest.raises(ValueError, match="empty"):
        rmse(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="pred"):
        smape(np.array([1.0, np.nan, 3.0, 4.0]), Y)
    with pytest.raises(ValueError, match="q_pred"):
        pinball(np.zeros((4, 2)), Y, [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="quantiles"):
        wql(np.zeros((4, 1)), Y, [1.5])
    with pytest.raises(ValueError, match="not among the quantiles"):
        score(P, Y, scale=1.0, q_pred=np.zeros((4, 2)), quantiles=[0.2, 0.8])
    with pytest.raises(ValueError, match="without quantiles"):
        score(P, Y, scale=1.0, q_pred=np.zeros((4, 2)))
