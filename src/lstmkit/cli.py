"""The command line: argument parsing only; every command calls a library function.

(About 660 lines: one parser per command with its flags and help texts, which read best side by side;
the work behind each command lives in the library.)

Exit status: 0 success; 2 bad input or usage, that is an :class:`~lstmkit.errors.InputError` or a
missing or unreadable file (one line on stderr saying what and how to fix it; the traceback only with
--debug); 1 only for a bug: any other exception, printed with its traceback and a line saying so.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .errors import InputError

# task parameters: CLI flag dest -> the task's parameter name
TASK_FLAGS = {
    "length": "T",
    "form": "form",
    "variant": "variant",
    "suspects": "suspects",
    "red_herrings": "red_herrings",
    "filler_words": "filler_words",
    "n_val": "n_val",
    "n_test": "n_test",
    "n_train": "n_train",
    "text_file": "text_file",
    "seq_len": "seq_len",
    "csv": "csv",
    "target_column": "target",
    "features": "features",
    "window": "window",
    "horizon": "horizon",
    "season": "season",
    "delimiter": "delimiter",
    "date": "date",
    "id_column": "id",
    "future_features": "future_features",
    "calendar": "calendar",
    "fill": "fill",
    "backtest": "backtest",
    "step": "step",
    "quantiles": "quantiles",
    "scaling": "scaling",
    "reference": "reference",
}
TRAIN_FLAGS = (
    "seed",
    "stateful",
    "arch",
    "hidden_size",
    "num_layers",
    "embedding_size",
    "dropout",
    "tie_weights",
    "proj_size",
    "batch_size",
    "lr",
    "weight_decay",
    "clip",
    "clip_mode",
    "schedule",
    "warmup",
    "ema",
    "init_from",
    "max_steps",
    "max_time",
    "eval_every",
    "patience",
    "log_every",
)


class UsageError(InputError):
    """Bad input from the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2 (argparse's own code)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- commands


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    print(run(quick=args.quick), flush=True)
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from .core.variants import VARIANTS as VARIANT_FLAGS
    from .train import TrainConfig

    task_params = {TASK_FLAGS[k]: getattr(args, k) for k in TASK_FLAGS if getattr(args, k, None) is not None}
    for name in ("features", "future_features"):
        if name in task_params:
            task_params[name] = [c.strip() for c in task_params[name].split(",") if c.strip()]
    for item in args.task_param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--task-param takes KEY=VALUE, got {item!r}")
        task_params[key] = _parse_value(value)
    variants = {k: getattr(args, k) for k in VARIANT_FLAGS if getattr(args, k) not in (None, False)}
    kw = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    if args.target_metric is not None:
        kw["target"] = args.target_metric
    return TrainConfig.for_task(args.task, task_params=task_params, variants=variants, **kw)


def _parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


# what --resume takes besides RUN (the run keeps everything else of its config)
RESUME_OPTIONS = ("max_steps", "max_time", "quiet")


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import resume, train
    from .train.checkpoint import last_checkpoint_step

    if args.resume:
        _check_resume_options(args)
        out = args.resume
    elif args.task is None:
        raise UsageError("train needs a TASK (adding, copy, temporal-order, reber, mystery, text, csv) or --resume RUN")
    else:
        cfg = _train_config(args)
        out = args.out or f"runs/{args.task}"
    try:
        if args.resume:
            res = resume(
                args.resume, max_steps=args.max_steps, max_time=args.max_time, task=args.task, progress=not args.quiet
            )
        else:
            res = train(cfg, out, progress=not args.quiet, force=args.force)
    except KeyboardInterrupt:
        from pathlib import Path

        step = last_checkpoint_step(Path(out))
        # a new run's budget is in its config.json; a budget given to --resume is not saved: repeat it
        given = ("max_steps", "max_time") if args.resume else ()
        budget = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in given if getattr(args, k) is not None]
        if step:
            again = " ".join(["lstmkit train --resume", shlex.quote(str(out)), *budget])
            print(f"\ninterrupted: the checkpoint of step {step} is kept in {out}; continue with:\n  {again}",
                  file=sys.stderr)  # fmt: skip
        else:
            again = shlex.join(["lstmkit", *args.argv])
            print(f"\ninterrupted before the first checkpoint (nothing to resume); start again with:\n  {again}",
                  file=sys.stderr)  # fmt: skip
        return 130
    print(_result_text(res))
    return 0


def _check_resume_options(args: argparse.Namespace) -> None:
    """--resume continues a run with its own config: any option that would change it is an error."""
    from .core.variants import VARIANTS as VARIANT_FLAGS

    given = [
        k
        for k in (*TRAIN_FLAGS, *TASK_FLAGS, *VARIANT_FLAGS, "out", "force", "task_param", "target_metric")
        if k not in RESUME_OPTIONS and getattr(args, k, None) not in (None, False)
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(
            f"{flag} does not apply with --resume (the run keeps its config); with --resume give only "
            "--max-steps, --max-time (the new budget, counting the whole run) or --quiet"
        )


def _result_text(res: Any) -> str:
    def fmt(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in d.items())

    return (
        f"run folder: {res.run_dir}\nsteps: {res.steps} (best at {res.best_step}; {res.elapsed:.0f} s of training)\n"
        f"validation: {fmt(res.val)}\ntest: {fmt(res.test)}\nbaseline: {fmt(res.baseline)}\n"
        f"{res.stopped_text or 'stopped: ' + res.stopped_because}"
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import load_run

    run = load_run(args.run)
    metrics = run.evaluate(args.split)
    n = sum(len(b) for b in run.task.eval_batches(args.split, 256))  # cached by evaluate
    print(f"split: {args.split} ({'validation' if args.split == 'val' else 'test'} set, {n} sequences)")
    for k, v in metrics.items():
        print(f"{k} {v:.6g}")
    if run.model_config.target == "regress_steps" and not args.metrics_only:
        from .forecasting import backtest, format_table

        print()
        print(format_table(backtest(run, args.split, arima=args.arima)))
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    from .forecasting import write_forecast
    from .train import load_run

    run = load_run(args.run)
    csv_path, png_path = write_forecast(run, args.out, horizon=args.horizon, csv=args.csv, png=not args.no_png)
    print(f"forecast: {csv_path}" + (f"\nplot: {png_path}" if png_path else ""))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .tokens import encode_text, unknown_note
    from .train import load_run

    run = load_run(args.run)
    text = run.sample(args.prompt, args.length, args.temperature, args.top_k, args.seed)
    note = unknown_note(encode_text(run.vocab or [], args.prompt)) if run.vocab else ""
    if note:
        print(note, file=sys.stderr)
    print(text)
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    from .explore import explore_run

    info = explore_run(
        args.run,
        input_text=args.input,
        input_file=args.input_file,
        sample=args.sample,
        out=args.out,
        png=args.png,
        force=args.force,
    )
    print(f"explorer page: {info['page']}")
    if info["unknown_note"]:
        print(info["unknown_note"])
    for p in info["pngs"]:
        print(f"figure: {p}")
    if info["summary"]:
        print(info["summary"])
    if args.serve:
        from .explore import serve

        serve(info["page"].parent, port=args.port, block=True, verbose=False)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, budget=args.budget, progress=not args.quiet, force=args.force)
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from .compress import compare_lines, compress

    opts: dict[str, Any] = {}
    names = (
        "bits activations sparsity units score rank energy steps lr batch_size seed hidden_size num_layers alpha "
        "temperature"
    )
    for name in names.split():
        v = getattr(args, name, None)
        if v is not None:
            opts[name] = v
    res = compress(args.run, args.method, args.out, force=args.force, **opts)
    print(f"compressed run: {args.out} ({args.method})")
    for line in compare_lines(res):
        print(line)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx, export_runtime

    if args.format == "onnx":
        from .export.onnx_int8 import onnx_weight_summary

        if args.bits == 4:
            raise UsageError("--format onnx stores weights as int8 (--bits 8) or float32; int4 is for --format runtime")
        path = export_onnx(args.run, args.out, bits=args.bits)
        print(f"exported ({args.format}): {path}")
        print(onnx_weight_summary(path))
        return 0
    path = export_runtime(args.run, args.out, bits=args.bits, force=args.force)
    print(f"exported ({args.format}): {path}")
    return 0


# ----------------------------------------------------------------------------- parser


def _add_train_options(p: argparse.ArgumentParser, task: str | None = None) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", help="run folder to create (default runs/TASK): new, empty or a run")
    g.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    g.add_argument(
        "--resume",
        metavar="RUN",
        help="continue RUN from its last checkpoint with its own config (no TASK needed); "
        "--max-steps / --max-time give it a new budget, counting the whole run",
    )
    g.add_argument("--seed", type=int, help="seed for weights, data and training order (default 0)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=("lstm", "gru", "rnn"), help="recurrent core (default lstm)")
    g.add_argument("--hidden-size", type=int, help="hidden units (default 64)")
    g.add_argument("--num-layers", type=int, help="layers (default 1)")
    g.add_argument("--embedding-size", type=int, help="token embedding size (default 32)")
    g.add_argument("--dropout", type=float, help="dropout between layers and before the head")
    g.add_argument("--tie-weights", action="store_true", default=None, help="LM head shares the embedding")
    g.add_argument("--proj-size", type=int, help="LSTM projection size")
    g = p.add_argument_group("LSTM variants")
    g.add_argument("--forget-bias", type=float, help="initial forget-gate bias (default 1)")
    g.add_argument(
        "--chrono-init",
        type=float,
        metavar="T_MAX",
        help="chrono initialisation (Tallec & Ollivier 2018): forget-gate biases log U(1, T_MAX-1), input-gate "
        "biases their negatives; replaces the forget-gate bias (default: off)",
    )
    g.add_argument("--peephole", action="store_true", help="peephole connections (Gers & Schmidhuber 2000)")
    g.add_argument("--layer-norm", action="store_true", help="layer-normalised LSTM (Ba et al. 2016)")
    g.add_argument("--coupled", action="store_true", help="coupled input and forget gates, f = 1 - i")
    g.add_argument("--zoneout", type=float, help="zoneout rate on h and c (Krueger et al. 2016)")
    g.add_argument("--weight-drop", type=float, help="DropConnect rate on W_hh (Merity et al. 2017)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help="sequences per step (default 32)")
    g.add_argument("--lr", type=float, help="AdamW learning rate (default 2e-3)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.01)")
    g.add_argument(
        "--clip", type=float, help="gradient clip: the global norm, or each value with --clip-mode value (default 1)"
    )
    g.add_argument(
        "--clip-mode", choices=("norm", "value"), help="clip the gradient's global norm or each of its values"
    )
    g.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        help="learning rate: constant, or cosine down to lr/20 over the step or time budget",
    )
    g.add_argument("--warmup", type=int, help="linear warm-up steps")
    g.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="validate, save and test a moving average of the weights (decay per step, e.g. 0.99; 0 = off)",
    )
    g.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from RUN's weights (same model; e.g. a curriculum: train at a short length, then longer)",
    )
    g.add_argument(
        "--max-steps", type=int, help="step budget; with --max-time too, whichever ends first (default 2000 if neither)"
    )
    g.add_argument("--max-time", type=float, help="time budget in seconds of training; alone, no step limit")
    g.add_argument("--eval-every", type=int, help="steps between validations and checkpoints (default 100)")
    g.add_argument("--patience", type=int, help="stop after this many validations without improvement (0 = never)")
    g.add_argument("--target-metric", type=float, help="stop once the validation main metric reaches this value")
    g.add_argument("--log-every", type=int, help="steps between logged training losses")
    g = p.add_argument_group("task data")
    g.add_argument("--length", type=int, help="sequence length T (adding, copy, mystery)")
    g.add_argument("--form", help="adding: modern or 1997")
    g.add_argument("--variant", help="temporal-order: 6a or 6b")
    g.add_argument("--suspects", type=int, help="mystery: the pool of suspect names (classes)")
    g.add_argument("--red-herrings", type=int, help="mystery: suspects cleared by an alibi in each story")
    g.add_argument("--filler-words", type=int, help="mystery: size of the filler vocabulary")
    g.add_argument("--n-val", type=int, help="validation sequences (synthetic tasks)")
    g.add_argument("--n-test", type=int, help="test sequences (synthetic tasks)")
    g.add_argument("--n-train", type=int, help="reber: a fixed training set of this many strings")
    g.add_argument("--text-file", help="text: a UTF-8 text file (default: Shakespeare's plays)")
    g.add_argument("--seq-len", type=int, help="text: characters per training sequence")
    g.add_argument(
        "--stateful",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="text: truncated BPTT (text's default): each batch row reads its own stretch of the training text "
        "in consecutive windows, the state carried (detached) from one to the next; validation also reports "
        "the state carried through the whole split (nats_carried); --no-stateful: independent random windows",
    )
    g.add_argument("--csv", help="csv: the CSV file (long format: one row per series and date)")
    g.add_argument("--target", dest="target_column", help="csv: the column to forecast")
    g.add_argument("--date", help="csv: the date column (default: none, rows in time order)")
    g.add_argument("--id", dest="id_column", help="csv: the series column, for many series (one global model)")
    g.add_argument("--features", help="csv: past covariates, comma-separated")
    g.add_argument("--future-features", help="csv: covariates known for the forecast period, comma-separated")
    g.add_argument("--calendar", action="store_true", default=None, help="csv: add calendar features from the dates")
    g.add_argument(
        "--fill", choices=("interpolate", "ffill", "zero", "error"), help="csv: missing values (default interpolate)"
    )
    g.add_argument("--window", type=int, help="csv: past steps the model sees (default: from the season and length)")
    g.add_argument("--horizon", type=int, help="csv: future steps to forecast (default: one season, or 8)")
    g.add_argument("--season", type=int, help="csv: the season (default: detected)")
    g.add_argument("--backtest", type=int, help="csv: test origins at the end of each series (default up to 12)")
    g.add_argument("--step", type=int, help="csv: steps between backtest origins (default 1)")
    g.add_argument("--quantiles", help="csv: forecast quantiles, comma-separated (default 0.1,0.5,0.9)")
    g.add_argument("--scaling", choices=("last", "revin", "mean"), help="csv: per-window scaling (default mean)")
    g.add_argument(
        "--reference",
        choices=("auto", "seasonal-mean", "seasonal-naive", "ets", "ets+seasonal-mean"),
        help="csv: the forecast the model corrects: seasonal-mean (the last season's mean plus the season's "
        "profile averaged over up to 3 seasons), ets (AutoETS fitted on each series' training part), "
        "ets+seasonal-mean (their average), seasonal-naive; default auto: ets+seasonal-mean for up to 50 "
        "series, seasonal-mean for more",
    )
    g.add_argument("--delimiter", help="csv: field delimiter (default ,)")
    g.add_argument("--task-param", action="append", metavar="KEY=VALUE", help="any other task parameter")
    _document_defaults(p, task)


# what a task parameter whose default is None means (its value comes from the data or is absent)
NONE_DEFAULTS = {
    "text_file": "Shakespeare's plays",
    "csv": "required",
    "target": "required",
    "date": "none, rows in time order",
    "id": "none, one series",
    "features": "none",
    "future_features": "none",
    "window": "from the detected season and the series' length: 2 seasons or 2 horizons, at least 24",
    "horizon": "one detected season, or 8, at most a fifth of the shortest series",
    "season": "detected from the data",
    "backtest": "12 origins, fewer for short series",
    "quantiles": "0.1,0.5,0.9",
    "n_train": "fresh strings in every batch",
}
# flags whose help another part writes (the budgets) or that have no default to show
_NO_DEFAULT_SHOWN = {"max_steps", "max_time", "target_metric", "resume", "out", "quiet", "force", "task_param"}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def _document_defaults(p: argparse.ArgumentParser, task: str | None) -> None:
    """Write each option's default into its help: for ``task`` when the command line names one
    (``lstmkit train text --help``), else the value of each task where they differ. Task-data flags
    of other tasks are hidden when a task is named."""
    import re

    from .data.registry import TASK_NAMES, task_params
    from .train.config import train_defaults

    tasks = [task] if task else list(TASK_NAMES)
    train = {t: train_defaults(t) for t in tasks}
    params = {t: task_params(t) for t in tasks}

    def value(t: str, dest: str) -> tuple[bool, str]:
        """(applies to task t, the default as text)"""
        if dest in TASK_FLAGS:
            name = TASK_FLAGS[dest]
            if name not in params[t]:
                return False, ""
            v = params[t][name]
            return True, NONE_DEFAULTS.get(name, "none") if v is None else _fmt(v)
        if dest in VARIANT_DEFAULTS:
            v = train[t]["variants"].get(dest, VARIANT_DEFAULTS[dest])
            return True, _fmt(v)
        if dest in train[t]:
            v = train[t][dest]
            return True, "none" if v is None else _fmt(v)
        return False, ""

    for a in p._actions:
        if a.dest in _NO_DEFAULT_SHOWN or a.help in (None, argparse.SUPPRESS):
            continue
        known = {t: value(t, a.dest) for t in tasks}
        applies = {t: v for t, (ok, v) in known.items() if ok}
        if not applies:
            if task and a.dest in TASK_FLAGS:
                a.help = argparse.SUPPRESS  # another task's data flag
            continue
        if a.const is True and set(applies.values()) == {"off"}:
            continue  # a switch that is off unless given
        text = re.sub(r"\s*\(default[^)]*\)", "", str(a.help))
        vals = sorted(set(applies.values()), key=list(applies.values()).count, reverse=True)
        if len(vals) == 1:
            text += f" (default: {vals[0]})"
        else:  # the most common value, then the tasks that differ
            others = "; ".join(f"{t} {v}" for t, v in applies.items() if v != vals[0])
            text += f" (default: {vals[0]}; {others})"
        a.help = text.replace("%", "%%")


VARIANT_DEFAULTS: dict[str, Any] = {"forget_bias": 1.0}


def _task_named(argv: Sequence[str] | None) -> str | None:
    """The TASK of ``train TASK ...`` on the command line, for its --help (None when there is none)."""
    from .data.registry import TASK_NAMES

    argv = list(sys.argv[1:] if argv is None else argv)
    if "train" not in argv:
        return None
    for a in argv[argv.index("train") + 1 :]:
        if a.replace("_", "-") in TASK_NAMES:
            return a.replace("_", "-")
    return None


def build_parser(argv: Sequence[str] | None = ()) -> argparse.ArgumentParser:
    """The parser; ``argv`` (the command line, None: sys.argv) only picks the task whose defaults
    ``lstmkit train TASK --help`` shows."""
    p = _Parser(prog="lstmkit", description="The LSTM with first-class gates: train it, see inside it, ship it.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="the main job: train the mystery task (LSTM vs vanilla RNN) and report")
    d.add_argument("--out", default="runs/demo", help="folder for the runs (default runs/demo)")
    d.add_argument("--budget", type=float, default=60.0, help="training seconds per model (default 60)")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    d.set_defaults(func=_cmd_demo)

    task = _task_named(argv)
    t = sub.add_parser(
        "train",
        help="train a model on a task into a run folder",
        epilog=(
            f"The defaults shown are the {task} task's."
            if task
            else "Each task has its own defaults; lstmkit train TASK --help shows them."
        ),
    )
    t.add_argument("task", metavar="TASK", nargs="?", help="adding, copy, temporal-order, reber, mystery, text, csv")
    _add_train_options(t, task)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="print a run's metrics on the test (or validation) set")
    e.add_argument("run", metavar="RUN")
    e.add_argument("--split", default="test", choices=("val", "test"))
    e.add_argument("--arima", action="store_true", help="forecasting runs: add AutoARIMA to the backtest table")
    e.add_argument("--metrics-only", action="store_true", help="forecasting runs: no backtest table")
    e.set_defaults(func=_cmd_evaluate)

    f = sub.add_parser("forecast", help="forecast the future with a forecasting run: a CSV and a PNG")
    f.add_argument("run", metavar="RUN")
    f.add_argument("--out", required=True, help="the CSV to write (the plot goes beside it as .png)")
    f.add_argument("--horizon", type=int, help="steps ahead (default: the run's horizon)")
    f.add_argument("--csv", help="newer data to forecast from (the training file's columns)")
    f.add_argument("--no-png", action="store_true", help="no plot")
    f.set_defaults(func=_cmd_forecast)

    s = sub.add_parser("sample", help="generate text from a language-model run")
    s.add_argument("run", metavar="RUN")
    s.add_argument("--prompt", default="", help="text to continue")
    s.add_argument("--length", type=int, default=300, help="characters to generate")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more varied")
    s.add_argument("--top-k", type=int, help="sample among the k most likely characters")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_sample)

    x = sub.add_parser(
        "explore", help="build the gate explorer page of a run (what each unit notes, holds, forgets, recalls)"
    )
    x.add_argument("run", metavar="RUN")
    src = x.add_mutually_exclusive_group()
    src.add_argument("--input", help="text to run the model on (characters or words of its vocabulary)")
    src.add_argument("--input-file", help="a UTF-8 file to run the model on")
    src.add_argument("--sample", type=int, help="the N-th sequence of the task's test set (default 0)")
    x.add_argument("--out", help="folder for index.html (default RUN/explore): new, empty or an earlier page's")
    x.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    x.add_argument("--png", action="store_true", help="also write the main views as PNG figures")
    x.add_argument("--serve", action="store_true", help="serve the page at http://127.0.0.1:PORT/ until Ctrl-C")
    x.add_argument("--port", type=int, default=0, help="port for --serve (default: any free port)")
    x.set_defaults(func=_cmd_explore)

    c = sub.add_parser("compress", help="make a smaller run: quantize, prune, lowrank or distill")
    c.add_argument("run", metavar="RUN")
    c.add_argument("--method", required=True, choices=("quantize", "prune", "lowrank", "distill"))
    c.add_argument("--out", required=True, help="the new run folder (new or empty)")
    c.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    c.add_argument("--bits", type=int, choices=(8, 4), help="quantize: 8 (default) or 4 bits per weight")
    c.add_argument(
        "--activations",
        choices=("auto", "int8", "float"),
        help="quantize --bits 8: code the LSTM's matrix inputs to int8 too and run the int8 kernel (int8), keep "
        "them float (float), or decide on the validation split (auto, the default)",
    )
    c.add_argument("--sparsity", type=float, help="prune: fraction of weights set to 0, in [0, 1) (unstructured)")
    c.add_argument("--units", type=float, help="prune: fraction of hidden units removed, in [0, 1) (structured)")
    c.add_argument("--score", choices=("weights", "activity"), help="prune --units: importance score of a unit")
    c.add_argument("--rank", type=int, help="lowrank: rank of every factorised W_ih and W_hh")
    c.add_argument("--energy", type=float, help="lowrank: keep this fraction of each matrix's energy (0, 1]")
    c.add_argument("--hidden-size", type=int, help="distill: the student's hidden units (default: half)")
    c.add_argument("--num-layers", type=int, help="distill: the student's layers (default: the teacher's)")
    c.add_argument("--alpha", type=float, help="distill: weight of the soft targets (default 0.7)")
    c.add_argument("--temperature", type=float, help="distill: softmax temperature (default 2)")
    c.add_argument("--steps", type=int, help="fine-tuning (prune, lowrank) or training (distill) steps")
    c.add_argument("--lr", type=float, help="fine-tuning learning rate")
    c.add_argument("--batch-size", type=int, help="fine-tuning batch size (default: the run's)")
    c.add_argument("--seed", type=int, help="fine-tuning seed (default 0)")
    c.set_defaults(func=_cmd_compress)

    xp = sub.add_parser("export", help="export a run: ONNX (standard LSTM operator) or the NumPy runtime's bundle")
    xp.add_argument("run", metavar="RUN")
    xp.add_argument("--format", required=True, choices=("onnx", "runtime"))
    xp.add_argument("--out", required=True, help="the .onnx file, or the bundle folder for --format runtime")
    xp.add_argument(
        "--bits",
        type=int,
        choices=(8, 4),
        help="weights as int8 (onnx, runtime) or int4 (runtime) codes (default: a quantized run's own, else float)",
    )
    xp.add_argument("--force", action="store_true", help="runtime: write into --out even if it holds other files")
    xp.set_defaults(func=_cmd_export)

    b = sub.add_parser("bench", help="speed of lstmkit's paths against torch.nn.LSTM and the GEMM ceiling")
    b.add_argument("--quick", action="store_true", help="small shapes and few repetitions (a smoke run)")
    b.set_defaults(func=_cmd_bench)
    return p


# What a user can get wrong: exit 2 with one line. Everything else is a bug in lstmkit: exit 1.
USER_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed (for a message to rerun it)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .train import TrainingStopped

    try:
        return int(args.func(args))
    except (InputError, *USER_FILE_ERRORS, TrainingStopped) as e:
        if args.debug:
            raise
        print(f"lstmkit {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the last checkpoint is kept; continue with --resume)", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        traceback.print_exc()
        print(
            f"lstmkit {args.command}: internal error: {type(e).__name__}: {_one_line(e)}\n"
            "This is a bug in lstmkit, not in your input: please report it with the traceback above.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
