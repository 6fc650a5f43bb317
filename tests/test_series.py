"""lstmkit.data.series: reading forecasting data (dates, frequency, sorting, filling, bad input)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmkit.data.base import DataError
from lstmkit.data.series import Panel, Series, calendar_features, calendar_names, read_panel


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def csv_of(dates: list[str], ys: list[str], extra: dict[str, list[str]] | None = None) -> str:
    extra = extra or {}
    head = ",".join(["date", "y", *extra])
    rows = [",".join([d, y, *(v[i] for v in extra.values())]) for i, (d, y) in enumerate(zip(dates, ys))]
    return "\n".join([head, *rows]) + "\n"


def day(s: str) -> np.datetime64:
    return np.datetime64(s, "ns")


# --- frequency inference ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dates, freq",
    [
        (["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01", "2020-05-01"], "MS"),
        (["2019-11-30", "2019-12-31", "2020-01-31", "2020-02-29", "2020-03-31"], "ME"),
        (["2019-01-01", "2019-04-01", "2019-07-01", "2019-10-01", "2020-01-01"], "QS-OCT"),
        (["2020-02-27", "2020-02-28", "2020-02-29", "2020-03-01", "2020-03-02"], "D"),
        # Thursday, Friday, then Monday..Wednesday: weekends skipped
        (["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07", "2020-01-08"], "B"),
        (["2020-01-01 23:00", "2020-01-01 23:30", "2020-01-02 00:00", "2020-01-02 00:30"], "30min"),
        (["2020-01-05", "2020-01-12", "2020-01-19", "2020-01-26", "2020-02-02"], "W-SUN"),
        (["2020-03-08 22:00", "2020-03-08 23:00", "2020-03-09 00:00", "2020-03-09 01:00"], "h"),
        (["2001-01-01", "2002-01-01", "2003-01-01", "2004-01-01"], "YS-JAN"),
    ],
)
def test_frequency_inferred(tmp_path: Path, dates: list[str], freq: str) -> None:
    p = read_panel(write(tmp_path, csv_of(dates, [str(i) for i in range(len(dates))])), target="y", date="date")
    assert p.freq == freq
    assert p.notes == []
    (s,) = p.series
    assert s.dates.dtype == np.dtype("datetime64[ns]")
    assert s.dates[0] == day(dates[0].replace(" ", "T")) and s.dates[-1] == day(dates[-1].replace(" ", "T"))


def test_quarterly_series_starting_in_different_quarters_agree() -> None:
    df = pd.DataFrame(
        {
            "id": ["a"] * 4 + ["b"] * 4,
            "date": ["2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01"]
            + ["2020-04-01", "2020-07-01", "2020-10-01", "2021-01-01"],
            "y": np.arange(8.0),
        }
    )
    p = read_panel(df, target="y", date="date", id="id")
    assert p.freq == "QS-OCT"
    assert [s.id for s in p.series] == ["a", "b"]


def test_series_with_different_frequencies_are_refused() -> None:
    df = pd.DataFrame(
        {
            "id": ["a"] * 4 + ["b"] * 4,
            "date": ["2020-01-05", "2020-01-12", "2020-01-19", "2020-01-26"]  # Sundays
            + ["2020-01-06", "2020-01-13", "2020-01-20", "2020-01-27"],  # Mondays
            "y": np.arange(8.0),
        }
    )
    with pytest.raises(DataError, match=r"series 'b' has the frequency W-MON but series 'a' has W-SUN"):
        read_panel(df, target="y", date="date", id="id")


# --- business days ------------------------------------------------------------------------------


def business_days(start: str, n: int) -> list[str]:
    """n weekdays from start (a weekday), by hand: Monday..Friday only."""
    d, out = np.datetime64(start, "D"), []
    while len(out) < n:
        if (d.astype("datetime64[D]").view("int64") - 4) % 7 < 5:  # 1970-01-05 was a Monday
            out.append(str(d))
        d += 1
    return out


def test_business_days_with_a_few_holidays_are_kept_and_noted(tmp_path: Path) -> None:
    days = business_days("2020-01-02", 60)
    assert days[:3] == ["2020-01-02", "2020-01-03", "2020-01-06"]
    kept = [d for d in days if d not in ("2020-01-20", "2020-02-17")]  # two Mondays off: 2/59 steps < 5%
    p = read_panel(write(tmp_path, csv_of(kept, [str(i) for i in range(len(kept))])), target="y", date="date")
    assert p.freq == "B"
    (s,) = p.series
    assert len(s) == 58 and np.array_equal(s.y, np.arange(58.0))  # nothing invented for the holidays
    assert any("2 business days missing" in n and "holidays" in n for n in p.notes)


def test_business_days_with_many_gaps_are_refused(tmp_path: Path) -> None:
    days = business_days("2020-01-02", 60)
    kept = days[:30] + days[40:]  # 2020-02-13..26 gone: ten business days of 59 steps
    f = write(tmp_path, csv_of(kept, ["1"] * len(kept)))
    with pytest.raises(DataError, match=r"line 32: the date 2020-02-27 follows 2020-02-12, .* next date is 2020-02-13"):
        read_panel(f, target="y", date="date")


def test_weekend_date_in_business_day_data_is_refused(tmp_path: Path) -> None:
    days = business_days("2020-01-02", 20)
    days.insert(2, "2020-01-04")  # a Saturday
    with pytest.raises(DataError, match=r"line 4: the date 2020-01-04 follows 2020-01-03.* next date is 2020-01-06"):
        read_panel(write(tmp_path, csv_of(days, ["1"] * len(days))), target="y", date="date")


def test_goog_closes_read_as_business_days(tmp_path: Path) -> None:
    cbook = pytest.importorskip("matplotlib.cbook")
    data = cbook.get_sample_data("goog.npz")["price_data"]
    df = pd.DataFrame({"date": data["date"].astype(str), "close": data["close"]})
    df.to_csv(tmp_path / "goog.csv", index=False)
    p = read_panel(tmp_path / "goog.csv", target="close", date="date")
    assert p.freq == "B"
    (s,) = p.series
    assert len(s) == 1047 and s.y[0] == 100.34
    assert any("37 business days missing" in n for n in p.notes)  # market holidays, 2004-08-19..2008-10-14


# --- sorting, duplicates, irregular and unparsable dates -----------------------------------------


def test_reverse_order_is_sorted_with_a_note(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(["2020-03-01", "2020-02-01", "2020-01-01"], ["30", "20", "10"]))
    p = read_panel(f, target="y", date="date")
    (s,) = p.series
    assert list(s.dates) == [day("2020-01-01"), day("2020-02-01"), day("2020-03-01")]
    assert list(s.y) == [10.0, 20.0, 30.0]
    assert p.notes == ["rows were in reverse date order; sorted by date"]


def test_shuffled_order_is_sorted_with_a_note(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(["2020-02-01", "2020-01-01", "2020-03-01"], ["20", "10", "30"]))
    p = read_panel(f, target="y", date="date")
    assert list(p.series[0].y) == [10.0, 20.0, 30.0]
    assert p.notes == ["rows were not in date order; sorted by date"]


def test_duplicate_date_names_the_second_row(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(["2020-01-01", "2020-02-01", "2020-03-01", "2020-02-01"], ["1", "2", "3", "4"]))
    with pytest.raises(DataError, match=r"line 5: .*the date 2020-02-01 twice \(first at line 3\)") as e:
        read_panel(f, target="y", date="date")
    assert "\n" not in str(e.value)


def test_duplicate_date_within_one_series_of_many() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "a", "b", "b"],
            "date": ["2020-01-01", "2020-01-01", "2020-01-02", "2020-01-02", "2020-01-01"],
        }
    )
    df["y"] = 1.0
    df.index = [10, 11, 12, 13, 14]
    with pytest.raises(
        DataError, match=r"DataFrame row 14: series 'b' has the date 2020-01-01 twice \(first at row 11\)"
    ):
        read_panel(df, target="y", date="date", id="id")


def test_missing_month_names_the_row_and_the_expected_date(tmp_path: Path) -> None:
    dates = ["2020-01-01", "2020-02-01", "2020-03-01", "2020-05-01", "2020-06-01", "2020-07-01"]
    f = write(tmp_path, csv_of(dates, ["1"] * 6))
    with pytest.raises(DataError) as e:
        read_panel(f, target="y", date="date")
    msg = str(e.value)
    assert "line 5" in msg and "2020-05-01 follows 2020-03-01" in msg and "next date is 2020-04-01" in msg
    assert "fill in the missing dates" in msg


def test_irregular_series_among_regular_ones_is_named() -> None:
    rows = [("a", f"2020-01-{d:02d}", 1.0) for d in range(1, 11)]
    rows += [("b", f"2020-01-{d:02d}", 1.0) for d in (1, 2, 3, 4, 6, 7, 8, 9, 10, 11)]
    df = pd.DataFrame(rows, columns=["id", "date", "y"])
    with pytest.raises(DataError, match=r"DataFrame row 14: series 'b': the date 2020-01-06 follows 2020-01-04"):
        read_panel(df, target="y", date="date", id="id")


def test_unparsable_date_names_the_row_and_text(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(["2020-01-01", "2020-02-01", "2020-13-45", "2020-04-01"], ["1"] * 4))
    with pytest.raises(DataError, match=r"line 4: the date column 'date' holds '2020-13-45', which does not parse"):
        read_panel(f, target="y", date="date")
    f = write(tmp_path, csv_of(["2020-01-01", "", "2020-03-01"], ["1"] * 3))
    with pytest.raises(DataError, match=r"line 3: the date column 'date' is empty"):
        read_panel(f, target="y", date="date")


def test_dates_on_the_15th_have_no_frequency() -> None:
    df = pd.DataFrame({"date": ["2020-01-15", "2020-02-15", "2020-03-15", "2020-04-15"], "y": 1.0})
    with pytest.raises(DataError, match=r"same day of each month.*first \(or the last\) day"):
        read_panel(df, target="y", date="date")


def test_dates_in_mixed_formats_and_with_utc_offsets() -> None:
    df = pd.DataFrame({"date": ["2020-01-01", "2020/01/02", "Jan 3 2020"], "y": [1.0, 2.0, 3.0]})
    p = read_panel(df, target="y", date="date")
    assert p.freq == "D" and p.series[0].dates[2] == day("2020-01-03")
    off = pd.DataFrame({"date": ["2020-03-28T00:00+01:00", "2020-03-29T00:00+01:00", "2020-03-30T00:00+02:00"]})
    off["y"] = 1.0
    p = read_panel(off, target="y", date="date")  # the local clock time is kept: midnight each day
    assert p.freq == "D" and list(p.series[0].dates) == [day("2020-03-28"), day("2020-03-29"), day("2020-03-30")]


# --- filling ------------------------------------------------------------------------------------


def monthly(n: int) -> list[str]:
    return [f"{2020 + i // 12}-{i % 12 + 1:02d}-01" for i in range(n)]


def test_interpolation_by_hand(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(4), ["1", "", "NaN", "4"]))
    p = read_panel(f, target="y", date="date")
    assert list(p.series[0].y) == [1.0, 2.0, 3.0, 4.0]
    assert p.notes == ["filled 2 missing values of 'y' by linear interpolation"]


def test_interpolation_ends_take_the_nearest_value(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(7), ["", "", "5", "", "9", "NA", ""]))
    p = read_panel(f, target="y", date="date")
    assert list(p.series[0].y) == [5.0, 5.0, 5.0, 7.0, 9.0, 9.0, 9.0]


def test_ffill_zero_and_error_policies(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(6), ["", "2", "", "", "6", ""]))
    p = read_panel(f, target="y", date="date", fill="ffill")
    assert list(p.series[0].y) == [2.0, 2.0, 2.0, 2.0, 6.0, 6.0]  # a leading gap takes the first value
    assert p.notes == ["filled 4 missing values of 'y' with the last value before them"]
    p = read_panel(f, target="y", date="date", fill="zero")
    assert list(p.series[0].y) == [0.0, 2.0, 0.0, 0.0, 6.0, 0.0]
    with pytest.raises(DataError, match=r"line 2: column 'y' is empty; fill it in, or choose a fill policy"):
        read_panel(f, target="y", date="date", fill="error")


def test_fill_works_per_series_and_counts_per_series() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "a", "b", "a", "b"],
            "date": ["2020-01-01", "2020-01-01", "2020-01-02", "2020-01-02", "2020-01-03", "2020-01-03"],
            "y": [1.0, 10.0, np.nan, np.nan, 3.0, np.nan],
        }
    )
    p = read_panel(df, target="y", date="date", id="id")
    a, b = p.series
    assert list(a.y) == [1.0, 2.0, 3.0]  # interpolated inside a
    assert list(b.y) == [10.0, 10.0, 10.0]  # b's trailing gap takes b's last value, not a's
    assert p.notes == ["filled 3 missing values of 'y' by linear interpolation (series 'a': 1, 'b': 2)"]


def test_covariates_are_filled_the_same_way(tmp_path: Path) -> None:
    text = csv_of(monthly(4), ["1", "2", "3", "4"], {"temp": ["0", "", "", "6"], "promo": ["1", "0", "", "1"]})
    p = read_panel(write(tmp_path, text), target="y", date="date", features=["temp"], future_features=["promo"])
    (s,) = p.series
    assert s.past.shape == (4, 1) and s.future.shape == (4, 1)
    assert list(s.past[:, 0]) == [0.0, 2.0, 4.0, 6.0]
    assert list(s.future[:, 0]) == [1.0, 0.0, 0.5, 1.0]
    assert s.past.dtype == np.float64 and s.y.dtype == np.float64
    assert "filled 2 missing values of 'temp' by linear interpolation" in p.notes


def test_target_with_no_values(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(3), ["", "", ""]))
    with pytest.raises(DataError, match=r"column 'y' has no values \(all 3 rows are empty\)"):
        read_panel(f, target="y", date="date")
    df = pd.DataFrame({"id": ["a", "x", "a", "x"], "y": [1.0, np.nan, 2.0, np.nan]})
    with pytest.raises(DataError, match=r"DataFrame row 1: series 'x' has no values of 'y'"):
        read_panel(df, target="y", id="id")


def test_text_in_a_numeric_column(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(3), ["1", "abc", "3"]))
    with pytest.raises(DataError, match=r"line 3: column 'y' holds 'abc', not a number"):
        read_panel(f, target="y", date="date")
    f = write(tmp_path, csv_of(monthly(3), ["1", "2", "inf"]))
    with pytest.raises(DataError, match=r"line 4: column 'y' holds 'inf' \(infinite\)"):
        read_panel(f, target="y", date="date")


# --- many series --------------------------------------------------------------------------------


def test_many_series_long_format_interleaved_and_unsorted(tmp_path: Path) -> None:
    rows = [
        ("b", "2020-03-01", "23"),
        ("a", "2020-02-01", "12"),
        ("c", "2020-01-01", "31"),
        ("b", "2020-01-01", "21"),
        ("a", "2020-01-01", "11"),
        ("b", "2020-02-01", "22"),
        ("a", "2020-04-01", "14"),
        ("b", "2020-04-01", "24"),
        ("a", "2020-03-01", "13"),
        ("c", "2020-02-01", "32"),
        ("b", "2020-05-01", "25"),
    ]
    f = write(tmp_path, "store,month,sales\n" + "\n".join(",".join(r) for r in rows) + "\n")
    p = read_panel(f, target="sales", date="month", id="store")
    assert p.freq == "MS" and (p.target, p.date, p.id) == ("sales", "month", "store")
    assert [s.id for s in p.series] == ["b", "a", "c"]  # in order of first appearance
    assert [list(s.y) for s in p.series] == [[21, 22, 23, 24, 25], [11, 12, 13, 14], [31, 32]]
    assert p.series[0].dates[0] == day("2020-01-01") and p.series[0].dates[-1] == day("2020-05-01")
    assert p.notes == ["rows of 2 series 'b', 'a' were not in date order; sorted by date"]


def test_no_date_column_uses_row_order() -> None:
    df = pd.DataFrame({"id": ["a", "b", "a", "b", "a"], "y": [3.0, 1.0, 2.0, 5.0, 1.0]})
    p = read_panel(df, target="y", id="id")
    assert p.freq is None and p.notes == []
    a, b = p.series
    assert list(a.y) == [3.0, 2.0, 1.0] and list(b.y) == [1.0, 5.0]
    assert a.dates.dtype == np.int64 and list(a.dates) == [0, 1, 2]
    assert list(p.future_dates(a, 2)) == [3, 4]
    assert calendar_features(a.dates, p.freq).shape == (3, 0)


def test_dataframe_equals_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(["x", "y", "z"], 12)
    dates = np.tile(pd.date_range("2019-01-01", periods=12, freq="MS").strftime("%Y-%m-%d"), 3)
    df = pd.DataFrame({"id": ids, "date": dates, "y": rng.normal(size=36), "f": rng.normal(size=36)})
    df.loc[[3, 20], "y"] = np.nan
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    df.to_csv(tmp_path / "d.csv", index=False)
    kw = dict(target="y", date="date", id="id", features=["f"])
    a = read_panel(df, **kw)  # type: ignore[arg-type]
    b = read_panel(tmp_path / "d.csv", **kw)  # type: ignore[arg-type]
    assert (a.freq, a.notes) == (b.freq, b.notes)
    for s, t in zip(a.series, b.series):
        assert s.id == t.id and np.array_equal(s.dates, t.dates)
        np.testing.assert_allclose(s.y, t.y, rtol=1e-15)
        np.testing.assert_allclose(s.past, t.past, rtol=1e-15)
    datetimes = df.assign(date=pd.to_datetime(df["date"]))  # a datetime64 column reads the same
    c = read_panel(datetimes, **kw)  # type: ignore[arg-type]
    assert all(np.array_equal(s.dates, t.dates) for s, t in zip(a.series, c.series))


def test_dataframe_date_index_and_labels() -> None:
    df = pd.DataFrame({"y": [1.0, 2.0, 3.0]}, index=pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"]))
    df.index.name = "ds"
    p = read_panel(df, target="y", date="ds")
    assert p.freq == "D" and list(p.series[0].y) == [1.0, 2.0, 3.0]


def test_thousand_series_of_200_rows_is_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n_series, n = 1000, 200
    ids = np.repeat([f"s{i}" for i in range(n_series)], n)
    t = np.tile(np.arange(n), n_series)
    dates = np.tile(pd.date_range("2000-01-01", periods=n, freq="D").strftime("%Y-%m-%d"), n_series)
    y = t * 1.0 + np.repeat(np.arange(n_series) * 1000.0, n)  # series i, step t: 1000 i + t
    gap = rng.choice(len(y), 500, replace=False)
    gap = gap[(t[gap] > 0) & (t[gap] < n - 1)]
    y_text = y.astype(str)
    y_text[gap] = ""
    order = rng.permutation(len(y))
    text = "id,date,y\n" + "\n".join(f"{a},{b},{c}" for a, b, c in zip(ids[order], dates[order], y_text[order]))
    f = write(tmp_path, text + "\n")
    start = time.perf_counter()
    p = read_panel(f, target="y", date="date", id="id")
    took = time.perf_counter() - start
    assert took < 5.0, f"{took:.2f} s"
    assert p.freq == "D" and len(p.series) == n_series and all(len(s) == n for s in p.series)
    by_id = {s.id: s for s in p.series}
    for i in (0, 1, 437, 999):
        np.testing.assert_allclose(by_id[f"s{i}"].y, 1000.0 * i + np.arange(n))  # interior gaps: on the line
    assert any(f"filled {len(gap)} missing values of 'y'" in note for note in p.notes)


# --- future dates and calendar features ---------------------------------------------------------


def panel_of(dates: list[str], freq: str) -> tuple[Panel, Series]:
    s = Series("", np.array(dates, dtype="datetime64[ns]"), np.zeros(len(dates)), np.zeros((len(dates), 0)),
               np.zeros((len(dates), 0)))  # fmt: skip
    return Panel([s], freq, "y", "date", None, [], []), s


def test_future_dates() -> None:
    p, s = panel_of(["2020-11-01", "2020-12-01"], "MS")
    assert list(p.future_dates(s, 3)) == [day("2021-01-01"), day("2021-02-01"), day("2021-03-01")]
    p, s = panel_of(["2019-12-31", "2020-01-31"], "ME")
    assert list(p.future_dates(s, 2)) == [day("2020-02-29"), day("2020-03-31")]  # leap February
    p, s = panel_of(["2020-01-30", "2020-01-31"], "D")
    assert list(p.future_dates(s, 2)) == [day("2020-02-01"), day("2020-02-02")]
    p, s = panel_of(["2020-01-02", "2020-01-03"], "B")  # Thursday, Friday
    assert list(p.future_dates(s, 2)) == [day("2020-01-06"), day("2020-01-07")]  # Monday, Tuesday
    p, s = panel_of(["2020-01-01 23:00", "2020-01-01 23:30"], "30min")
    assert list(p.future_dates(s, 1)) == [day("2020-01-02T00:00")]
    assert p.future_dates(s, 1).dtype == np.dtype("datetime64[ns]")


def test_calendar_features_known_values() -> None:
    dates = np.array(["2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01"], dtype="datetime64[ns]")
    names = calendar_names("MS")
    assert names == ["month_of_year_sin", "month_of_year_cos", "quarter_of_year_sin", "quarter_of_year_cos"]
    x = calendar_features(dates, "MS")
    assert x.shape == (4, 4) and x.dtype == np.float32
    # January: position 0 -> sin 0, cos 1; April: 3/12 -> sin 1, cos 0; July: 6/12 -> sin 0, cos -1
    np.testing.assert_allclose(x[:, 0], [0, 1, 0, -1], atol=1e-6)
    np.testing.assert_allclose(x[:, 1], [1, 0, -1, 0], atol=1e-6)
    np.testing.assert_allclose(x[:, 2], [0, 1, 0, -1], atol=1e-6)  # quarters 1..4: 0, 1/4, 2/4, 3/4
    # hourly: 06:00 on Wednesday 2020-01-01 -> hour 6/24 (sin 1, cos 0), weekday 2/7
    x = calendar_features(np.array(["2020-01-01T06:00"], dtype="datetime64[ns]"), "h")
    assert calendar_names("h") == ["hour_of_day_sin", "hour_of_day_cos", "day_of_week_sin", "day_of_week_cos"]
    np.testing.assert_allclose(x[0], [1, 0, math.sin(2 * math.pi * 2 / 7), math.cos(2 * math.pi * 2 / 7)], atol=1e-6)
    assert calendar_names("B") == ["day_of_week_sin", "day_of_week_cos", "month_of_year_sin", "month_of_year_cos"]
    assert calendar_names("W-SUN") == ["month_of_year_sin", "month_of_year_cos"]
    assert calendar_names("QS-OCT") == ["quarter_of_year_sin", "quarter_of_year_cos"]
    assert calendar_names("YS-JAN") == [] and calendar_names(None) == []
    assert calendar_features(dates, "YS-JAN").shape == (4, 0)


def test_calendar_features_range() -> None:
    dates = pd.date_range("2020-01-01", periods=24 * 400, freq="30min").values
    for freq in ("30min", "D", "B", "W-SUN", "MS", "QS-OCT"):
        x = calendar_features(dates, freq)
        assert x.shape == (len(dates), len(calendar_names(freq))) and x.shape[1] > 0
        assert np.all(np.abs(x) <= 1.0) and np.all(np.isfinite(x))
        np.testing.assert_allclose(x[:, 0::2] ** 2 + x[:, 1::2] ** 2, 1.0, atol=1e-5)


# --- bad input ----------------------------------------------------------------------------------


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist"):
        read_panel(tmp_path / "nope.csv", target="y")
    with pytest.raises(DataError, match=r"is not a regular file"):
        read_panel(tmp_path, target="y")
    (tmp_path / "latin.csv").write_bytes(b"y\n1\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"is not valid UTF-8 \(byte 7\)"):
        read_panel(tmp_path / "latin.csv", target="y")
    with pytest.raises(DataError, match=r"is empty"):
        read_panel(write(tmp_path, "\n\n", "empty.csv"), target="y")
    with pytest.raises(DataError, match=r"has no data rows"):
        read_panel(write(tmp_path, "date,y\n", "header.csv"), target="y", date="date")


def test_bom_and_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffdate, y\n2020-01-01,1\n\n2020-01-02,2\n2020-01-03,x\n".encode())
    with pytest.raises(DataError, match=r"line 5: column 'y' holds 'x'"):
        read_panel(f, target="y", date="date")


def test_column_errors_list_the_columns(tmp_path: Path) -> None:
    f = write(tmp_path, csv_of(monthly(3), ["1", "2", "3"], {"t": ["0", "0", "0"]}))
    with pytest.raises(
        DataError, match=r"has no column 'store' \(named as the id column\); its columns are: date, y, t"
    ):
        read_panel(f, target="y", date="date", id="store")
    with pytest.raises(DataError, match=r"has no column 'when' .*its columns are: date, y, t"):
        read_panel(f, target="y", date="when")
    with pytest.raises(DataError, match=r"column 'y' is named as the target and again as a past feature"):
        read_panel(f, target="y", date="date", features=["y"])
    with pytest.raises(DataError, match=r"column 't' is named as a past feature and again as a future feature"):
        read_panel(f, target="y", date="date", features=["t"], future_features=["t"])
    with pytest.raises(DataError, match=r"unknown fill policy 'mean'; choose one of: interpolate, ffill, zero, error"):
        read_panel(f, target="y", date="date", fill="mean")
    with pytest.raises(DataError, match=r"two columns named 'y'"):
        read_panel(write(tmp_path, "y,y\n1,2\n", "twice.csv"), target="y")


def test_empty_id_names_the_row() -> None:
    df = pd.DataFrame({"id": ["a", None, "b"], "y": [1.0, 2.0, 3.0]}, index=["r1", "r2", "r3"])
    with pytest.raises(DataError, match=r"DataFrame row r2: the id column 'id' is empty"):
        read_panel(df, target="y", id="id")


def test_ragged_csv(tmp_path: Path) -> None:
    f = write(tmp_path, "date,y\n2020-01-01,1\n2020-01-02,2,7,8\n")
    with pytest.raises(DataError, match=r"does not parse as CSV .*; give every row as many fields as the header"):
        read_panel(f, target="y", date="date")
