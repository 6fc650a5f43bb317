"""`lstmkit explore RUN`: trace a trained run on some input and build its explorer page.

    from lstmkit.explore.run import explore_run
    info = explore_run("runs/demo/lstm")                 # a test sequence of the run's task
    info = explore_run("runs/shakespeare", input_text="To be, or not to be")
    info["page"], info["summary"]                         # the page's path, the mystery report's text

Input characters (or words) outside the model's vocabulary are fed as a stand-in token and shown
marked with "⚠" on the page; they never stop the page from being built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.forecast import ForecastTask
from ..errors import InputError
from ..outdir import check_out_folder
from ..tokens import UNKNOWN_MARK, Encoded, encode_text, split_text, unknown_note
from ..train import RunError, load_run
from .analysis import mystery_report
from .page import trace_for_sequence, write_page

MAX_STEPS = 50_000
REPORT_STORIES = 500


def _tokenise(run: Any, text: str) -> Encoded:
    """Free text as ids of the run's vocabulary, unknown items fed as a stand-in and marked
    (:mod:`lstmkit.tokens`, the rule ``sample`` follows too)."""
    vocab: list[str] = run.vocab
    items = split_text(vocab, text)
    if not items:
        raise InputError("the input is empty; give some text with --input or --input-file, or use --sample N")
    if len(items) > MAX_STEPS:
        raise InputError(f"the input has {len(items)} steps; the explorer takes at most {MAX_STEPS}")
    return encode_text(vocab, text)


@torch.no_grad()
def explore_run(
    run_dir: str | Path,
    *,
    input_text: str | None = None,
    input_file: str | Path | None = None,
    sample: int | None = None,
    out: str | Path | None = None,
    png: bool = False,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Build ``explore/index.html`` (or ``out/index.html``) for a run; returns
    ``{"page": Path, "pngs": [...], "summary": str | None, "report": MysteryReport | None,
    "unknown": int, "unknown_note": str}``. ``out`` must be new, empty or an earlier explorer folder (index.html, png/);
    ``force`` writes into a folder that holds other files."""
    out_dir = Path(out) if out is not None else Path(run_dir) / "explore"
    check_out_folder(out_dir, "explore", force=force, own=("index.html", "png"), runs_ok=False)
    run = load_run(run_dir)
    if run.model_config.arch != "lstm":
        raise InputError(f"{run.path}: the explorer shows LSTM gates; this run is a {run.model_config.arch}")
    given = sum(v is not None for v in (input_text, input_file, sample))
    if given > 1:
        raise InputError("give only one of --input, --input-file and --sample")
    if input_file is not None:
        p = Path(input_file)
        try:
            input_text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(f"{p}: no such file") from None
        except UnicodeDecodeError:
            raise InputError(f"{p}: not UTF-8 text; convert it to UTF-8") from None
        except (IsADirectoryError, PermissionError) as e:
            raise InputError(f"{p}: cannot read ({e.strerror})") from None
    model = run.model.eval()
    task_name = run.config["task"]["name"]
    unknown = 0
    note = ""
    predictions = None
    next_probs = None
    report = None
    lengths = None
    if input_text is not None:
        if run.model_config.input_type != "tokens" or not run.vocab:
            raise InputError(f"{run.path}: the {task_name} task takes numbers, not text; use --sample N")
        enc = _tokenise(run, input_text)
        tokens, unknown = enc.shown, enc.count
        note = unknown_note(enc, ", marked " + UNKNOWN_MARK + " on the page")
        x = torch.tensor([enc.ids])
    else:
        task = run.task
        batches = task.eval_batches("test", 1024)
        n = sum(len(b) for b in batches)
        k = 0 if sample is None else sample
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
            raise InputError(f"--sample must be an index into the {n} test sequences (0..{n - 1}), got {sample!r}")
        b = next(bt for bt in _rows(batches, k))
        x = b.x
        lengths = b.lengths
        T = int(lengths[0]) if lengths is not None else x.shape[1]
        x = x[:, :T]
        tokens = task.render(x[0])
        out_all = model(x)
        names = task.class_names()
        if isinstance(task, ForecastTask):
            tokens, predictions = _forecast_view(task, b, out_all)
        if run.model_config.target == "class_last":
            probs = torch.softmax(out_all[0], -1)
            top = torch.topk(probs, min(5, probs.numel()))

            def label(i: int) -> str:
                return names[i] if names else str(i)

            target = int(b.y[0]) if b.y.dim() == 1 else None
            predictions = [
                {
                    "step": T - 1,
                    "pred": label(int(probs.argmax())),
                    "target": label(target) if target is not None else "",
                    "probs": {label(int(i)): float(p) for p, i in zip(top.values, top.indices)},
                }
            ]
        if task_name == "mystery":
            report = _mystery(model, task)
    _, trace = model(x, return_gates=True)
    if run.model_config.target == "class_steps" and run.vocab:
        logits = model(x)[0]
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs, min(5, probs.shape[-1]), dim=-1)
        vocab = run.vocab
        if run.model_config.output_size == len(vocab):
            next_probs = [
                {vocab[int(i)]: float(p) for p, i in zip(top.values[t], top.indices[t])} for t in range(x.shape[1])
            ]
    tr = {k: getattr(trace, k).numpy() for k in ("i", "f", "g", "o", "c", "h")}
    page_trace = trace_for_sequence(tr, 0)
    D = 2 if model.rnn.bidirectional else 1  # type: ignore[union-attr]
    labels = [f"layer {li}" + (" reverse" if d else "") for li in range(model.cfg.num_layers) for d in range(D)]
    page = write_page(
        out_dir,
        page_trace,
        tokens,
        title=f"lstmkit explorer — {run.path.name} ({task_name})",
        layer_labels=labels,
        predictions=predictions,
        next_probs=next_probs,
        report=report,
    )
    pngs: list[Path] = []
    if png:
        from .pngs import write_pngs

        unit = layer = None  # the report's first unit, as the page opens on it (else write_pngs picks)
        if report is not None:
            layer = report.layer or 0
            unit = report.units[0] if report.units else int(report.eta2.argmax())
        pngs = write_pngs(out_dir / "png", page_trace, tokens, layer_labels=labels, unit=unit, layer=layer or 0)
    return {
        "page": page,
        "pngs": pngs,
        "summary": report.summary() if report is not None else None,
        "report": report,
        "unknown": unknown,
        "unknown_note": note,
    }


def _rows(batches: list[Any], k: int) -> Any:
    for b in batches:
        if k < len(b):
            yield b.rows(k, k + 1)
            return
        k -= len(b)


def _mystery(model: Any, task: Any) -> Any:
    """The mystery report over the first test stories."""
    batch = task.eval_batches("test", REPORT_STORIES)[0]
    _, trace = model(batch.x, return_gates=True)
    arrays = {k: getattr(trace, k).numpy() for k in ("i", "f", "o", "c")}
    tokens = [task.render(batch.x[b]) for b in range(len(batch))]
    names = task.class_names()
    culprits = [names[int(c)] for c in batch.y] if names else None
    try:
        return mystery_report(arrays, tokens, culprits)
    except InputError as e:  # stories the report cannot read are said, not a crash (anything else is a bug)
        raise RunError(f"the mystery report could not be made: {e}") from None


def _forecast_view(task: ForecastTask, b: Any, out: torch.Tensor) -> tuple[list[str], list[dict[str, Any]]]:
    """A forecasting window shown in the series' own units: the observed values, then the median
    forecast of each future step ("→ 486"); the predictions panel lists each forecast step with its
    interval and the actual value."""
    with torch.no_grad():
        vals = task.to_values(out.detach().float().cpu(), b)[0]  # (h, Q)
    observed = task.window_values(b)[0]
    true = b.meta["true"][0].numpy()
    lo, hi = task.quantiles[0], task.quantiles[-1]
    width = round(100 * (hi - lo))
    tokens = [f"{v:.4g}" for v in observed] + [f"→{v:.4g}" for v in vals[:, task.median_index]]
    preds = [
        {
            "step": task.window + k,
            "pred": f"{vals[k, task.median_index]:.4g} ({width}%: {vals[k, 0]:.4g} to {vals[k, -1]:.4g})"
            f" · actual {true[k]:.4g}",
            "target": "",
            "probs": {},
        }
        for k in range(task.horizon)
    ]
    return tokens, preds
