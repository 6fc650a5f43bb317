"""Gate analyses on plain arrays: memory retention, saturation, unit search, unit scores and the
mystery report.

(About 770 lines: each analysis is short, and all of them share the array conversion and the
gate-quantity helpers at the top; the mystery report is the largest, at about 250 lines.)

Everything here computes on NumPy arrays: a trace is the core's :class:`~lstmkit.core.Trace`, a
mapping of arrays or any object with the gates as attributes (a torch tensor is converted with
``.detach().cpu().numpy()``), so the analyses work on traces from any source.

Shapes: T steps, B sequences, H units, L*D the layer×direction rows of the core's gate trace
(``trace.i`` is (L*D, T, B, H)). Each function says which layout it takes.

The gates' roles in memory, the vocabulary of this module:

    i  input gate   noting      how much of the new candidate g is written into the cell
    f  forget gate  holding     how much of the cell carries over; a dip is forgetting
    c  cell state   the memory  c_t = f_t * c_{t-1} + i_t * g_t
    o  output gate  recalling   how much of the memory is exposed as h_t = o_t * tanh(c_t)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..data.mystery import ALIBI_PREFIX, CLUE_PREFIX, QUESTION
from ..errors import InputError

__all__ = [
    "Retention",
    "RetentionHistogram",
    "Saturation",
    "Match",
    "UnitEvidence",
    "MysteryReport",
    "retention",
    "retention_histogram",
    "saturation",
    "unit_search",
    "find_matches",
    "unit_scores",
    "mystery_report",
    "token_kind",
    "as_array",
    "get_quantity",
]

QUANTITIES = ("i", "f", "g", "o", "c", "h")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def as_array(x: Any) -> np.ndarray:
    """A NumPy array from an array-like or a torch tensor."""
    if isinstance(x, torch.Tensor):  # leave the graph and the device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def get_quantity(trace: Any, name: str) -> np.ndarray:
    """``trace[name]`` of a mapping, else the attribute ``trace.name`` (the core's :class:`~lstmkit.core.Trace`
    or any object that holds the gates as attributes), as an array."""
    if isinstance(trace, Mapping):
        if name not in trace:
            raise KeyError(f"gate trace has no {name!r}; expected keys among {QUANTITIES}")
        return as_array(trace[name])
    try:
        value = getattr(trace, name)
    except AttributeError:
        raise KeyError(f"gate trace has no attribute {name!r}; expected attributes among {QUANTITIES}") from None
    return as_array(value)


def _steps_first(values: Any, fn: str) -> np.ndarray:
    """(T, H) or (T, B, H) → float array (T, B, H)."""
    a = as_array(values)
    if a.ndim == 2:
        a = a[:, None, :]
    if a.ndim != 3:
        raise InputError(f"{fn}: expected an array of shape (T, H) or (T, B, H), got shape {a.shape}")
    return a.astype(np.float64, copy=False)


# ---------------------------------------------------------------------------------------------
# Retention: how long does a unit keep what it writes?
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """Memory retention per unit, measured from the forget gates.

    What is written into the cell at step t is multiplied by f at every later step, so the fraction
    of it left k steps later is ``R(t, k) = f[t+1] * f[t+2] * ... * f[t+k]`` (for one unit).
    ``curve[k]`` is the mean of R(t, k) over all start steps t (with t + k inside the sequence) and
    all sequences; ``curve[0] = 1``.

    ``half_life[u]`` is the lag k at which ``curve[k, u]`` reaches 0.5, interpolated log-linearly
    between the two whole lags around the crossing (so a constant f gives exactly
    ``log 0.5 / log f``: f = 0.5 → 1 step, f = 0.9 → 6.58 steps). A unit whose curve never reaches
    0.5 within ``max_lag`` steps gets ``inf`` (not T): its memory outlasts what the data can show.
    """

    curve: np.ndarray  # (max_lag + 1, H)
    half_life: np.ndarray  # (H,), inf where never reached
    max_lag: int
    n_starts: int  # start steps averaged per sequence


def retention(f: Any, *, max_lag: int | None = None, max_starts: int | None = None) -> Retention:
    """Retention curves and half-lives per unit from forget gates ``f`` of shape (T, H) or (T, B, H).

    ``max_lag`` (default T - 1) bounds the lags computed. ``max_starts`` (default: all) averages
    over that many evenly spaced start steps instead of all of them: exact for tests, fast enough
    for 20,000-step inputs with a few hundred starts. Cost: starts × max_lag × B × H.
    """
    fv = _steps_first(f, "retention")
    T, _, H = fv.shape
    if T < 2:
        raise InputError(f"retention: need at least 2 steps to measure retention, got T={T}")
    K = T - 1 if max_lag is None else int(max_lag)
    if not 1 <= K <= T - 1:
        raise InputError(f"retention: max_lag must be in [1, T-1] = [1, {T - 1}], got {max_lag}")
    # Sum of logs instead of running products: prod f[t+1..t+k] = exp(L[t+k+1] - L[t+1]).
    # Clipping keeps f = 0 finite (exp(-69) is zero for every purpose here).
    logf = np.log(np.clip(fv, 1e-30, 1.0))
    L = np.concatenate([np.zeros((1,) + logf.shape[1:]), np.cumsum(logf, axis=0)], axis=0)  # (T+1, B, H)
    starts = np.arange(T - 1)
    if max_starts is not None and max_starts < len(starts):
        starts = np.unique(np.linspace(0, T - 2, int(max_starts)).round().astype(int))
    total = np.zeros((K + 1, H))
    count = np.zeros(K + 1)
    for t in starts:
        n = min(K, T - 1 - t)  # lags 0..n fit after t
        window = np.exp(L[t + 1 : t + n + 2] - L[t + 1])  # (n+1, B, H), window[k] = R(t, k)
        total[: n + 1] += window.sum(axis=1)
        count[: n + 1] += fv.shape[1]
    curve = total / count[:, None]
    return Retention(curve=curve, half_life=_half_life(curve), max_lag=K, n_starts=len(starts))


def _half_life(curve: np.ndarray) -> np.ndarray:
    below = curve[1:] <= 0.5  # (K, H)
    reached = below.any(axis=0)
    k = below.argmax(axis=0) + 1  # first lag at or below one half
    cols = np.arange(curve.shape[1])
    prev = np.log(np.maximum(curve[k - 1, cols], 1e-300))
    cur = np.log(np.maximum(curve[k, cols], 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (prev - math.log(0.5)) / (prev - cur)
    hl = (k - 1) + np.clip(np.nan_to_num(frac, nan=1.0), 0.0, 1.0)
    return np.where(reached, hl, np.inf)


@dataclass(frozen=True)
class RetentionHistogram:
    """Counts of half-lives in bins ``[edges[j], edges[j+1])``; ``never``: units with inf."""

    counts: np.ndarray  # (n_bins,)
    edges: np.ndarray  # (n_bins + 1,)
    never: int


def retention_histogram(half_life: Any, *, edges: Sequence[float] | None = None) -> RetentionHistogram:
    """Histogram of half-lives. Default bins double in width: [0, 1), [1, 2), [2, 4), [4, 8), …
    up to the largest finite half-life; infinite half-lives are counted in ``never``."""
    hl = np.asarray(half_life, dtype=np.float64).ravel()
    finite = hl[np.isfinite(hl)]
    if edges is None:
        top = float(finite.max()) if finite.size else 0.0
        n = math.floor(math.log2(top)) + 1 if top >= 1 else 0  # 2**n > top: the maximum fits
        e = np.array([0.0] + [2.0**j for j in range(n + 1)])
    else:
        e = np.asarray(edges, dtype=np.float64)
    counts, _ = np.histogram(finite, bins=e)
    return RetentionHistogram(counts=counts, edges=e, never=int((~np.isfinite(hl)).sum()))


# ---------------------------------------------------------------------------------------------
# Saturation (Karpathy, Johnson & Fei-Fei 2015)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saturation:
    """Fraction of gate values below ``low_threshold`` ("left-saturated", shut) and above
    ``high_threshold`` ("right-saturated", wide open), per gate and layer row, over all steps,
    sequences and units; and the same per unit."""

    gates: tuple[str, ...]
    low: np.ndarray  # (G, L)
    high: np.ndarray  # (G, L)
    low_per_unit: np.ndarray  # (G, L, H)
    high_per_unit: np.ndarray  # (G, L, H)
    low_threshold: float
    high_threshold: float

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (gate, layer): ``{"gate", "layer", "low", "high"}``."""
        return [
            {"gate": g, "layer": k, "low": float(self.low[gi, k]), "high": float(self.high[gi, k])}
            for gi, g in enumerate(self.gates)
            for k in range(self.low.shape[1])
        ]


def saturation(
    gates: Any, *, low: float = 0.1, high: float = 0.9, names: Sequence[str] = ("i", "f", "o")
) -> Saturation:
    """Saturation of the gates ``names`` of a trace (mapping or object with attributes i, f, o).

    Each gate array is (L*D, T, ..., H): the first axis is the layer×direction row, the last the
    units, everything between (steps, sequences) is pooled. A 2-D (T, H) array is one layer.
    """
    lows, highs = [], []
    for name in names:
        a = get_quantity(gates, name)
        if a.ndim == 2:
            a = a[None]
        if a.ndim < 3:
            raise InputError(f"saturation: gate {name!r} must be (L*D, T, ..., H) or (T, H), got {a.shape}")
        a = a.reshape(a.shape[0], -1, a.shape[-1])  # (L, N, H)
        lows.append((a < low).mean(axis=1))
        highs.append((a > high).mean(axis=1))
    lo, hi = np.stack(lows), np.stack(highs)  # (G, L, H)
    return Saturation(
        gates=tuple(names),
        low=lo.mean(axis=-1),
        high=hi.mean(axis=-1),
        low_per_unit=lo,
        high_per_unit=hi,
        low_threshold=low,
        high_threshold=high,
    )


# ---------------------------------------------------------------------------------------------
# Unit search (LSTMVis, Strobelt et al. 2018)
# ---------------------------------------------------------------------------------------------


def unit_search(
    values: Any, t0: int, t1: int, threshold: float = 0.5, *, off_outside: bool = False, seq: int = 0
) -> np.ndarray:
    """The units that are on (value > threshold) at every step of [t0, t1), ascending.

    ``values``: (T, H), or (T, B, H) with ``seq`` choosing the sequence. With ``off_outside`` a unit
    must also be off (value <= threshold) at the step just before t0 and just at t1, where those
    exist: the selection then picks units that switch on for exactly this range.
    """
    v = _steps_first(values, "unit_search")[:, seq, :]
    T = v.shape[0]
    if not 0 <= t0 < t1 <= T:
        raise InputError(f"unit_search: need 0 <= t0 < t1 <= T={T}, got t0={t0}, t1={t1}")
    on = (v[t0:t1] > threshold).all(axis=0)
    if off_outside:
        if t0 > 0:
            on &= v[t0 - 1] <= threshold
        if t1 < T:
            on &= v[t1] <= threshold
    return np.flatnonzero(on)


@dataclass(frozen=True)
class Match:
    """A range [start, end) of sequence ``seq`` where all searched units are on together;
    ``score``: the mean value of those units over the range."""

    start: int
    end: int
    seq: int
    score: float

    @property
    def length(self) -> int:
        return self.end - self.start


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in a 1-D boolean mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def find_matches(
    values: Any,
    units: Sequence[int] | np.ndarray,
    threshold: float = 0.5,
    min_len: int = 2,
    *,
    exclude: tuple[int, int] | None = None,
    exclude_seq: int = 0,
    limit: int | None = None,
) -> list[Match]:
    """Ranges where every unit in ``units`` is above ``threshold`` together, at least ``min_len``
    steps long; ranked longest first, then by score (higher first), then by position.

    ``values``: (T, H) or (T, B, H) (matches in every sequence). ``exclude=(t0, t1)`` drops ranges
    overlapping the query itself in sequence ``exclude_seq``. No units → no matches.
    """
    v = _steps_first(values, "find_matches")
    u = np.asarray(units, dtype=np.int64).ravel()
    if u.size == 0:
        return []
    if u.min() < 0 or u.max() >= v.shape[2]:
        raise InputError(f"find_matches: unit indices must be in [0, {v.shape[2]}), got {u.tolist()}")
    sel = v[:, :, u]  # (T, B, U)
    together = np.asarray((sel > threshold).all(axis=2))  # (T, B)
    out: list[Match] = []
    for b in range(v.shape[1]):
        for s, e in _runs(together[:, b]):
            if e - s < min_len:
                continue
            if exclude is not None and b == exclude_seq and s < exclude[1] and exclude[0] < e:
                continue
            out.append(Match(start=s, end=e, seq=b, score=float(sel[s:e, b].mean())))
    out.sort(key=lambda m: (-m.length, -m.score, m.seq, m.start))
    return out if limit is None else out[:limit]


# ---------------------------------------------------------------------------------------------
# Unit scores for sorting
# ---------------------------------------------------------------------------------------------


def unit_scores(
    values: Any,
    *,
    f: Any = None,
    gates: Any = None,
    signal: Any = None,
    low: float = 0.1,
    high: float = 0.9,
    max_lag: int | None = None,
    max_starts: int | None = 256,
) -> dict[str, np.ndarray]:
    """Scores per unit to sort units by; each an (H,) array.

    ``values`` (T, H) or (T, B, H): the quantity shown (c, h, a gate). Always ``mean`` and
    ``variance``. With forget gates ``f`` (same layout): ``half_life`` (see :func:`retention`). With
    ``gates`` (mapping/object with i, f, o in the same layout): ``saturation``, the fraction of steps
    at which a gate is below ``low`` or above ``high``, averaged over i, f, o. With a per-step
    ``signal`` of shape (T,) or (T, B): ``correlation``, Pearson's r of each unit with it (0 for a
    constant unit).
    """
    v = _steps_first(values, "unit_scores")
    flat = v.reshape(-1, v.shape[2])
    scores: dict[str, np.ndarray] = {"mean": flat.mean(axis=0), "variance": flat.var(axis=0)}
    if f is not None:
        scores["half_life"] = retention(f, max_lag=max_lag, max_starts=max_starts).half_life
    if gates is not None:
        sat = []
        for name in ("i", "f", "o"):
            g = _steps_first(get_quantity(gates, name), "unit_scores").reshape(-1, v.shape[2])
            sat.append(((g < low) | (g > high)).mean(axis=0))
        scores["saturation"] = np.mean(sat, axis=0)
    if signal is not None:
        s = np.asarray(as_array(signal), dtype=np.float64)
        if s.ndim == 1:
            s = s[:, None]
        if s.shape != v.shape[:2]:
            raise InputError(f"unit_scores: signal must be (T,) or (T, B) = {v.shape[:2]}, got {s.shape}")
        x = flat - flat.mean(axis=0)
        y = s.reshape(-1) - s.mean()
        denom = np.sqrt((x**2).sum(axis=0) * (y**2).sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (x * y[:, None]).sum(axis=0) / denom
        scores["correlation"] = np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
    return scores


# ---------------------------------------------------------------------------------------------
# The mystery report
# ---------------------------------------------------------------------------------------------

PAD_TOKENS = frozenset({"", "<pad>", "<PAD>"})

TokenKind = Literal["clue", "alibi", "question", "pad", "filler"]


def token_kind(token: str) -> TokenKind:
    """The role of a mystery-task token: ``clue:<name>``, ``alibi:<name>``, ``who?``, padding, or
    filler (everything else)."""
    if token.startswith(CLUE_PREFIX):
        return "clue"
    if token.startswith(ALIBI_PREFIX):
        return "alibi"
    if token == QUESTION:
        return "question"
    if token in PAD_TOKENS:
        return "pad"
    return "filler"


@dataclass(frozen=True)
class UnitEvidence:
    """What one culprit-carrying unit's gates do. Means pool all stories, steps up to the question.

    ``suspect``: the suspect whose stories move this unit's cell at the question the most (None
    when names are unknown); ``*_own``: the same mean restricted to that suspect's clue/alibi tokens.
    """

    unit: int
    eta2: float
    suspect: str | None
    i_clue: float
    i_clue_own: float
    i_filler: float
    f_alibi: float
    f_alibi_own: float
    f_filler: float
    o_question: float
    o_other: float
    notes: bool
    forgets: bool
    holds: bool
    recalls: bool


@dataclass(frozen=True)
class MysteryReport:
    """The mystery report: which units carry the culprit, and what their gates do.

    Units are found by the correlation ratio η² of the cell state at the question step with the
    culprit (the fraction of the variance of c_u across stories explained by who the culprit is; a
    per-unit, many-class correlation). Units with η² >= ``min_eta2`` are kept, best first, at most
    ``top_k``. ``eta2_chance`` ≈ (K - 1) / (B - 1) is what η² reaches by chance with K suspects and
    B stories. ``probe_accuracy``: a nearest-class-mean probe on the kept units, trained on half of
    the stories and tested on the other half (both ways, averaged); ``probe_chance``: the most
    frequent culprit's share.

    The four verdicts pool the kept units (means of their per-unit numbers):
    noting ``i_clue - i_filler >= margin``; forgetting ``f_filler - f_alibi >= margin``;
    holding ``f_filler >= hold``; recalling ``o_question - o_other >= margin``. For clues and alibis
    each unit counts the stronger of all suspects' tokens and its own suspect's tokens.
    """

    n_stories: int
    suspects: list[str]
    layer: int | None  # the layer×direction row read, None when given one layer
    units: list[int]
    eta2: np.ndarray  # (H,)
    eta2_chance: float
    probe_accuracy: float | None
    probe_chance: float
    evidence: list[UnitEvidence]
    i_clue: float
    i_filler: float
    f_alibi: float
    f_filler: float
    o_question: float
    o_other: float
    notes: bool
    forgets: bool
    holds: bool
    recalls: bool
    counts: dict[str, int] = field(default_factory=dict)
    min_eta2: float = 0.3
    margin: float = 0.2
    hold: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers (NaN → None)."""

        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 4)

        return {
            "n_stories": self.n_stories,
            "suspects": list(self.suspects),
            "layer": self.layer,
            "units": list(self.units),
            "eta2_units": [num(float(self.eta2[u])) for u in self.units],
            "eta2_chance": num(self.eta2_chance),
            "probe_accuracy": None if self.probe_accuracy is None else num(self.probe_accuracy),
            "probe_chance": num(self.probe_chance),
            "i_clue": num(self.i_clue),
            "i_filler": num(self.i_filler),
            "f_alibi": num(self.f_alibi),
            "f_filler": num(self.f_filler),
            "o_question": num(self.o_question),
            "o_other": num(self.o_other),
            "notes": self.notes,
            "forgets": self.forgets,
            "holds": self.holds,
            "recalls": self.recalls,
            "counts": dict(self.counts),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """A few lines of plain English quoting the numbers."""

        def yn(b: bool) -> str:
            return "yes" if b else "no"

        def n(x: float) -> str:
            return "n/a" if not math.isfinite(x) else f"{x:.2f}"

        k = len(self.suspects)
        lines = [
            f"Mystery report: {self.n_stories} stories, {k} possible culprits; "
            f"cell state read at the question {QUESTION!r}"
            + ("." if self.layer is None else f" (layer row {self.layer}).")
        ]
        if not self.units:
            best = int(np.argmax(self.eta2)) if self.eta2.size else -1
            lines.append(
                f"No unit carries the culprit: the best, unit {best}, has "
                f"eta^2 = {n(float(self.eta2[best]))} "
                f"(needed {self.min_eta2:.2f}; chance level {n(self.eta2_chance)}). "
                "So: noting no, forgetting no, holding no, recalling no."
            )
            return "\n".join(lines)
        ets = ", ".join(f"{float(self.eta2[u]):.2f}" for u in self.units)
        probe = (
            ""
            if self.probe_accuracy is None
            else f" A nearest-mean probe on them names the culprit in {self.probe_accuracy:.0%} of held-out "
            f"stories (chance {self.probe_chance:.0%})."
        )
        lines.append(
            f"Units carrying the culprit: {', '.join(map(str, self.units))} (eta^2 = {ets}; "
            f"chance level {n(self.eta2_chance)}).{probe}"
        )
        nu = len(self.evidence)
        lines.append(
            f"Noting - do their input gates open at clues? {yn(self.notes)}: mean i {n(self.i_clue)} at clue "
            f"tokens vs {n(self.i_filler)} at filler ({sum(e.notes for e in self.evidence)} of {nu} units)."
        )
        lines.append(
            "Forgetting - do their forget gates drop at the alibi that clears a suspect? "
            f"{yn(self.forgets)}: "
            f"mean f {n(self.f_alibi)} at alibi tokens vs {n(self.f_filler)} at filler "
            f"({sum(e.forgets for e in self.evidence)} of {nu} units)."
        )
        lines.append(
            f"Holding - do they hold across filler (f >= {self.hold:.2f})? {yn(self.holds)}: "
            f"mean f at filler {n(self.f_filler)}."
        )
        lines.append(
            f"Recalling - do their output gates open at the question? {yn(self.recalls)}: mean o "
            f"{n(self.o_question)} at {QUESTION!r} vs {n(self.o_other)} elsewhere "
            f"({sum(e.recalls for e in self.evidence)} of {nu} units)."
        )
        return "\n".join(lines)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float(x[mask].mean()) if mask.any() else float("nan")


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _nanmin(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _culprit_from_tokens(toks: Sequence[str], b: int) -> str:
    clued = [t[len(CLUE_PREFIX) :] for t in toks if t.startswith(CLUE_PREFIX)]
    cleared = {t[len(ALIBI_PREFIX) :] for t in toks if t.startswith(ALIBI_PREFIX)}
    left = sorted(set(clued) - cleared)
    if len(left) != 1:
        raise InputError(
            f"mystery_report: cannot infer the culprit of story {b} from its tokens "
            f"(suspects with a clue and no alibi: {left}); pass culprits="
        )
    return left[0]


def _eta2(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correlation ratio per column of x (B, H) against integer labels (B,)."""
    mu = x.mean(axis=0)
    ss_total = ((x - mu) ** 2).sum(axis=0)
    ss_between = np.zeros(x.shape[1])
    for k in np.unique(labels):
        sel = x[labels == k]
        ss_between += len(sel) * (sel.mean(axis=0) - mu) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        e = ss_between / ss_total
    return np.where(ss_total > 1e-12 * len(x), np.nan_to_num(e), 0.0)


def _probe_accuracy(x: np.ndarray, labels: np.ndarray) -> float | None:
    """Nearest-class-mean accuracy on standardised features, two folds (even / odd stories)."""
    folds = [np.arange(len(x)) % 2 == 0, np.arange(len(x)) % 2 == 1]
    correct, total = 0, 0
    for train in folds:
        test = ~train
        classes = np.unique(labels[train])
        if test.sum() == 0 or len(classes) < 2:
            return None
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
        z_train, z_test = (x[train] - mu) / sd, (x[test] - mu) / sd
        centroids = np.stack([z_train[labels[train] == k].mean(axis=0) for k in classes])
        d = ((z_test[:, None, :] - centroids[None]) ** 2).sum(axis=2)
        correct += int((classes[d.argmin(axis=1)] == labels[test]).sum())
        total += int(test.sum())
    return correct / total


def mystery_report(
    trace: Any,
    tokens: Sequence[Sequence[str]],
    culprits: Sequence[str | int] | None = None,
    *,
    layer: int = -1,
    suspects: Sequence[str] | None = None,
    top_k: int = 3,
    min_eta2: float = 0.3,
    margin: float = 0.2,
    hold: float = 0.9,
) -> MysteryReport:
    """Find the units that carry the culprit and say what their gates do (see :class:`MysteryReport`).

    ``trace``: mapping or object with i, f, o, c (g, h unused), each (T, B, H) or (L*D, T, B, H) with
    ``layer`` picking the row (default: the last). ``tokens``: B lists of T strings in the mystery
    task's convention. ``culprits``: per story a name, or an index into ``suspects``; default:
    inferred from the tokens (the one suspect with a clue and no alibi).
    """
    arrays: dict[str, np.ndarray] = {}
    layer_row: int | None = None
    for name in ("i", "f", "o", "c"):
        a = get_quantity(trace, name)
        if a.ndim == 4:
            layer_row = layer % a.shape[0]
            a = a[layer_row]
        if a.ndim != 3:
            raise InputError(f"mystery_report: {name} must be (T, B, H) or (L*D, T, B, H), got {a.shape}")
        arrays[name] = a.astype(np.float64, copy=False)
    T, B, H = arrays["c"].shape
    for name, a in arrays.items():
        if a.shape != (T, B, H):
            raise InputError(f"mystery_report: {name} has shape {a.shape}, c has {(T, B, H)}")
    if len(tokens) != B or any(len(t) != T for t in tokens):
        raise InputError(f"mystery_report: tokens must be {B} lists of {T} strings (one per story)")

    # Who is the culprit of each story, as a name where we can know it.
    names: list[str] = []
    if culprits is None:
        names = [_culprit_from_tokens(tokens[b], b) for b in range(B)]
    else:
        if len(culprits) != B:
            raise InputError(f"mystery_report: {len(culprits)} culprits given for {B} stories")
        for c in culprits:
            if isinstance(c, str):
                names.append(c)
            elif suspects is not None:
                names.append(str(suspects[int(c)]))
            else:
                names.append(f"#{int(c)}")
    classes = sorted(set(names))
    labels = np.array([classes.index(nm) for nm in names])
    K = len(classes)
    named = not all(nm.startswith("#") for nm in names)

    # The question step of each story and the token masks up to it.
    kinds = np.empty((T, B), dtype=object)
    q_steps = np.zeros(B, dtype=int)
    for b in range(B):
        toks = tokens[b]
        qs = [t for t, tok in enumerate(toks) if tok == QUESTION]
        if not qs:
            raise InputError(f"mystery_report: story {b} has no question token {QUESTION!r}")
        q_steps[b] = qs[-1]
        for t, tok in enumerate(toks):
            kinds[t, b] = token_kind(tok) if t <= q_steps[b] else "pad"
    tok_arr = np.array([list(tt) for tt in tokens], dtype=object).T  # (T, B)
    is_clue, is_alibi, is_filler = kinds == "clue", kinds == "alibi", kinds == "filler"
    is_q = np.zeros((T, B), dtype=bool)
    is_q[q_steps, np.arange(B)] = True
    before_q = (kinds != "pad") & ~is_q

    x = arrays["c"][q_steps, np.arange(B)]  # (B, H): the memory when the question is asked
    eta2 = _eta2(x, labels) if K > 1 else np.zeros(H)
    order = np.argsort(-eta2, kind="stable")
    units = [int(u) for u in order[:top_k] if eta2[u] >= min_eta2]
    chance = (K - 1) / (B - 1) if B > 1 else float("nan")
    probe = _probe_accuracy(x[:, units], labels) if units and K > 1 else None
    probe_chance = float(np.bincount(labels).max() / B)

    evidence: list[UnitEvidence] = []
    for u in units:
        suspect = None
        if named and K > 1:
            mu, sd = x[:, u].mean(), x[:, u].std() + 1e-12
            z = [abs(x[labels == k, u].mean() - mu) / sd for k in range(K)]
            suspect = classes[int(np.argmax(z))]
        own_clue = tok_arr == f"{CLUE_PREFIX}{suspect}" if suspect else np.zeros((T, B), bool)
        own_alibi = tok_arr == f"{ALIBI_PREFIX}{suspect}" if suspect else np.zeros((T, B), bool)
        i_u, f_u, o_u = arrays["i"][..., u], arrays["f"][..., u], arrays["o"][..., u]
        ev = dict(
            i_clue=_masked_mean(i_u, is_clue),
            i_clue_own=_masked_mean(i_u, own_clue & is_clue),
            i_filler=_masked_mean(i_u, is_filler),
            f_alibi=_masked_mean(f_u, is_alibi),
            f_alibi_own=_masked_mean(f_u, own_alibi & is_alibi),
            f_filler=_masked_mean(f_u, is_filler),
            o_question=_masked_mean(o_u, is_q),
            o_other=_masked_mean(o_u, before_q),
        )
        i_best = _nanmax(ev["i_clue"], ev["i_clue_own"])
        f_best = _nanmin(ev["f_alibi"], ev["f_alibi_own"])
        evidence.append(
            UnitEvidence(
                unit=u,
                eta2=float(eta2[u]),
                suspect=suspect,
                **ev,
                notes=i_best - ev["i_filler"] >= margin,
                forgets=ev["f_filler"] - f_best >= margin,
                holds=ev["f_filler"] >= hold,
                recalls=ev["o_question"] - ev["o_other"] >= margin,
            )
        )

    def pooled(values: list[float]) -> float:
        vals = [v for v in values if math.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")

    i_clue = pooled([_nanmax(e.i_clue, e.i_clue_own) for e in evidence])
    i_filler = pooled([e.i_filler for e in evidence])
    f_alibi = pooled([_nanmin(e.f_alibi, e.f_alibi_own) for e in evidence])
    f_filler = pooled([e.f_filler for e in evidence])
    o_question = pooled([e.o_question for e in evidence])
    o_other = pooled([e.o_other for e in evidence])

    def ok(x: float) -> bool:
        return bool(evidence) and math.isfinite(x) and x >= 0

    return MysteryReport(
        n_stories=B,
        suspects=classes,
        layer=layer_row,
        units=units,
        eta2=eta2,
        eta2_chance=chance,
        probe_accuracy=probe,
        probe_chance=probe_chance,
        evidence=evidence,
        i_clue=i_clue,
        i_filler=i_filler,
        f_alibi=f_alibi,
        f_filler=f_filler,
        o_question=o_question,
        o_other=o_other,
        notes=ok(i_clue - i_filler - margin),
        forgets=ok(f_filler - f_alibi - margin),
        holds=ok(f_filler - hold),
        recalls=ok(o_question - o_other - margin),
        counts={
            "clue_tokens": int(is_clue.sum()),
            "alibi_tokens": int(is_alibi.sum()),
            "filler_tokens": int(is_filler.sum()),
            "questions": int(B),
        },
        min_eta2=min_eta2,
        margin=margin,
        hold=hold,
    )
