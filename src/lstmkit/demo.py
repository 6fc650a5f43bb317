"""The main job (`make demo`, `lstmkit demo`): the mystery, learned from scratch.

An LSTM and a vanilla RNN get the same CPU time on the mystery task (T = 100; each story names
3 of 4 suspects, clears 2 of them with an alibi, and asks who did it at the end). The LSTM has to
note each clue (input gate), hold the suspects (cell), drop the one an alibi clears (forget gate)
and answer at the question (output gate). The demo prints both test accuracies against chance and
leaves run folders (checkpoint, metrics, plots, and the explorer page with its mystery report).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Literal

from .errors import InputError
from .outdir import check_out_folder
from .train import TrainConfig, TrainResult, train

MYSTERY = {"T": 100, "suspects": 4, "red_herrings": 2}


def _cfg(arch: Literal["lstm", "gru", "rnn"], budget: float) -> TrainConfig:
    return TrainConfig(
        task="mystery",
        task_params=dict(MYSTERY),
        seed=0,
        arch=arch,
        hidden_size=64,
        batch_size=32,
        lr=3e-3,
        max_steps=100_000,
        max_time=budget,
        eval_every=100,
        patience=0,
        target=0.999 if arch == "lstm" else None,
        log_every=50,
    )


def run_demo(
    out: str | Path = "runs/demo", budget: float = 60.0, progress: bool = True, force: bool = False
) -> dict[str, Any]:
    out = Path(out)
    if budget <= 0:
        raise InputError(f"--budget must be a positive number of seconds, got {budget}")
    check_out_folder(out, "demo", force=force, own=("lstm", "rnn"), runs_ok=False)
    for arch in ("lstm", "rnn"):
        old = out / arch
        if old.exists():
            cfg = old / "config.json"
            if not cfg.exists() or '"mystery"' not in cfg.read_text(encoding="utf-8", errors="replace"):
                raise InputError(f"{old} exists and is not a demo run; remove it or choose another --out")
            shutil.rmtree(old)  # a previous demo's run: the demo starts from scratch each time

    def say(text: str) -> None:
        print(text, flush=True)

    say("lstmkit demo: who did it? — the mystery task, T = 100 tokens, 4 suspects, 2 red herrings per story")
    say(f"Each model trains for at most {budget:.0f} s of CPU time. First the LSTM:")
    results: dict[str, TrainResult] = {}
    results["lstm"] = train(_cfg("lstm", budget), out / "lstm", progress=progress)
    say("\nNow a vanilla RNN (torch.nn.RNN, tanh) with the same budget:")
    results["rnn"] = train(_cfg("rnn", budget), out / "rnn", progress=progress)
    chance = results["lstm"].baseline["accuracy"]
    say("\n=== who did it? test accuracy (2000 unseen stories) ===")
    say(f"{'model':<28} {'accuracy':>9} {'steps':>7} {'seconds':>8}")
    for arch, label in (("lstm", "LSTM (lstmkit, 64 units)"), ("rnn", "vanilla RNN (64 units)")):
        r = results[arch]
        say(f"{label:<28} {r.test['accuracy']:>9.2%} {r.steps:>7} {r.elapsed:>8.0f}")
    say(f"{'chance (guess a clued suspect)':<28} {chance:>9.2%}")
    summary: dict[str, Any] = {"results": results}
    from .explore import explore_run

    if True:
        report = explore_run(out / "lstm", progress=False)
        summary["explore"] = report
        page = report.get("page") if isinstance(report, dict) else None
        if page:
            say(f"\nThe gate explorer: {page}")
        text = report.get("summary") if isinstance(report, dict) else None
        if text:
            say("\nWhat the LSTM's memory does (the mystery report):")
            say(text)
    say(f"\nRun folders: {out / 'lstm'} and {out / 'rnn'} (config, model.safetensors, metrics.jsonl, plots/)")
    sys.stdout.flush()
    return summary
