"""The explorer's analyses against hand-computed values on small fixed traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lstmkit.data.mystery import ALIBI_PREFIX, CLUE_PREFIX, QUESTION, MysteryTask
from lstmkit.explore import (
    find_matches,
    mystery_report,
    retention,
    retention_histogram,
    saturation,
    token_kind,
    unit_scores,
    unit_search,
)

# ------------------------------------------------------------------------------------ retention


def test_retention_constant_half_is_one_step() -> None:
    f = np.full((20, 1), 0.5)
    r = retention(f)
    assert r.curve.shape == (20, 1)
    for k in range(8):
        assert r.curve[k, 0] == pytest.approx(0.5**k)
    assert r.half_life[0] == pytest.approx(1.0)


def test_retention_constant_point_nine() -> None:
    f = np.full((40, 2), 0.9)
    r = retention(f)
    # 0.9**k = 0.5  ->  k = ln 0.5 / ln 0.9 = 6.5788...
    assert r.half_life[0] == pytest.approx(6.5788, abs=1e-3)
    assert r.half_life[1] == pytest.approx(math.log(0.5) / math.log(0.9))


def test_retention_full_memory_is_inf() -> None:
    f = np.ones((10, 3))
    f[:, 1] = 0.5
    r = retention(f)
    assert math.isinf(r.half_life[0]) and math.isinf(r.half_life[2])
    assert r.half_life[1] == pytest.approx(1.0)
    assert np.allclose(r.curve[:, 0], 1.0)


def test_retention_varying_gate_by_hand() -> None:
    # f[0] never counts: what is written at t survives f[t+1] * ... * f[t+k].
    f = np.array([[0.3], [0.5], [1.0], [0.25]])
    r = retention(f)
    c1 = (0.5 + 1.0 + 0.25) / 3  # t = 0, 1, 2
    c2 = (0.5 * 1.0 + 1.0 * 0.25) / 2  # t = 0, 1
    c3 = 0.5 * 1.0 * 0.25  # t = 0
    assert r.curve[:, 0] == pytest.approx([1.0, c1, c2, c3])
    # crosses 1/2 between k = 1 and k = 2, interpolated in log space
    expected = 1 + math.log(c1 / 0.5) / math.log(c1 / c2)
    assert r.half_life[0] == pytest.approx(expected)
    assert 1.3 < r.half_life[0] < 1.4


def test_retention_averages_products_over_sequences() -> None:
    # Two sequences, f = 0.5 and f = 1: mean retained (0.5**k + 1) / 2 never falls to 1/2.
    f = np.stack([np.full((12, 1), 0.5), np.full((12, 1), 1.0)], axis=1)  # (T, B, H)
    r = retention(f)
    assert r.curve[3, 0] == pytest.approx((0.125 + 1) / 2)
    assert math.isinf(r.half_life[0])


def test_retention_subsampled_starts_and_max_lag() -> None:
    f = np.full((500, 2), 0.8)
    r = retention(f, max_lag=30, max_starts=17)
    assert r.curve.shape == (31, 2)
    assert r.max_lag == 30 and r.n_starts == 17
    assert r.curve[5, 0] == pytest.approx(0.8**5)
    # a memory longer than the lags computed is reported as inf
    r2 = retention(np.full((500, 1), 0.99), max_lag=30)
    assert math.isinf(r2.half_life[0])
    with pytest.raises(ValueError, match="max_lag"):
        retention(f, max_lag=500)
    with pytest.raises(ValueError, match=r"\(T, H\)"):
        retention(np.ones(5))


def test_retention_histogram_by_hand() -> None:
    hist = retention_histogram([0.5, 1.0, 3.0, 6.6, math.inf, 7.99])
    assert hist.edges.tolist() == [0, 1, 2, 4, 8]
    assert hist.counts.tolist() == [1, 1, 1, 2]
    assert hist.never == 1
    hist = retention_histogram([8.0])  # the top edge is open: 8 needs a bin [8, 16)
    assert hist.edges.tolist() == [0, 1, 2, 4, 8, 16] and hist.counts.tolist() == [0, 0, 0, 0, 1]
    custom = retention_histogram([1, 2, 3], edges=[0, 2.5, 10])
    assert custom.counts.tolist() == [2, 1]


# ------------------------------------------------------------------------------------ saturation


def test_saturation_by_hand() -> None:
    i = np.full((2, 5, 2), 0.5)
    i[0, :, 0] = [0.05, 0.95, 0.5, 0.5, 0.01]
    i[0, 3, 1] = 0.99
    i[1, 0, 0], i[1, 1, 0] = 0.1, 0.9  # exactly at the thresholds: neither
    f = np.full((2, 5, 2), 0.95)
    o = np.full((2, 5, 2), 0.02)
    o[1] = 0.5
    sat = saturation({"i": i, "f": f, "o": o})
    assert sat.gates == ("i", "f", "o")
    assert sat.low[0].tolist() == pytest.approx([0.2, 0.0])  # 2 of 10 values of layer 0 below 0.1
    assert sat.high[0].tolist() == pytest.approx([0.2, 0.0])  # 0.95 and 0.99
    assert sat.high[1].tolist() == pytest.approx([1.0, 1.0])
    assert sat.low[2].tolist() == pytest.approx([1.0, 0.0])
    assert sat.low_per_unit[0, 0].tolist() == pytest.approx([0.4, 0.0])
    assert sat.high_per_unit[0, 0].tolist() == pytest.approx([0.2, 0.2])
    rows = sat.rows()
    assert {"gate": "i", "layer": 0, "low": pytest.approx(0.2), "high": pytest.approx(0.2)} in rows


def test_saturation_pools_batch_axis_and_accepts_objects() -> None:
    class Trace:
        i = np.zeros((1, 4, 3, 2))  # (L*D, T, B, H): all shut
        f = np.ones((1, 4, 3, 2))
        o = np.full((1, 4, 3, 2), 0.5)

    sat = saturation(Trace())
    assert sat.low[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert sat.high[:, 0].tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------------------------------ unit search


def _search_values() -> np.ndarray:
    v = np.full((12, 3), 0.2)
    v[3:7, 0] = 0.8  # exactly over [3, 7)
    v[2:9, 1] = 0.8  # a longer range around it
    v[3:5, 2] = 0.8  # only part of it
    return v


def test_unit_search_by_hand() -> None:
    v = _search_values()
    assert unit_search(v, 3, 7, 0.5).tolist() == [0, 1]
    assert unit_search(v, 3, 7, 0.5, off_outside=True).tolist() == [0]
    assert unit_search(v, 3, 5, 0.5).tolist() == [0, 1, 2]
    assert unit_search(v, 3, 5, 0.9).tolist() == []
    assert unit_search(v, 0, 1, 0.1).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="t0"):
        unit_search(v, 5, 5)
    batch = np.stack([np.zeros_like(v), v], axis=1)  # (T, B, H)
    assert unit_search(batch, 3, 7, 0.5, seq=1).tolist() == [0, 1]
    assert unit_search(batch, 3, 7, 0.5, seq=0).tolist() == []


def test_find_matches_by_hand() -> None:
    v = np.zeros((24, 3))
    for s, e, val in [(2, 5, 0.9), (8, 9, 0.9), (12, 17, 0.7), (19, 22, 0.6)]:
        v[s:e, :2] = val
    v[18:24, 0] = 0.9  # unit 0 alone: no match for {0, 1}
    m = find_matches(v, [0, 1], 0.5, min_len=2)
    # longest first, then the higher mean: (2, 5) at 0.9 before (19, 22) at 0.6 / 0.9
    assert [(x.start, x.end) for x in m] == [(12, 17), (2, 5), (19, 22)]
    assert m[0].length == 5 and m[0].score == pytest.approx(0.7)
    assert m[2].score == pytest.approx((0.6 * 3 + 0.9 * 3) / 6)
    assert [(x.start, x.end) for x in find_matches(v, [0, 1], 0.5, min_len=1)][-1] == (8, 9)
    assert [(x.start, x.end) for x in find_matches(v, [0, 1], 0.5, exclude=(3, 4))] == [(12, 17), (19, 22)]
    assert find_matches(v, [], 0.5) == []
    assert len(find_matches(v, [0, 1], 0.5, limit=1)) == 1
    with pytest.raises(ValueError, match="unit indices"):
        find_matches(v, [3], 0.5)


def test_find_matches_across_sequences() -> None:
    v = np.zeros((10, 2, 1))
    v[1:4, 0, 0] = 1.0
    v[5:10, 1, 0] = 1.0
    m = find_matches(v, [0], 0.5)
    assert [(x.seq, x.start, x.end) for x in m] == [(1, 5, 10), (0, 1, 4)]


def test_unit_scores_by_hand() -> None:
    values = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, -1.0]])
    f = np.full((4, 3), 0.5)
    gates = {"i": np.full((4, 3), 0.95), "f": np.full((4, 3), 0.5), "o": np.full((4, 3), 0.05)}
    s = unit_scores(values, f=f, gates=gates, signal=[0, 1, 0, 1])
    assert s["mean"].tolist() == pytest.approx([0.5, 1.0, -0.5])
    assert s["variance"].tolist() == pytest.approx([0.25, 0.0, 0.25])
    assert s["correlation"].tolist() == pytest.approx([1.0, 0.0, -1.0])
    assert s["half_life"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert s["saturation"].tolist() == pytest.approx([2 / 3] * 3)  # i and o saturated, f not
    assert set(unit_scores(values)) == {"mean", "variance"}


# ------------------------------------------------------------------------------------ mystery report

SUSPECTS = ["ann", "bob", "cy", "dee"]
FILLER = ["the", "night", "was", "quiet", "a", "door", "creaked", "somewhere"]


def _stories(rng: np.random.Generator, B: int, T: int) -> tuple[list[list[str]], list[str]]:
    """Stories in the task's convention: red herrings get a clue and later an alibi, the culprit a
    clue; the question comes last."""
    stories, culprits = [], []
    for _ in range(B):
        culprit, *herrings = rng.permutation(SUSPECTS)[: 1 + rng.integers(1, 3)]
        events = []
        for h in herrings:
            events += [CLUE_PREFIX + h, ALIBI_PREFIX + h]
        events.append(CLUE_PREFIX + culprit)
        where = np.sort(rng.choice(T - 1, size=len(events), replace=False))
        toks = [str(rng.choice(FILLER)) for _ in range(T - 1)] + [QUESTION]
        for pos, ev in zip(where, events):
            toks[pos] = ev
        stories.append(toks)
        culprits.append(str(culprit))
    return stories, culprits


def _traces(stories: list[list[str]], H: int, rng: np.random.Generator, plant: str) -> dict[str, np.ndarray]:
    T, B = len(stories[0]), len(stories)
    i, f, o, g = (rng.uniform(0.05, 0.95, (T, B, H)) for _ in range(4))
    g = g * 2 - 1
    code = {"ann": 1.0, "bob": -1.0, "cy": 0.5, "dee": -0.5}
    if plant == "gates":  # unit 4 notes clues, forgets at alibis, recalls at the question
        for b, toks in enumerate(stories):
            for t, tok in enumerate(toks):
                kind = token_kind(tok)
                i[t, b, 4] = 0.9 if kind == "clue" else 0.05
                f[t, b, 4] = 0.05 if kind == "alibi" else 0.98
                o[t, b, 4] = 0.9 if kind == "question" else 0.1
                g[t, b, 4] = code[tok.removeprefix(CLUE_PREFIX)] if kind == "clue" else 0.0
    c = np.zeros((T, B, H))
    prev = np.zeros((B, H))
    for t in range(T):
        prev = f[t] * prev + i[t] * g[t]
        c[t] = prev
    if plant == "memory-only":  # unit 4 knows the culprit, but its gates do nothing telling
        culprit_code = np.array([code[s] for s in _culprits_of(stories)])
        c[:, :, 4] = culprit_code[None, :] + rng.normal(0, 0.05, (T, B))
        i[..., 4], f[..., 4], o[..., 4] = (rng.uniform(0.4, 0.6, (T, B)) for _ in range(3))
    h = o * np.tanh(c)
    return {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}


def _culprits_of(stories: list[list[str]]) -> list[str]:
    out = []
    for toks in stories:
        clued = {t.removeprefix(CLUE_PREFIX) for t in toks if t.startswith(CLUE_PREFIX)}
        cleared = {t.removeprefix(ALIBI_PREFIX) for t in toks if t.startswith(ALIBI_PREFIX)}
        (c,) = clued - cleared
        out.append(c)
    return out


def test_mystery_report_finds_planted_unit_and_says_yes() -> None:
    rng = np.random.default_rng(0)
    stories, culprits = _stories(rng, 160, 24)
    tr = _traces(stories, 8, rng, "gates")
    rep = mystery_report(tr, stories, culprits)
    assert rep.units == [4]
    assert rep.eta2[4] > 0.9
    ev = rep.evidence[0]
    assert ev.unit == 4
    # the numbers planted, read back exactly
    assert rep.i_clue == pytest.approx(0.9) and rep.i_filler == pytest.approx(0.05)
    assert rep.f_alibi == pytest.approx(0.05) and rep.f_filler == pytest.approx(0.98)
    assert rep.o_question == pytest.approx(0.9) and rep.o_other == pytest.approx(0.1)
    assert rep.notes and rep.forgets and rep.holds and rep.recalls
    assert rep.probe_accuracy is not None and rep.probe_accuracy > 0.9
    text = rep.summary()
    assert "Units carrying the culprit: 4" in text
    assert text.count("? yes") == 4 and "? no" not in text
    assert "0.90 at clue tokens vs 0.05 at filler" in text
    assert "0.05 at alibi tokens vs 0.98 at filler" in text
    assert f"0.90 at {QUESTION!r} vs 0.10 elsewhere" in text
    assert rep.to_dict()["units"] == [4]
    # culprits inferred from the tokens, and given as indices, agree
    assert mystery_report(tr, stories).units == [4]
    idx = [SUSPECTS.index(c) for c in culprits]
    layered = {k: np.stack([np.zeros_like(v), v]) for k, v in tr.items()}  # (L*D, T, B, H)
    rep2 = mystery_report(layered, stories, idx, suspects=SUSPECTS, layer=1)
    assert rep2.units == [4] and rep2.layer == 1 and rep2.notes


def test_mystery_report_says_no_without_the_behaviour() -> None:
    rng = np.random.default_rng(1)
    stories, culprits = _stories(rng, 160, 24)
    rep = mystery_report(_traces(stories, 8, rng, "none"), stories, culprits)
    assert rep.units == []
    assert not (rep.notes or rep.forgets or rep.holds or rep.recalls)
    assert "No unit carries the culprit" in rep.summary()
    assert rep.eta2.max() < 0.3


def test_mystery_report_memory_without_gate_behaviour_says_no() -> None:
    rng = np.random.default_rng(2)
    stories, culprits = _stories(rng, 160, 24)
    rep = mystery_report(_traces(stories, 8, rng, "memory-only"), stories, culprits)
    assert rep.units == [4]  # it carries the culprit ...
    assert not (rep.notes or rep.forgets or rep.holds or rep.recalls)  # ... but not through its gates
    text = rep.summary()
    assert text.count("? no") == 4


def test_mystery_report_bad_input() -> None:
    rng = np.random.default_rng(3)
    stories, culprits = _stories(rng, 10, 12)
    tr = _traces(stories, 4, rng, "none")
    with pytest.raises(ValueError, match="tokens must be"):
        mystery_report(tr, stories[:-1], culprits)
    bad = [s[:-1] + ["the"] for s in stories]
    with pytest.raises(ValueError, match="no question token"):
        mystery_report(tr, bad, culprits)
    with pytest.raises(ValueError, match="culprits given"):
        mystery_report(tr, stories, culprits[:3])


def test_token_kinds() -> None:
    assert [token_kind(t) for t in [CLUE_PREFIX + "ann", ALIBI_PREFIX + "bob", QUESTION, "<pad>", "the"]] == [
        "clue",
        "alibi",
        "question",
        "pad",
        "filler",
    ]


def test_token_kinds_of_the_task_vocabulary() -> None:
    """The report reads the task's own words: 5 fillers, a clue and an alibi per suspect, one question."""
    task = MysteryTask(suspects=3, red_herrings=1, filler_words=5, n_val=4, n_test=4)
    assert task.vocab is not None
    kinds = [token_kind(t) for t in task.vocab]
    assert kinds == ["filler"] * 5 + ["clue"] * 3 + ["alibi"] * 3 + ["question"]
    assert [task.vocab[task.clue_id(s)] for s in range(3)] == [CLUE_PREFIX + n for n in task.class_names() or []]
