"""The explorer page: one self-contained HTML file from a gate trace of one sequence.

Everything the page needs is inside the file: the styles, the script and the data (a JSON block
of type ``application/json`` that the script parses, never executes). Gate values travel as 8-bit
codes in base64 (a quantity of a 20,000-step, 128-unit trace is 2.5 MB), which is plenty for colour
and for the unit search's thresholds (the error is at most half a code, 0.2 % of the range).

Safety: the JSON is escaped so that no ``<``, ``>`` or ``&`` appears literally (``</script>`` in a
token cannot close the block), the script renders tokens with ``textContent`` only, and a Content
Security Policy allows only the page's own script (by hash), no network at all.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..errors import InputError
from .analysis import QUANTITIES, MysteryReport, get_quantity, retention, retention_histogram, saturation

__all__ = ["build_page", "write_page", "display_token", "trace_for_sequence", "page_data"]

GATE_KINDS = {"i": "gate", "f": "gate", "o": "gate", "g": "signed", "c": "signed", "h": "signed"}

# Above this many steps the retention average uses evenly spaced start steps and a bounded lag,
# so that building the page stays well under a second per layer (see analysis.retention).
_RETENTION_MAX_STARTS = 256
_RETENTION_MAX_LAG = 4096


def display_token(token: str) -> str:
    """A visible form of any token: newline → ↵, tab → ⇥, other control characters → their Unicode
    control pictures (␀…␟, ␡), invisible format characters (zero-width space, BOM…) → ⟨U+XXXX⟩,
    the empty token → ∅. Spaces stay spaces (the colour behind them shows them)."""
    if token == "":
        return "∅"
    out = []
    for ch in token:
        o = ord(ch)
        if ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif o < 0x20:
            out.append(chr(0x2400 + o))
        elif o == 0x7F:
            out.append("␡")
        elif unicodedata.category(ch) in ("Cf", "Cs", "Co", "Cn", "Zl", "Zp") or o in (0xA0,):
            out.append(f"⟨U+{o:04X}⟩")
        else:
            out.append(ch)
    return "".join(out)


def trace_for_sequence(trace: Any, seq: int = 0) -> dict[str, np.ndarray]:
    """The page's trace layout (each quantity (L*D, T, H)) for sequence ``seq`` of a batch trace
    (the core's GateTrace or a mapping, each quantity (L*D, T, B, H))."""
    out = {}
    for q in QUANTITIES:
        a = get_quantity(trace, q)
        if a.ndim != 4:
            raise InputError(f"trace_for_sequence: {q} must be (L*D, T, B, H), got shape {a.shape}")
        out[q] = np.ascontiguousarray(a[:, :, seq, :])
    return out


def _num(x: Any, nd: int = 4) -> float | None:
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _nums(a: Any, nd: int = 4) -> list[float | None]:
    return [_num(x, nd) for x in np.asarray(a, dtype=np.float64).ravel()]


def _encode(a: np.ndarray, lo: float, hi: float) -> str:
    """(T, W) float → base64 of uint8 codes, row-major (step-major)."""
    span = hi - lo if hi > lo else 1.0
    codes = np.clip(np.rint((a - lo) / span * 255.0), 0, 255).astype(np.uint8)
    return base64.b64encode(np.ascontiguousarray(codes).tobytes()).decode("ascii")


def _check_trace(trace: Any, tokens: Sequence[str]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for q in QUANTITIES:
        a = get_quantity(trace, q).astype(np.float32, copy=False)
        if a.ndim == 2:  # (T, H): one layer
            a = a[None]
        if a.ndim != 3:
            raise InputError(
                f"build_page: trace[{q!r}] must be (L*D, T, H) for one sequence, got shape {a.shape}; "
                "for a batch trace use trace_for_sequence(trace, seq)"
            )
        arrays[q] = a
    LD, T, H = arrays["c"].shape
    for q, a in arrays.items():
        want = (LD, T) if q == "h" else (LD, T, H)
        if a.shape[: len(want)] != want:
            raise InputError(f"build_page: trace[{q!r}] has shape {a.shape}, expected {want} + (units,)")
        if not np.isfinite(a).all():
            raise InputError(f"build_page: trace[{q!r}] contains NaN or inf")
    if len(tokens) != T:
        raise InputError(f"build_page: {len(tokens)} tokens given for a trace of {T} steps")
    if T == 0 or H == 0:
        raise InputError("build_page: the trace is empty (no steps or no units)")
    return arrays


def page_data(
    trace: Any,
    tokens: Sequence[str],
    *,
    title: str = "lstmkit explorer",
    layer_labels: Sequence[str] | None = None,
    predictions: Sequence[Mapping[str, Any]] | None = None,
    next_probs: Sequence[Mapping[str, float] | Sequence[tuple[str, float]] | None] | None = None,
    report: MysteryReport | str | None = None,
    signal: Sequence[float] | None = None,
    signal_name: str = "signal",
) -> dict[str, Any]:
    """The JSON-ready data the page embeds (see :func:`build_page` for the arguments)."""
    tokens = [str(t) for t in tokens]
    arrays = _check_trace(trace, tokens)
    LD, T, H = arrays["c"].shape
    P = arrays["h"].shape[2]
    labels = list(layer_labels) if layer_labels is not None else [f"layer {k}" for k in range(LD)]
    if len(labels) != LD:
        raise InputError(f"build_page: {len(labels)} layer_labels for {LD} layer rows")

    quantities: dict[str, Any] = {}
    for q in QUANTITIES:
        a = arrays[q]
        ranges, display, unit_display, blobs = [], [], [], []
        for k in range(LD):
            if GATE_KINDS[q] == "gate":
                lo, hi, disp = 0.0, 1.0, 1.0
                per_unit = np.ones(a.shape[2])
            else:
                m = float(np.abs(a[k]).max())
                s = 1.0 if q == "g" else max(m, 1e-6)
                lo, hi = -s, s
                # Colour saturates at the 99.5th percentile so one outlier does not wash out the rest;
                # a unit's own scale is floored at a tenth of the layer's so that noise is not inflated.
                disp = 1.0 if q == "g" else max(float(np.percentile(np.abs(a[k]), 99.5)), 1e-6)
                per_unit = np.maximum(np.percentile(np.abs(a[k]), 99.5, axis=0), 0.1 * disp)
            ranges.append([lo, hi])
            display.append(round(disp, 6))
            unit_display.append([round(float(x), 6) for x in per_unit])
            blobs.append(_encode(a[k], lo, hi))
        quantities[q] = {
            "kind": GATE_KINDS[q],
            "width": int(a.shape[2]),
            "range": ranges,
            "display": display,
            "unit_display": unit_display,
            "data": blobs,
        }

    # Memory retention and per-unit scores, per layer row, from the full-precision trace.
    long = T > 2 * _RETENTION_MAX_STARTS
    ret_layers: list[dict[str, Any] | None] = []
    scores: list[dict[str, Any]] = []
    sat = saturation(arrays)
    for k in range(LD):
        if T >= 2:
            r = retention(
                arrays["f"][k],
                max_lag=min(T - 1, _RETENTION_MAX_LAG),
                max_starts=_RETENTION_MAX_STARTS if long else None,
            )
            K = r.max_lag
            lags = np.unique(np.concatenate([[0], np.rint(np.geomspace(1, K, min(K, 80)))]).astype(int))
            hist = retention_histogram(r.half_life)
            ret_layers.append(
                {
                    "max_lag": K,
                    "lags": lags.tolist(),
                    "curves": [_nums(r.curve[lags, u], 4) for u in range(H)],
                    "half_life": _nums(r.half_life, 3),
                    "hist": {"edges": _nums(hist.edges, 3), "counts": hist.counts.tolist(), "never": hist.never},
                }
            )
            half = r.half_life
        else:
            ret_layers.append(None)
            half = np.full(H, np.inf)
        sat_unit = (sat.low_per_unit[:, k] + sat.high_per_unit[:, k]).mean(axis=0)
        scores.append({"half_life": _nums(half, 3), "saturation": _nums(sat_unit, 4)})

    preds = []
    for p in predictions or []:
        step = int(p["step"])
        if not 0 <= step < T:
            raise InputError(f"build_page: prediction step {step} outside the {T} steps")
        probs = p.get("probs") or {}
        top = sorted(((str(lab), float(v)) for lab, v in dict(probs).items()), key=lambda x: -x[1])[:8]
        preds.append(
            {
                "step": step,
                "pred": str(p.get("pred", "")),
                "target": str(p.get("target", "")),
                "probs": [[display_token(lab), _num(v, 4)] for lab, v in top],
            }
        )

    nexts: list[Any] | None = None
    if next_probs is not None:
        if len(next_probs) > T:
            raise InputError(f"build_page: next_probs has {len(next_probs)} steps, the trace {T}")
        nexts = []
        for entry in next_probs:
            if entry is None:
                nexts.append(None)
                continue
            pairs = list(entry.items()) if isinstance(entry, Mapping) else list(entry)
            pairs = sorted(((str(c), float(v)) for c, v in pairs), key=lambda x: -x[1])[:5]
            nexts.append([[display_token(c), _num(v, 4)] for c, v in pairs])

    sig = None
    if signal is not None:
        sv = np.asarray(signal, dtype=np.float64).ravel()
        if sv.shape != (T,):
            raise InputError(f"build_page: signal must have one value per step ({T}), got {sv.shape}")
        sig = {"name": str(signal_name), "values": _nums(sv, 5)}

    start = None  # the unit the page opens on; None: the one whose cell state varies most
    if report is None:
        report_text = None
    elif isinstance(report, MysteryReport):
        report_text = report.summary()
        # open on the unit the report names first (the best carrier, or the best candidate)
        first = report.units[0] if report.units else int(np.argmax(report.eta2)) if report.eta2.size else None
        row = report.layer or 0
        if first is not None and 0 <= row < len(labels) and 0 <= first < H:
            start = {"layer": int(row), "unit": int(first)}
    else:
        report_text = str(report)

    word_mode = any(len(t) != 1 for t in tokens)
    return {
        "version": 1,
        "title": str(title),
        "T": T,
        "H": H,
        "P": P,
        "layers": [str(x) for x in labels],
        "word_mode": word_mode,
        "tokens": [display_token(t) for t in tokens],
        "breaks": [k for k, t in enumerate(tokens) if "\n" in t],
        "quantities": quantities,
        "retention": ret_layers,
        "scores": scores,
        "saturation": {
            "gates": list(sat.gates),
            "low": sat.low.round(4).tolist(),
            "high": sat.high.round(4).tolist(),
            "thresholds": [sat.low_threshold, sat.high_threshold],
        },
        "predictions": preds,
        "next_probs": nexts,
        "signal": sig,
        "report": report_text,
        "start": start,
    }


def _json_for_script(obj: Any) -> str:
    """JSON that is inert inside an HTML <script> block: ASCII only, and no <, > or & at all."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("lstmkit.explore").joinpath(name).read_text(encoding="utf-8")


def build_page(
    trace: Any,
    tokens: Sequence[str],
    *,
    title: str = "lstmkit explorer",
    layer_labels: Sequence[str] | None = None,
    predictions: Sequence[Mapping[str, Any]] | None = None,
    next_probs: Sequence[Mapping[str, float] | Sequence[tuple[str, float]] | None] | None = None,
    report: MysteryReport | str | None = None,
    signal: Sequence[float] | None = None,
    signal_name: str = "signal",
) -> str:
    """The explorer page for one sequence, as a self-contained HTML string.

    ``trace``: the core's Trace, a mapping or an object with i, f, g, o, c, h, each (L*D, T, H) for
    one sequence (h may be (L*D, T, P) with a projection; (T, H) is one layer). ``tokens``: T display
    strings (characters or words; any string is shown visibly, see :func:`display_token`).
    ``layer_labels``: one per layer×direction row (default "layer k"). ``predictions``: for
    classification, a list of ``{"step", "pred", "target", "probs": {label: p}}`` shown at those steps.
    ``next_probs``: for language models, per step a ``{char: p}`` mapping (or pairs) of the likeliest
    next characters, shown on hover. ``report``: the :class:`MysteryReport` (its summary is shown) or text.
    ``signal``: an optional per-step number to sort units by their correlation with.
    """
    data = page_data(
        trace,
        tokens,
        title=title,
        layer_labels=layer_labels,
        predictions=predictions,
        next_probs=next_probs,
        report=report,
        signal=signal,
        signal_name=signal_name,
    )
    script = _asset("page.js")
    if "</script" in script.lower():  # would end the inline script early
        raise RuntimeError("page.js must not contain '</script'")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    )
    parts = {
        "TITLE": html.escape(str(title), quote=True),
        "CSP": html.escape(csp, quote=True),
        "CSS": _asset("page.css"),
        "DATA": _json_for_script(data),
        "JS": script,
    }
    template = _asset("page.html")
    # One pass, so that text coming from one part can never be read as another placeholder.
    return re.sub(r"@@(TITLE|CSP|CSS|DATA|JS)@@", lambda m: parts[m.group(1)], template)


def write_page(out_dir: str | os.PathLike[str], trace: Any, tokens: Sequence[str], **kwargs: Any) -> Path:
    """Build the page (:func:`build_page` keywords) and write ``out_dir/index.html`` atomically
    (:mod:`lstmkit.atomic`). Returns the path."""
    target = Path(out_dir) / "index.html"
    atomic.write_text(target, build_page(trace, tokens, **kwargs))
    return target
