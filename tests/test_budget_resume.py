"""Training budgets and resume as people type them (issue 20 items 2 and 4): a time budget alone is
the budget, steps alone are, both: whichever ends first, and the last line says which stopped the
run; ``train --resume RUN`` needs no task, refuses another task, says a finished run is finished,
and an interrupted run names the whole command that continues it."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_mystery_args

from lstmkit.cli import main
from lstmkit.train import TrainConfig
from lstmkit.train.config import DEFAULT_STEPS

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _train(capsys: pytest.CaptureFixture[str], out: Path, *options: str) -> tuple[int, str, str]:
    rc = main(["train", "mystery", *tiny_mystery_args(), "--out", str(out), *options])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _state(run: Path) -> dict:
    return json.loads((run / "train_state.json").read_text())


def _result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


def test_budget_defaults_in_the_config() -> None:
    assert TrainConfig().max_steps == DEFAULT_STEPS == 2000 and TrainConfig().max_time is None
    assert TrainConfig(max_time=60).max_steps is None  # no hidden step limit under a time budget
    assert TrainConfig(max_steps=10).max_time is None


def test_cosine_schedule_under_a_time_budget_decays_with_the_time(tmp_path: Path) -> None:
    # a time budget alone: the learning rate follows lr * (0.05 + 0.95 * (1 + cos(pi * t / max_time)) / 2)
    # in the elapsed training time t, measured just before each step's schedule update; metrics.jsonl
    # logs each step's lr and its time just after, so they agree to within one step's duration
    from lstmkit.train import train

    cfg = TrainConfig(task="adding", task_params={"T": 20, "n_val": 16, "n_test": 16}, hidden_size=8, lr=1e-2,
                      max_time=3.0, schedule="cosine", eval_every=100_000, log_every=1)  # fmt: skip
    train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    assert len(train_recs) > 20
    for prev, r in zip(train_recs, train_recs[1:]):
        lo_t, hi_t = prev["time"], r["time"]  # the update came between the two logged times
        f = [1e-2 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t / 3.0)))) for t in (lo_t, hi_t)]
        assert min(f) - 1e-9 <= r["lr"] <= max(f) + 1e-9, (r, f)
    assert train_recs[-1]["lr"] < 0.06 * 1e-2 and train_recs[0]["lr"] > 0.99e-2


def test_max_time_alone_trains_for_its_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    rc, out, _ = _train(capsys, run, "--max-time", "5", "--eval-every", "1000", "--log-every", "1")
    assert rc == 0
    res = _result(run)
    assert res["stopped_because"] == "max_time"
    # the run stops at the first step that ends past 5 s of training (metrics.jsonl logs each step's
    # time), then validates once: over by less than that step and the validation
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in recs if r["split"] == "train"]
    assert len(times) == res["steps"] and times[-2] < 5.0 <= times[-1], times[-3:]
    assert res["train_seconds"] - 5.0 <= (times[-1] - times[-2]) + 0.25, (res["train_seconds"], times[-3:])
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert saved["max_steps"] is None and saved["max_time"] == 5
    assert out.rstrip().splitlines()[-1] == f"stopped by the time budget (--max-time 5 s) after {res['steps']} steps"


def test_steps_alone_and_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _train(capsys, tmp_path / "a", "--max-steps", "25")
    assert rc == 0 and _result(tmp_path / "a")["steps"] == 25
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["max_time"] is None
    assert re.fullmatch(
        r"stopped by the step budget \(--max-steps 25\) after \d+\.\d s of training", out.rstrip().splitlines()[-1]
    )
    # both: the steps end first
    rc, out, _ = _train(capsys, tmp_path / "b", "--max-steps", "15", "--max-time", "600")
    assert rc == 0 and _result(tmp_path / "b")["steps"] == 15
    assert out.rstrip().splitlines()[-1].startswith("stopped by the step budget (--max-steps 15)")
    # both: the time ends first
    rc, out, _ = _train(capsys, tmp_path / "c", "--max-steps", "1000000", "--max-time", "1.5", "--eval-every", "1000")
    res = _result(tmp_path / "c")
    assert rc == 0 and res["stopped_because"] == "max_time" and res["steps"] < 1_000_000
    assert out.rstrip().splitlines()[-1].startswith("stopped by the time budget (--max-time 1.5 s)")


def test_resume_without_the_task_and_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    assert _train(capsys, run, "--max-steps", "10", "--eval-every", "5")[0] == 0
    # no TASK: the run's own
    assert main(["train", "--resume", str(run), "--max-steps", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert _state(run)["step"] == 20 and _result(run)["steps"] == 20
    assert out.rstrip().splitlines()[-1].startswith("stopped by the step budget (--max-steps 20)")
    # the same task may be repeated
    assert main(["train", "mystery", "--resume", str(run), "--max-steps", "25", "--quiet"]) == 0
    capsys.readouterr()
    assert _state(run)["step"] == 25
    metrics = (run / "metrics.jsonl").read_text()
    # finished: resuming again trains nothing and says so (one line, exit 2)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run} is finished (stopped by the step budget (--max-steps 25)" in err
    assert f"lstmkit train --resume {run} --max-steps 50" in err
    # a budget that is not larger is refused the same way
    assert main(["train", "--resume", str(run), "--max-steps", "25", "--quiet"]) == 2
    assert "budget given is used up" in capsys.readouterr().err
    assert _state(run)["step"] == 25 and (run / "metrics.jsonl").read_text() == metrics
    # another task: an error naming both
    assert main(["train", "text", "--resume", str(run), "--max-steps", "40"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a run of the task 'mystery', not 'text'" in err
    # an option that would change the run's config
    assert main(["train", "--resume", str(run), "--hidden-size", "32", "--max-steps", "40"]) == 2
    assert "--hidden-size does not apply with --resume" in capsys.readouterr().err
    # neither a task nor --resume
    assert main(["train", "--max-steps", "5"]) == 2
    assert "train needs a TASK" in capsys.readouterr().err
    assert _state(run)["step"] == 25


def test_resuming_a_finished_time_run_trains_no_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: every resume of a run stopped by its time budget trained one more step."""
    run = tmp_path / "r"
    assert _train(capsys, run, "--max-time", "1", "--eval-every", "1000")[0] == 0
    steps = _state(run)["step"]
    for _ in range(2):
        assert main(["train", "--resume", str(run)]) == 2
        assert "is finished (stopped by the time budget (--max-time 1 s)" in capsys.readouterr().err
    assert _state(run)["step"] == steps
    # a larger budget trains on: --max-time alone replaces the budget (the whole run's seconds)
    budget = int(_state(run)["elapsed"]) + 2  # the first step's warm-up may have taken a second
    assert main(["train", "--resume", str(run), "--max-time", str(budget), "--quiet"]) == 0
    res = _result(run)
    assert res["steps"] > steps and res["stopped_because"] == "max_time" and res["train_seconds"] >= budget


def test_interrupt_names_the_command_that_continues(tmp_path: Path) -> None:
    run = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": SRC, "LSTMKIT_NO_KERNELS": "1"}
    cli = [sys.executable, "-m", "lstmkit.cli"]
    args = ["train", "mystery", *tiny_mystery_args(), "--max-steps", "150", "--eval-every", "5", "--out", str(run)]
    # a shell's background job (`make test &`) ignores SIGINT, and a child inherits that: give it the default
    proc = subprocess.Popen(
        [*cli, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (run / "train_state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    m = re.search(r"interrupted: the checkpoint of step \d+ is kept in .*; continue with:\n  (lstmkit train .*)\n", err)
    assert m, err[-2000:]
    command = m.group(1)
    assert command == f"lstmkit train --resume {run}"
    r = subprocess.run([*cli, *command.split()[1:], "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _result(run)["steps"] == 150 and _state(run)["step"] == 150


def test_interrupt_messages_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """Before the first checkpoint the message repeats the command as typed; after a resume with a new
    budget (not saved in the run) the command to continue repeats that budget."""
    import lstmkit.train as train_pkg

    def interrupted(*args: object, **kw: object) -> None:
        raise KeyboardInterrupt

    run = tmp_path / "my run"
    assert _train(capsys, run, "--max-steps", "5", "--eval-every", "5")[0] == 0
    monkeypatch.setattr(train_pkg, "train", interrupted)
    monkeypatch.setattr(train_pkg, "resume", interrupted)
    assert main(["train", "mystery", "--max-time", "30", "--out", str(tmp_path / "new")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint (nothing to resume); start again with:\n" in err
    assert err.rstrip().endswith(f"  lstmkit train mystery --max-time 30 --out {tmp_path / 'new'}")
    assert main(["train", "--resume", str(run), "--max-steps", "50"]) == 130
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"  lstmkit train --resume '{run}' --max-steps 50")  # quoted: a space in the path
    assert "the checkpoint of step 5 is kept" in err


def test_a_run_stopped_early_trains_on_with_a_larger_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped by patience, then given a larger budget: the evaluations without improvement count from
    0 again (before, the kept count stopped the run at its next evaluation, 5 steps on)."""
    run = tmp_path / "r"
    # a learning rate too small to change the validation score: the first evaluation is the best,
    # then 2 without improvement stop the run at step 15
    opts = ("--lr", "1e-12", "--eval-every", "5", "--patience", "2", "--max-steps", "1000")
    rc, _, _ = _train(capsys, run, *opts)
    assert rc == 0 and _result(run)["steps"] == 15
    assert _result(run)["stopped_because"].startswith("no improvement")
    assert main(["train", "--resume", str(run)]) == 2  # finished; the message says how to go on
    assert "counted from 0 again" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--max-steps", "2000"]) == 0
    capsys.readouterr()
    assert _result(run)["steps"] == 25  # two more evaluations without improvement (20, 25), not one
