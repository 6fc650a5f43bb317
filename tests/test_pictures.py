"""Issue 20 item 8: pictures people can read.

saturation.png: the legend does not overlap the axis label; the text PNG has a colour scale; the
learning curves draw the task's baseline; the explorer opens on the unit the mystery report names
first. Figures are checked on the matplotlib objects that were saved (their drawn extents), the page
in Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_explore_page import CHROMIUM, np_lstm, open_page

from lstmkit.explore import pngs, write_pngs


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The Figure behind every PNG that write_pngs saves, by file name."""
    figs: dict[str, Any] = {}
    real = pngs._save

    def keep(fig: Any, path: Path, dpi: int) -> Path:
        figs[path.name] = fig
        return real(fig, path, dpi)

    monkeypatch.setattr(pngs, "_save", keep)
    return figs


def test_saturation_legend_clears_the_axis_label(tmp_path, saved_figures):
    tokens = list("the quick brown fox jumps over the lazy dog " * 3)
    write_pngs(tmp_path, np_lstm(tokens, H=12, layers=2), tokens)
    fig = saved_figures["saturation.png"]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    for other in (ax.xaxis.label, ax.title):
        assert not legend.overlaps(other.get_window_extent(renderer)), other.get_text()
    for tick in ax.get_xticklabels():
        assert not legend.overlaps(tick.get_window_extent(renderer))
    # and the whole legend is inside the figure
    box = fig.bbox
    assert box.x0 <= legend.x0 and legend.x1 <= box.x1 and box.y0 <= legend.y0 and legend.y1 <= box.y1


def test_text_png_has_a_colour_scale(tmp_path, saved_figures):
    tokens = list("to be, or not to be " * 4)
    paths = write_pngs(tmp_path, np_lstm(tokens, H=6), tokens, unit=2, quantity="f")
    fig = saved_figures[paths[-1].name]
    bars = [a for a in fig.axes if getattr(a, "_colorbar", None) is not None]
    assert len(bars) == 1
    cb = bars[0]
    assert cb.get_xlim() == pytest.approx((0, 1))  # a gate: 0 = shut .. 1 = open
    assert "unit 2's forget gate" in cb.get_xlabel()
    renderer = fig.canvas.get_renderer()
    label = cb.xaxis.label.get_window_extent(renderer)
    assert fig.bbox.y0 <= label.y0  # the label is not cut off at the bottom
    text_axes = [a for a in fig.axes if a is not cb][0]
    assert not cb.get_window_extent(renderer).overlaps(text_axes.get_window_extent(renderer))


def _fake_run(d: Path, task: str, val_key: str, base: dict[str, float]) -> Path:
    d.mkdir()
    recs = [{"step": s, "split": "train", "loss": 3.0 - s / 100} for s in (50, 100, 150)]
    recs += [{"step": s, "split": "val", val_key: 4.0 - s / 100} for s in (100, 150)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "result.json").write_text(json.dumps({"baseline": base}))
    (d / "config.json").write_text(json.dumps({"task": {"name": task}}))
    return d


def _plotted(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from lstmkit.train.plots import plot_run

    figs: list[Any] = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    paths = plot_run(run_dir)
    return {p.name: f for p, f in zip(paths, figs)}


def _dashed_at(fig: Any) -> list[float]:
    return [float(line.get_ydata()[0]) for line in fig.axes[0].lines if line.get_linestyle() == "--"]


def test_learning_curves_draw_the_baseline(tmp_path, monkeypatch):
    figs = _plotted(_fake_run(tmp_path / "t", "text", "bits_per_char", {"nats_per_char": 3.2, "bits_per_char": 4.6}),
                    monkeypatch)  # fmt: skip
    assert _dashed_at(figs["loss.png"]) == [pytest.approx(3.2)]  # the loss is in nats per character
    assert _dashed_at(figs["bits_per_char.png"]) == [pytest.approx(4.6)]
    texts = [t.get_text() for t in figs["bits_per_char.png"].axes[0].get_legend().get_texts()]
    assert any("baseline (unigram: character frequencies): 4.6" in t for t in texts)
    figs = _plotted(_fake_run(tmp_path / "m", "mystery", "accuracy", {"accuracy": 1 / 3}), monkeypatch)
    assert _dashed_at(figs["accuracy.png"]) == [pytest.approx(1 / 3)]
    assert _dashed_at(figs["loss.png"]) == []  # no baseline in the loss's units: no line rather than a wrong one


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.browser
@pytest.mark.slow  # starts chromium
def test_explorer_opens_on_the_reports_first_unit(trained_run, tmp_path):
    from lstmkit.explore import explore_run

    info = explore_run(trained_run, out=tmp_path / "x")
    report = info["report"]
    assert report is not None
    # the unit the report's text names first: the best carrier, or the best candidate when none carries
    if report.units:
        first = report.units[0]
        assert f"Units carrying the culprit: {first}," in info["summary"] + "," or (
            f"Units carrying the culprit: {first} " in info["summary"]
        )
    else:
        first = int(np.argmax(report.eta2))
        assert f"the best, unit {first}," in info["summary"]
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        o = open_page(b, info["page"])
        assert o.page.input_value("#unit") == str(first)
        assert o.page.input_value("#layer") == str(report.layer or 0)
        assert "unit " + str(first) in o.page.inner_text("#text-caption")
        assert o.errors == []
        b.close()
