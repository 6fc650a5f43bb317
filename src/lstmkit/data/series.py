"""Forecasting data as forecasters have it: one series or many, in long format, with dates.

(About 770 lines, one concern: reading and checking a panel. Most of it is the checks of bad input,
each with its own one-line message naming the row.)

`read_panel` reads a CSV file (with a header row) or a pandas DataFrame holding one row per
(series, date) and returns a `Panel`: the series sorted by date, their common frequency, the target
and covariates as float64 with the missing values filled, and notes for the run to print. Every bad
input raises `DataError` with one line saying what was wrong, where (the CSV line, or the DataFrame's
index label, of the first offending row) and how to fix it.

Rules, in the order they are applied:

- Columns: `target` (required), `date`, `id`, `features` (past covariates) and `future_features`
  (covariates known in advance) must exist and each be named once. CSV rows with no cell filled
  (blank lines) are skipped, and line numbers in messages count them. A DataFrame's
  `date` may also be the name of its index.
- Series: rows with the same `id` value form one series, in the order in which the ids first appear.
  Without `id` the whole table is one series (id ""). Without `date` the rows are taken in file order,
  their dates are the positions 0..n-1 and the frequency is None.
- Dates are parsed by pandas (the format guessed from the first value, values that do not fit it parsed
  one by one; "01/02/2020" is 2 January). A UTC offset is dropped, keeping the local clock time (so
  sub-daily data across a daylight-saving change shows a missing or repeated hour: give such data in
  UTC). An empty or unparsable date is an error. Rows are sorted by date within each series; when
  they were not in ascending order a note says so ("in reverse date order" or "not in date order").
  The same date twice in a series is an error naming the second row.
- Frequency: `pd.infer_freq` on each of the first three series with three dates or more (where one is
  irregular, the majority of `pd.infer_freq` over windows of 8 consecutive dates; failing that, the
  most common step), then every date of every series is checked against that frequency's grid: a
  date off the grid, or a gap, is an error naming the row and the date expected there. Series whose
  frequencies differ (W-SUN and W-MON, say) are an error too. Equivalent aliases are one frequency
  (quarterly data starting in January and in April both fit "QS-OCT").
- Business days: daily data without weekends is "B". Whole business days missing (holidays) are
  accepted when the frequency is "B", every date is a weekday and the missing days are under 5% of
  the business days each series spans; the rows are kept as they are (each trading day one step, no
  value is invented for a holiday) and a note counts them. So with "B", and only then, `Series.dates`
  may skip a few weekdays. Any other gap is an error.
- Missing values (empty cells, "NaN", "NA", "null", …) in the target and the covariates are filled
  within each series by the `fill` policy: "interpolate" (linear in the step index; leading and
  trailing gaps take the nearest value), "ffill" (the last value carried forward; a leading gap takes
  the first value), "zero", or "error" (refuse, naming the first such row). A note counts the filled
  values per series. Text that is not a number, or an infinite value, is an error; so is a column
  with no value at all in a series.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from .base import DataError, read_utf8

FILLS = ("interpolate", "ffill", "zero", "error")
FILL_WORDS = {"interpolate": "by linear interpolation", "ffill": "with the last value before them", "zero": "with 0"}
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "#n/a"})  # cells read as missing (any case)
HOLIDAY_SHARE = 0.05  # business days that may be missing in "B" data, as a share of the span
WINDOW = 8  # dates per window when a whole series is too irregular for pd.infer_freq
DAY = 86_400 * 10**9  # nanoseconds


@dataclass
class Series:
    """One series of a panel, sorted by date.

    id: the id column's value as a string ("" when there is no id column).
    dates: (n,) datetime64[ns], ascending, regular at the panel's freq (with "B", holidays may be
        missing: see the module's notes); without a date column: int64 positions 0..n-1.
    y: (n,) float64 target, missing values filled.
    past: (n, P) float64 past covariates (the panel's `features`), filled the same way.
    future: (n, F) float64 future-known covariates (`future_features`), filled the same way.
    """

    id: str
    dates: np.ndarray
    y: np.ndarray
    past: np.ndarray
    future: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Panel:
    """Series that share a frequency and columns, as `read_panel` returns them.

    freq: the pandas frequency alias of the dates ("MS", "D", "B", "QS-OCT", "30min", "W-SUN", …);
        None without a date column.
    notes: sentences for the run to print (rows sorted, values filled, holidays kept).
    """

    series: list[Series]
    freq: str | None
    target: str
    date: str | None
    id: str | None
    features: list[str]
    future_features: list[str]
    notes: list[str] = field(default_factory=list)

    def future_dates(self, s: Series, h: int) -> np.ndarray:
        """The h dates after s's last date at the panel's freq: (h,) datetime64[ns]; without dates the
        positions n..n+h-1 as int64."""
        if h < 0:
            raise DataError(f"horizon {h} is negative; pass a horizon of 1 or more")
        if self.freq is None:
            start = int(s.dates[-1]) + 1 if len(s.dates) else 0
            return np.arange(start, start + h, dtype=np.int64)
        rng = pd.date_range(start=pd.Timestamp(s.dates[-1]), periods=h + 1, freq=self.freq)
        return np.asarray(rng[1:].values, dtype="datetime64[ns]")


# ---------------------------------------------------------------------------------------------
# calendar features


def _period_kind(freq: str | None) -> str | None:
    """The period kind: "subdaily", "daily", "weekly", "monthly", "quarterly", "yearly" by the length of one step."""
    if freq is None:
        return None
    two = pd.date_range("2001-01-01", periods=2, freq=freq)
    step = (two[1] - two[0]) / pd.Timedelta(days=1)
    if step < 1:
        return "subdaily"
    if step < 7:
        return "daily"
    if step < 28:
        return "weekly"
    if step < 89:
        return "monthly"
    if step < 365:
        return "quarterly"
    return "yearly"


_CALENDAR = {  # period kind -> the positions used, in this order
    None: (),
    "subdaily": ("hour_of_day", "day_of_week"),
    "daily": ("day_of_week", "month_of_year"),
    "weekly": ("month_of_year",),
    "monthly": ("month_of_year", "quarter_of_year"),
    "quarterly": ("quarter_of_year",),
    "yearly": (),
}


def calendar_names(freq: str | None) -> list[str]:
    """The names of `calendar_features(dates, freq)`'s columns, in order: `<position>_sin`, `<position>_cos`."""
    return [f"{p}_{f}" for p in _CALENDAR[_period_kind(freq)] for f in ("sin", "cos")]


def calendar_features(dates: np.ndarray, freq: str | None) -> np.ndarray:
    """Sine and cosine of where each date lies within the periods that make sense for `freq`.

    A position p in [0, 1) gives the columns sin(2πp) and cos(2πp), so the last step of a period
    lies next to the first. The positions, by the length of one step:

    - under a day ("h", "30min", …): hour_of_day p = (seconds since midnight) / 86400, and day_of_week;
    - one day to under a week ("D", "B"): day_of_week p = weekday / 7 (Monday 0), and month_of_year;
    - a week to under 28 days ("W-SUN"): month_of_year p = (month - 1) / 12;
    - a month ("MS", "ME"): month_of_year, and quarter_of_year p = (quarter - 1) / 4;
    - a quarter ("QS-OCT"): quarter_of_year;
    - a year or more, or no dates (freq None): no columns.

    dates: (n,) datetime64. Returns (n, C) float32 in [-1, 1], columns named by `calendar_names(freq)`.
    """
    names = _CALENDAR[_period_kind(freq)]
    n = len(dates)
    if not names:
        return np.zeros((n, 0), dtype=np.float32)
    idx = pd.DatetimeIndex(np.asarray(dates, dtype="datetime64[ns]"))
    cols = []
    for name in names:
        if name == "hour_of_day":
            p = (idx.hour * 3600 + idx.minute * 60 + idx.second).to_numpy(np.float64) / 86400.0
        elif name == "day_of_week":
            p = idx.dayofweek.to_numpy(np.float64) / 7.0
        elif name == "month_of_year":
            p = (idx.month.to_numpy(np.float64) - 1.0) / 12.0
        else:
            p = (idx.quarter.to_numpy(np.float64) - 1.0) / 4.0
        cols += [np.sin(2 * math.pi * p), np.cos(2 * math.pi * p)]
    return np.stack(cols, axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# reading


class _Where:
    """Names rows in messages: the CSV line (row index + 2) or the DataFrame's index label."""

    def __init__(self, path: Path | None, labels: np.ndarray) -> None:
        self.path = path
        self.labels = labels  # (rows,) line numbers for a file, index labels for a DataFrame

    @property
    def source(self) -> str:
        return f"csv file {str(self.path)!r}" if self.path is not None else "the DataFrame"

    def label(self, r: int) -> str:
        return f"line {int(self.labels[r])}" if self.path is not None else f"row {self.labels[r]}"

    def row(self, r: int) -> str:
        if self.path is not None:
            return f"{self.source}, {self.label(r)}"
        return f"DataFrame {self.label(r)}"


def _csv_text(path: Path, delimiter: str) -> tuple[str, list[str]]:
    """The file's text and its header's column names; DataError when it is no readable CSV file."""
    text = read_utf8(path, "csv", "a CSV file with a header row and data rows")
    first = text[: text.find("\n") + 1 or len(text)]  # the header (a header with a quoted line break: not supported)
    header = [h.strip() for h in next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter))]
    return text, header


def _read_csv(
    path: Path, text: str, header: list[str], delimiter: str, text_cols: list[str], num_cols: list[str]
) -> pd.DataFrame:
    """The named columns, the rows' line numbers as the index, rows with no cell filled left out
    (blank lines; their line numbers are kept for the others).

    text_cols (id, date) are read as strings, "" where empty; num_cols as numbers where every cell
    is one (NaN where missing), else as strings for `_numeric` to judge.
    """
    names = text_cols + num_cols
    missing = [v for v in MISSING] + [v.upper() for v in MISSING] + ["NaN", "N/A", "Null", "None"]
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            index_col=False,  # a row with more fields than the header is an error, not an index
            dtype={header.index(c): str for c in text_cols},
            keep_default_na=False,
            na_values={header.index(c): missing for c in num_cols},
            skip_blank_lines=False,
            skipinitialspace=True,
            engine="c",
            float_precision="round_trip",  # the float the text names, as float() reads it
        )
    except (pd.errors.ParserError, ValueError) as e:
        msg = " ".join(str(e).split())
        raise DataError(
            f"csv file {str(path)!r} does not parse as CSV ({msg}); give every row as many fields as the header"
        ) from None
    # a blank line has no cell filled in any column (a row with only the target empty is a missing value)
    blank = np.ones(len(df), dtype=bool)
    for j in range(df.shape[1]):
        col = df.iloc[:, j]
        blank &= (col.isna() | (col == "")).to_numpy() if col.dtype == object else col.isna().to_numpy()
    df = df.iloc[:, [header.index(c) for c in names]]
    df.columns = names
    df.index = np.arange(2, len(df) + 2)  # line numbers (1-based, after the header)
    return df.loc[~blank] if blank.any() else df


def _check_names(
    columns: list[str],
    source: str,
    target: str,
    date: str | None,
    id: str | None,
    features: list[str],
    future_features: list[str],
    fill: str,
) -> None:
    if fill not in FILLS:
        raise DataError(f"unknown fill policy {fill!r}; choose one of: {', '.join(FILLS)}")
    roles: list[tuple[str, str]] = [(target, "the target")]
    roles += [(date, "the date column")] if date is not None else []
    roles += [(id, "the id column")] if id is not None else []
    roles += [(c, "a past feature") for c in features] + [(c, "a future feature") for c in future_features]
    seen: dict[str, str] = {}
    for name, role in roles:
        if not isinstance(name, str) or not name:
            raise DataError(f"{role} must be a column name, not {name!r}; its columns are: {', '.join(columns)}")
        if name in seen:
            twice = f"as {seen[name]} and again as {role}" if seen[name] != role else f"twice as {role}"
            raise DataError(f"column {name!r} is named {twice}; name each column once")
        seen[name] = role
        if name not in columns:
            raise DataError(f"{source} has no column {name!r} (named as {role}); its columns are: {', '.join(columns)}")


def _numeric(col: pd.Series, name: str, where: _Where) -> np.ndarray:
    """(rows,) float64 with NaN where the cell is missing; DataError on text or infinite values."""
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        v = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:  # text: parse it all in C, then look only at the cells that did not parse
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        nan = np.flatnonzero(np.isnan(v))
        if len(nan):
            text = col.iloc[nan].astype(str).str.strip()
            redo = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            v[nan] = redo
            bad = np.isnan(redo) & ~(col.iloc[nan].isna() | text.str.lower().isin(MISSING)).to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{where.row(int(nan[i]))}: column {name!r} holds {text.iloc[i]!r}, not a number; "
                    "correct it, or leave the cell empty to have it filled"
                )
    inf = np.isinf(v)
    if inf.any():
        r = int(np.argmax(inf))
        raise DataError(
            f"{where.row(r)}: column {name!r} holds {str(col.iloc[r]).strip()!r} (infinite); "
            "correct it, or leave the cell empty to have it filled"
        )
    return v


def _ids(col: pd.Series, name: str, where: _Where) -> tuple[np.ndarray, np.ndarray]:
    """(rows,) int64 series codes in order of first appearance, and the ids as stripped strings."""
    raw_codes, raw = pd.factorize(col.to_numpy(), sort=False)  # NaN and None get code -1
    text = np.array([str(u).strip() for u in raw], dtype=object)  # one string per distinct value
    codes, uniq = pd.factorize(text, sort=False)
    codes = np.where(raw_codes >= 0, codes[np.maximum(raw_codes, 0)] if len(codes) else -1, -1)
    missing = codes < 0
    if len(uniq):
        missing |= np.asarray(uniq == "")[np.maximum(codes, 0)]
    if missing.any():
        r = int(np.argmax(missing))
        raise DataError(f"{where.row(r)}: the id column {name!r} is empty; give every row its series id")
    return codes.astype(np.int64), np.asarray(uniq, dtype=object)


def _fmt(ns: int | np.integer) -> str:
    t = pd.Timestamp(int(ns))
    return t.strftime("%Y-%m-%d") if t == t.normalize() else str(t)


def _dates(col: pd.Series, name: str, where: _Where) -> np.ndarray:
    """(rows,) int64 nanoseconds since the epoch (naive, local clock time)."""
    if isinstance(col.dtype, pd.PeriodDtype):
        col = col.dt.to_timestamp()
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = col
    else:
        if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
            col = col.astype(str)  # numbers: 1990 is the year 1990
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when it cannot guess one format, and on mixed offsets
            parsed = pd.to_datetime(col, errors="coerce")  # parses each distinct value once
            nat = np.flatnonzero(parsed.isna().to_numpy())
            if len(nat):  # empty cells, values in another format than the first one's, or not dates
                text = col.iloc[nat].astype(str).str.strip()
                empty = (col.iloc[nat].isna() | text.str.lower().isin(MISSING)).to_numpy()
                if empty.any():
                    r = int(nat[np.argmax(empty)])
                    raise DataError(f"{where.row(r)}: the date column {name!r} is empty; give every row its date")
                again = pd.to_datetime(col, errors="coerce", format="mixed")
                if again.isna().any():
                    r = int(np.argmax(again.isna().to_numpy()))
                    raise DataError(
                        f"{where.row(r)}: the date column {name!r} holds {str(col.iloc[r]).strip()!r}, which does "
                        "not parse as a date; write dates like 2020-01-31 or 2020-01-31 14:00"
                    )
                parsed = again
        if parsed.dtype == object:  # mixed UTC offsets: keep each value's local clock time
            parsed = pd.to_datetime(
                parsed.map(lambda t: t.tz_localize(None) if isinstance(t, pd.Timestamp) and t.tzinfo else t)
            )
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_localize(None)
    nat = parsed.isna().to_numpy()
    if nat.any():
        r = int(np.argmax(nat))
        raise DataError(f"{where.row(r)}: the date column {name!r} is empty; give every row its date")
    return parsed.to_numpy(dtype="datetime64[ns]").view(np.int64)


# ---------------------------------------------------------------------------------------------
# frequency


@dataclass
class _Break:
    """Where a panel leaves a frequency's grid: sorted row `k` (its predecessor is k - 1 when it is
    not the first row of its series), and the date expected there."""

    k: int
    expected: int


def _grid_index(dates: np.ndarray, starts: np.ndarray, codes: np.ndarray, freq: str) -> tuple[np.ndarray, ...]:
    """For sorted dates: (on_grid, k, next_after) where k is each date's step count from its series'
    first date (valid where on_grid) and next_after[i] the grid date after dates[i] (or the first grid
    date at or after it where it is off the grid)."""
    off = to_offset(freq)
    first = dates[starts[codes]]
    try:
        step = pd.Timedelta(off).value  # a fixed step ("D", "h", "30min"): the grid starts at each series' start
    except (ValueError, TypeError):
        step = 0
    if step > 0:
        delta = dates - first
        on = delta % step == 0
        k = delta // step
        nxt = first + (k + 1) * step
        return on, k, nxt
    # anchored steps ("MS", "B", "W-SUN", "QS-OCT"): one grid for the whole panel
    lo, hi = int(dates.min()), int(dates.max())
    grid = pd.date_range(start=pd.Timestamp(lo), end=pd.Timestamp(hi), freq=off)
    after = pd.date_range(start=grid[-1] if len(grid) else pd.Timestamp(hi), periods=2, freq=off)
    g = np.concatenate([grid.asi8, after.asi8[1:] if len(grid) else after.asi8])
    idx = np.searchsorted(g, dates)
    on = g[np.minimum(idx, len(g) - 1)] == dates
    k = idx - idx[starts[codes]]
    nxt = g[np.minimum(idx + on.astype(np.int64), len(g) - 1)]
    return on, k, nxt


def _check_freq(
    dates: np.ndarray, starts: np.ndarray, codes: np.ndarray, pos: np.ndarray, freq: str
) -> tuple[_Break | None, np.ndarray | None]:
    """(first break in panel order, or None; per-series missing business days when freq is "B" and
    the only breaks are whole business days skipped)."""
    on, k, nxt = _grid_index(dates, starts, codes, freq)
    bad = ~on | (k != pos)
    if not bad.any():
        return None, None
    if to_offset(freq).freqstr == "B" and on.all():
        last = np.r_[starts[1:], len(dates)] - 1
        missing = k[last] - pos[last]
        span = np.maximum(k[last], 1)
        if (missing < HOLIDAY_SHARE * span).all():
            return None, missing
    i = int(np.argmax(bad))
    if pos[i] == 0:  # the series' first date is off the grid
        return _Break(i, int(nxt[i])), None
    return _Break(i, int(nxt[i - 1])), None


def _series_freq(d: np.ndarray) -> str | None:
    """The frequency of one series' sorted dates (int64 ns): pd.infer_freq, else the majority over
    windows of WINDOW dates, else one guessed from the most common step."""
    if len(d) < 2:
        return None
    idx = pd.DatetimeIndex(d.view("datetime64[ns]"))
    if len(d) >= 3:
        f = pd.infer_freq(idx)
        if f is not None:
            return f
        if len(d) > WINDOW:
            votes = Counter(
                pd.infer_freq(idx[s : s + WINDOW]) for s in range(0, len(d) - WINDOW + 1, max(1, len(d) // 40))
            )
            votes.pop(None, None)
            if votes:
                return votes.most_common(1)[0][0]
    return _step_freq(idx)


def _step_freq(idx: pd.DatetimeIndex) -> str | None:
    """A frequency guessed from the most common step between sorted dates."""
    steps = np.diff(idx.asi8)
    steps = steps[steps > 0]
    if not len(steps):
        return None
    values, counts = np.unique(steps, return_counts=True)
    m = int(values[np.argmax(counts)])
    days = m / DAY
    starts, ends = bool(idx.is_month_start.all()), bool(idx.is_month_end.all())
    anchor = pd.Timestamp(idx[0]).strftime("%b").upper()
    if m % DAY or days < 1:
        return to_offset(pd.Timedelta(m)).freqstr
    if days == 1:
        return "B" if not (idx.dayofweek >= 5).any() and (steps == 3 * DAY).any() else "D"
    if days == 7:
        return "W-" + pd.Timestamp(idx[0]).strftime("%a").upper()
    for lo, hi, s, e in ((28, 31, "MS", "ME"), (89, 92, "QS", "QE"), (365, 366, "YS", "YE")):
        if lo <= days <= hi:
            if not (starts or ends):
                return None  # e.g. the 15th of each month: no pandas frequency (reported by the caller)
            base = s if starts else e
            return base if base in ("MS", "ME") else f"{base}-{anchor}"
    return f"{int(days)}D"


# ---------------------------------------------------------------------------------------------
# filling


def _fill(v: np.ndarray, codes: np.ndarray, policy: str) -> np.ndarray:
    """Fill NaNs of sorted values within each series (codes contiguous); every series has a value."""
    miss = np.isnan(v)
    if not miss.any():
        return v
    if policy == "zero":
        return np.where(miss, 0.0, v)
    n = len(v)
    at = pd.Series(np.where(miss, np.nan, np.arange(n, dtype=np.float64)))
    g = pd.Series(codes)
    prev = at.groupby(g).ffill().to_numpy()  # index of the last value at or before each row, in its series
    nxt = at.groupby(g).bfill().to_numpy()  # index of the next value at or after
    out = v.copy()
    if policy == "ffill":
        src = np.where(np.isnan(prev), nxt, prev).astype(np.int64)
        out[miss] = v[src[miss]]
        return out
    lead, trail = np.isnan(prev), np.isnan(nxt)
    p = np.where(lead, nxt, prev)
    q = np.where(trail, prev, nxt)
    p_i, q_i = p.astype(np.int64), q.astype(np.int64)
    span = np.maximum(q - p, 1.0)
    w = np.where(q > p, (np.arange(n) - p) / span, 0.0)
    filled = v[p_i] + w * (v[q_i] - v[p_i])
    out[miss] = filled[miss]
    return out


def _fill_note(name: str, policy: str, per_series: np.ndarray, ids: np.ndarray, has_id: bool) -> str:
    total = int(per_series.sum())
    text = f"filled {total} missing value{'s' if total != 1 else ''} of {name!r} {FILL_WORDS[policy]}"
    if not has_id:
        return text
    which = np.flatnonzero(per_series)
    parts = [f"{ids[i]!r}: {int(per_series[i])}" for i in which[:5]]
    more = f", and {len(which) - 5} more series" if len(which) > 5 else ""
    return f"{text} (series {', '.join(parts)}{more})"


# ---------------------------------------------------------------------------------------------


def read_panel(
    source: str | Path | pd.DataFrame,
    *,
    target: str,
    date: str | None = None,
    id: str | None = None,
    features: Sequence[str] = (),
    future_features: Sequence[str] = (),
    fill: str = "interpolate",
    delimiter: str = ",",
) -> Panel:
    """Read one series or many (long format: one row per series and date) from a CSV file or a DataFrame.

    source: the path of a CSV file with a header row (UTF-8), or a pandas DataFrame.
    target: the column to forecast. date: the date column (None: rows are in time order).
    id: the column naming the series (None: one series). features: past covariates.
    future_features: covariates known for future dates too. fill: "interpolate", "ffill", "zero" or
    "error" for missing values. delimiter: the CSV's field separator.

    The rules (sorting, frequency, holidays, filling) are in the module's docstring. DataError, one
    line naming the first offending row, on bad input.
    """
    features, future_features = list(features), list(future_features)
    if isinstance(source, pd.DataFrame):
        df = source
        if date is not None and date not in df.columns and df.index.name == date:
            df = df.reset_index()
        if any(not isinstance(c, str) for c in df.columns):
            df = df.rename(columns=str)
        where = _Where(None, np.asarray(source.index, dtype=object))
        columns = [str(c) for c in df.columns]
    else:
        path = Path(source)
        text, header = _csv_text(path, delimiter)
        columns = header
        where = _Where(path, np.zeros(0, dtype=np.int64))
    _check_names(columns, where.source, target, date, id, features, future_features, fill)
    for name in [target, date, id, *features, *future_features]:
        if name is not None and columns.count(name) > 1:
            raise DataError(f"{where.source} has two columns named {name!r}; rename one of them")
    if not isinstance(source, pd.DataFrame):
        text_cols = [c for c in (id, date) if c is not None]
        df = _read_csv(path, text, header, delimiter, text_cols, [target, *features, *future_features])
        where = _Where(path, np.asarray(df.index))
    if len(df) == 0:
        need = "a header row and data rows" if where.path is not None else "one row per series and date"
        raise DataError(f"{where.source} has no data rows; it needs {need}")

    values = {c: _numeric(df[c], c, where) for c in [target, *features, *future_features]}
    if id is not None:
        codes, uniq = _ids(df[id], id, where)
    else:
        codes, uniq = np.zeros(len(df), dtype=np.int64), np.array([""], dtype=object)
    notes: list[str] = []

    for c, v in values.items():
        if np.isnan(v).all():
            raise DataError(f"{where.source}: column {c!r} has no values (all {len(v)} rows are empty); fill it in")
        if fill == "error" and np.isnan(v).any():
            r = int(np.argmax(np.isnan(v)))
            raise DataError(
                f"{where.row(r)}: column {c!r} is empty; fill it in, or choose a fill policy "
                "(interpolate, ffill or zero)"
            )
        have = np.bincount(codes, weights=~np.isnan(v), minlength=len(uniq))
        if (have == 0).any():
            s = int(np.argmax(have == 0))
            r = int(np.argmax(codes == s))
            raise DataError(
                f"{where.row(r)}: series {uniq[s]!r} has no values of {c!r}; fill them in or leave the series out"
            )

    # sort: by series (in order of first appearance), then by date; lexsort is stable
    freq: str | None = None
    if date is not None:
        d = _dates(df[date], date, where)
        order = np.lexsort((d, codes))
    else:
        d = None
        order = np.argsort(codes, kind="stable")
    sc = codes[order]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
    bounds = np.r_[starts, len(sc)]
    pos = np.arange(len(sc)) - starts[sc]
    if d is not None:
        sd = d[order]
        same = np.r_[False, sc[1:] == sc[:-1]]
        dup = same & np.r_[False, sd[1:] == sd[:-1]]
        if dup.any():
            rows = order[dup]
            r = int(rows.min())
            k = int(np.flatnonzero(order == r)[0])
            j = k
            while j > 0 and dup[j]:
                j -= 1
            who = f"series {uniq[sc[k]]!r} has" if id is not None else "the data have"
            hint = "" if id is not None else ", or name the id column if the file holds several series"
            raise DataError(
                f"{where.row(r)}: {who} the date {_fmt(sd[k])} twice (first at {where.label(int(order[j]))}); "
                f"remove or aggregate the duplicate rows{hint}"
            )
        # were the rows in date order? compare each row with the previous row of its series, in file order
        fo = np.argsort(codes, kind="stable")
        fc, fd = codes[fo], d[fo]
        step_same = fc[1:] == fc[:-1]
        down = np.bincount(fc[1:][step_same & (fd[1:] < fd[:-1])], minlength=len(uniq))
        up = np.bincount(fc[1:][step_same & (fd[1:] > fd[:-1])], minlength=len(uniq))
        unsorted = np.flatnonzero(down > 0)
        if len(unsorted):
            how = "in reverse date order" if (up[unsorted] == 0).all() else "not in date order"
            if id is None:
                notes.append(f"rows were {how}; sorted by date")
            else:
                names = ", ".join(repr(str(uniq[i])) for i in unsorted[:5])
                more = f" and {len(unsorted) - 5} more" if len(unsorted) > 5 else ""
                count = f"{len(unsorted)} series" if len(unsorted) > 1 else "series"
                notes.append(f"rows of {count} {names}{more} were {how}; sorted by date")
        freq = _panel_freq(sd, sc, starts, bounds, pos, order, uniq, id is not None, where, notes)
        dates_sorted = sd.view("datetime64[ns]")
    else:
        dates_sorted = pos.astype(np.int64)

    filled: dict[str, np.ndarray] = {}
    for c, v in values.items():
        sv = v[order]
        miss = np.isnan(sv)
        if miss.any():
            per = np.bincount(sc, weights=miss, minlength=len(uniq)).astype(np.int64)
            notes.append(_fill_note(c, fill, per, uniq, id is not None))
            sv = _fill(sv, sc, fill)
        filled[c] = sv

    y = filled[target]
    past = np.stack([filled[c] for c in features], axis=1) if features else np.zeros((len(y), 0))
    fut = np.stack([filled[c] for c in future_features], axis=1) if future_features else np.zeros((len(y), 0))
    series = [
        Series(id=str(uniq[g]), dates=dates_sorted[a:b], y=y[a:b], past=past[a:b], future=fut[a:b])
        for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    return Panel(
        series=series,
        freq=freq,
        target=target,
        date=date,
        id=id,
        features=features,
        future_features=future_features,
        notes=notes,
    )


def _panel_freq(
    sd: np.ndarray,
    sc: np.ndarray,
    starts: np.ndarray,
    bounds: np.ndarray,
    pos: np.ndarray,
    order: np.ndarray,
    uniq: np.ndarray,
    has_id: bool,
    where: _Where,
    notes: list[str],
) -> str:
    """The one frequency of all series (sorted dates sd, series codes sc); DataError when there is none."""
    lengths = np.diff(bounds)
    # candidates from the first three series long enough to tell (3 dates, or 2 when none has 3)
    cands: dict[str, int] = {}  # frequency -> the series it came from
    firsts = list(np.flatnonzero(lengths >= 3)[:3]) or list(np.flatnonzero(lengths >= 2)[:3])
    if not firsts:
        raise DataError(
            f"{where.source}: every series has a single row, so the dates give no frequency; "
            "give each series its history (at least 2 rows, better many more)"
        )
    for g in firsts:
        f = _series_freq(sd[bounds[g] : bounds[g + 1]])
        if f is not None and f not in cands:
            cands[f] = int(g)
    first_break: _Break | None = None
    for f in cands:
        brk, holidays = _check_freq(sd, starts, sc, pos, f)
        if brk is None:
            if holidays is not None and holidays.sum():
                total = int(holidays.sum())
                which = np.flatnonzero(holidays)
                if has_id:
                    parts = ", ".join(f"{uniq[i]!r}: {int(holidays[i])}" for i in which[:5])
                    more = f", and {len(which) - 5} more series" if len(which) > 5 else ""
                    inside = f" (series {parts}{more})"
                else:
                    inside = ""
                notes.append(
                    f"{total} business day{'s' if total != 1 else ''} missing between the dates{inside}, "
                    "taken as holidays: each row is one step and no value is made up for them"
                )
            return str(to_offset(f).freqstr)
        first_break = first_break or brk
    if first_break is None:  # no candidate: steps of about a month, quarter or year, not on its first or last day
        who = f"series {uniq[firsts[0]]!r} has dates" if has_id else "the dates fall"
        raise DataError(
            f"{where.source}: {who} on the same day of each month, quarter or year, but not on its first or last "
            "day, and pandas has no frequency for that; move the dates to the first (or the last) day of the month"
        )
    best = next(iter(cands))
    g = int(sc[first_break.k])
    own = _series_freq(sd[bounds[g] : bounds[g + 1]])
    n_g = int(lengths[g])
    one = (sd[bounds[g] : bounds[g + 1]], np.array([0]), np.zeros(n_g, dtype=np.int64), np.arange(n_g))
    if own is not None and own != best and _check_freq(*one, own)[0] is None:
        raise DataError(
            f"{where.source}: series {uniq[g]!r} has the frequency {own} but series {uniq[cands[best]]!r} has "
            f"{best}; a panel needs one frequency: resample the series to a common one or read them separately"
        )
    k = first_break.k
    r = int(order[k])
    subject = f"series {uniq[g]!r}: the date" if has_id else "the date"
    if pos[k] == 0:
        raise DataError(
            f"{where.row(r)}: {subject} {_fmt(sd[k])} does not fall on the frequency {best} of the data "
            f"(the next date that does is {_fmt(first_break.expected)}); correct the date or resample"
        )
    raise DataError(
        f"{where.row(r)}: {subject} {_fmt(sd[k])} follows {_fmt(sd[k - 1])}, but at frequency {best} the next "
        f"date is {_fmt(first_break.expected)}; fill in the missing dates (with empty target values to be "
        "interpolated) or resample"
    )
