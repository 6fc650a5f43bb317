"""The explorer's main views as static PNG figures (matplotlib, Agg canvas, no pyplot state):
gate heatmaps of a layer, the retention histogram, gate saturation, and an excerpt of the text
coloured by one unit. For papers and notebooks; the page is the interactive version."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import InputError
from .analysis import get_quantity, retention, retention_histogram, saturation
from .page import display_token

__all__ = ["write_pngs"]

_NAMES = {
    "i": "input gate (noting)",
    "f": "forget gate (holding)",
    "g": "candidate",
    "o": "output gate (recalling)",
    "c": "cell state (memory)",
    "h": "hidden state (recalled)",
}


def _save(fig: Any, path: Path, dpi: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    atomic.write_bytes(path, buf.getvalue())
    return path


def write_pngs(
    out_dir: str | os.PathLike[str],
    trace: Any,
    tokens: Sequence[str],
    *,
    layer: int = 0,
    unit: int | None = None,
    quantity: str = "c",
    excerpt: int = 400,
    max_steps: int = 2000,
    layer_labels: Sequence[str] | None = None,
    dpi: int = 120,
) -> list[Path]:
    """Write the explorer's views as PNGs into ``out_dir``; returns the paths written:

    - ``gates_layer{layer}.png``: units × steps heatmaps of i, f, g, o and c for ``layer`` (at most
      ``max_steps`` steps, from the start);
    - ``retention.png``: the histogram of memory half-lives per layer row;
    - ``saturation.png``: the share of steps each gate is shut (< 0.1) or wide open (> 0.9);
    - ``text_unit{unit}.png``: the first ``excerpt`` tokens coloured by ``unit``'s ``quantity``
      (default: the unit whose ``quantity`` varies most over the excerpt).

    ``trace`` and ``tokens`` as for :func:`lstmkit.explore.build_page` (each quantity (L*D, T, H)).
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for q in ("i", "f", "g", "o", "c", "h"):
        a = get_quantity(trace, q).astype(np.float64)
        arrays[q] = a[None] if a.ndim == 2 else a
    LD, T, H = arrays["c"].shape
    if len(tokens) != T:
        raise InputError(f"write_pngs: {len(tokens)} tokens for a trace of {T} steps")
    if not 0 <= layer < LD:
        raise InputError(f"write_pngs: layer {layer} outside the {LD} layer rows")
    if quantity not in arrays:
        raise InputError(f"write_pngs: quantity must be one of i, f, g, o, c, h, got {quantity!r}")
    labels = list(layer_labels) if layer_labels is not None else [f"layer {k}" for k in range(LD)]
    paths: list[Path] = []

    # 1. Gate heatmaps for one layer.
    n = min(T, max_steps)
    qs = ["i", "f", "g", "o", "c"]
    fig = Figure(figsize=(11, 1.2 + 1.6 * len(qs) * min(1.0, max(0.5, H / 64))))
    axes = fig.subplots(len(qs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, q in zip(axes, qs):
        a = arrays[q][layer, :n].T  # (H, n)
        if q in ("i", "f", "o"):
            im = ax.imshow(a, aspect="auto", interpolation="nearest", cmap="Blues", vmin=0, vmax=1)
        else:
            s = float(np.percentile(np.abs(a), 99.5)) or 1.0
            im = ax.imshow(a, aspect="auto", interpolation="nearest", cmap="RdBu", vmin=-s, vmax=s)
        ax.set_ylabel("unit")
        ax.set_title(_NAMES[q], fontsize=10, loc="left")
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, aspect=8)
    axes[-1].set_xlabel("step")
    fig.suptitle(f"Gates of {labels[layer]} ({H} units, steps 0–{n - 1})", fontsize=11, x=0.01, ha="left")
    fig.subplots_adjust(
        left=0.06, right=0.97, top=1 - 0.75 / fig.get_figheight(), bottom=0.6 / fig.get_figheight(), hspace=0.5
    )
    paths.append(_save(fig, out / f"gates_layer{layer}.png", dpi))

    # 2. Retention histogram per layer row.
    fig = Figure(figsize=(7, 1.0 + 2.0 * LD))
    axes = fig.subplots(LD, 1, squeeze=False)[:, 0]
    for k, ax in enumerate(axes):
        if T < 2:
            ax.text(0.5, 0.5, "too few steps", ha="center", va="center", transform=ax.transAxes)
            continue
        r = retention(arrays["f"][k], max_lag=min(T - 1, 4096), max_starts=256 if T > 512 else None)
        hist = retention_histogram(r.half_life)
        names = ["<1"] + [f"{e:g}" for e in hist.edges[1:-1]] + ["never"]
        counts = list(hist.counts) + [hist.never]
        colors = ["#6baed6"] * len(hist.counts) + ["#94a3b8"]
        ax.bar(range(len(counts)), counts, color=colors)
        ax.set_xticks(range(len(counts)), names)
        ax.set_ylabel("units")
        finite = r.half_life[np.isfinite(r.half_life)]
        med = f"median {np.median(finite):.1f} steps" if finite.size else "no unit falls to half"
        ax.set_title(f"{labels[k]}: memory half-life per unit ({med})", fontsize=10, loc="left")
    axes[-1].set_xlabel("half-life (steps, bins start at the value shown; 'never': not within the data)")
    fig.tight_layout()
    paths.append(_save(fig, out / "retention.png", dpi))

    # 3. Saturation per gate and layer row.
    sat = saturation(arrays)
    fig = Figure(figsize=(7, 0.8 + 0.9 * LD * len(sat.gates) / 2))
    ax = fig.subplots()
    rows = [(g, k) for k in range(LD) for g in sat.gates]
    y = np.arange(len(rows))[::-1]
    lo = np.array([sat.low[sat.gates.index(g), k] for g, k in rows])
    hi = np.array([sat.high[sat.gates.index(g), k] for g, k in rows])
    ax.barh(y, lo, color="#c6dbef", label=f"shut (< {sat.low_threshold})")
    ax.barh(y, 1 - lo - hi, left=lo, color="#e5e7eb", label="in between")
    ax.barh(y, hi, left=1 - hi, color="#08306b", label=f"wide open (> {sat.high_threshold})")
    ax.set_yticks(y, [f"{labels[k]} · {_NAMES[g].split(' (')[0]}" for g, k in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of steps")
    # the legend in a row of its own between the title and the bars: below the axis it met the label
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, frameon=False, fontsize=9, borderaxespad=0.3)
    ax.set_title("Gate saturation", fontsize=10, loc="left", pad=22)
    fig.tight_layout()
    paths.append(_save(fig, out / "saturation.png", dpi))

    # 4. Text excerpt coloured by one unit.
    m = min(T, excerpt)
    vals = arrays[quantity][layer, :m]  # (m, W)
    W = vals.shape[1]
    u = int(np.argmax(vals.var(axis=0))) if unit is None else int(unit)
    if not 0 <= u < W:
        raise InputError(f"write_pngs: unit {u} outside the {W} units of {quantity!r}")
    v = vals[:, u]
    if quantity in ("i", "f", "o"):
        norm, cmap_name = Normalize(0, 1), "Blues"
    else:
        s = float(np.abs(arrays[quantity][layer, :, u]).max()) or 1.0
        norm, cmap_name = Normalize(-s, s), "RdBu"
    from matplotlib import colormaps

    cmap = colormaps[cmap_name]
    words = any(len(t) != 1 for t in tokens[:m])
    cols = 80
    cells: list[tuple[int, int, int, str]] = []  # (row, col, width, text)
    row = col = 0
    for t in range(m):
        text = display_token(tokens[t])
        w = len(text) + (1 if words else 0)
        if col + w > cols and col > 0:
            row, col = row + 1, 0
        cells.append((row, col, len(text), text))
        col += w
        if "\n" in tokens[t]:
            row, col = row + 1, 0
    nrows = row + 1
    fs = 9.0
    charw = 0.602 * fs / 72  # DejaVu Sans Mono's advance, in inches: cells and glyphs line up
    bar_h = 0.95  # inches at the bottom for the colour scale
    fig_h = nrows * 0.24 + 0.6 + bar_h
    fig = Figure(figsize=(cols * charw / 0.96, fig_h))
    ax = fig.add_axes((0.02, (0.02 + bar_h) / fig_h, 0.96, 1 - (0.47 + bar_h) / fig_h))
    # the colour scale: what a cell's colour means, in the quantity's units
    from matplotlib.cm import ScalarMappable

    cax = fig.add_axes((0.3, 0.5 / fig_h, 0.4, 0.12 / fig_h))
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
    cb.ax.tick_params(labelsize=8)
    what = _NAMES[quantity].split(" (")[0]
    cb.set_label(f"unit {u}'s {what}" + (" (0 = shut, 1 = open)" if quantity in ("i", "f", "o") else ""), fontsize=8)
    for t, (r_, c_, w_, text) in enumerate(cells):
        rgba = cmap(norm(v[t]))
        ax.add_patch(Rectangle((c_, -r_ - 1), max(w_, 1), 0.92, color=rgba, linewidth=0))
        lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
        ax.text(
            c_ + 0.05,
            -r_ - 0.5,
            text,
            family="DejaVu Sans Mono",
            fontsize=fs,
            va="center",
            ha="left",
            color="white" if lum < 0.55 else "black",
        )
    ax.set_xlim(0, cols)
    ax.set_ylim(-nrows - 0.1, 0.1)
    ax.axis("off")
    fig.suptitle(
        f"Unit {u}'s {_NAMES[quantity]} over the first {m} tokens ({labels[layer]})", fontsize=10, x=0.02, ha="left"
    )
    paths.append(_save(fig, out / f"text_unit{u}.png", dpi))
    return paths
