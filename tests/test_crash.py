"""Crash safety: training is killed with SIGKILL at random moments (and inside checkpoint writes)
and resumed each time; the final weights equal an uninterrupted run's bit for bit, and the run
folder is readable after every kill."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_mystery_args
from safetensors.torch import load_file

from lstmkit.train import load_run
from lstmkit.train.checkpoint import load_checkpoint

EVAL_EVERY = 4  # steps between checkpoints
ARGS = ["mystery", *tiny_mystery_args(max_steps=600, eval_every=EVAL_EVERY, lr=0.005)]
ENV = {**os.environ, "LSTMKIT_NO_KERNELS": "1", "OMP_NUM_THREADS": "1"}
CRASH_AT_WRITE = str(Path(__file__).with_name("crash_at_write.py"))


def _cmd(out: Path, resume: bool, crash_at_write: int | None = None) -> list[str]:
    """The command line of a training process; with ``crash_at_write=N`` it kills itself inside its
    N-th file write (tests/crash_at_write.py)."""
    cli = ["-m", "lstmkit.cli"] if crash_at_write is None else [CRASH_AT_WRITE, str(crash_at_write)]
    if resume:
        return [sys.executable, *cli, "train", "mystery", "--resume", str(out), "--quiet"]
    return [sys.executable, *cli, "train", *ARGS, "--out", str(out)]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    info = json.loads((run / "train_state.json").read_text())
    return {k: v for k, v in load_file(str(run / info["checkpoint"])).items() if k.startswith("model.")}


def _step(run: Path) -> int:
    try:
        return int(json.loads((run / "train_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _check_readable(run: Path) -> None:
    if (run / "train_state.json").exists():
        info, tensors = load_checkpoint(run)  # checks the SHA-256 of the checkpoint it points at
        assert any(k.startswith("model.") for k in tensors)
    if (run / "model.safetensors").exists():
        load_run(run)


@pytest.mark.slow  # 14 training processes, each killed and resumed
def test_sigkill_at_random_moments_and_inside_writes(tmp_path):
    ref = tmp_path / "ref"
    r = subprocess.run(_cmd(ref, False), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    first = True
    # 6 kills at random moments (after the run has visibly progressed by 1-4 checkpoints, then a random
    # delay of up to a few steps: a delay of up to 0.3 s let a fast machine run to the end before the
    # last kills) and 6 inside a file write (after half the bytes, before the rename)
    plan: list[tuple[str, Any]] = [("time", (rng.randint(1, 4), rng.uniform(0.0, 0.01))) for _ in range(6)]
    plan += [("write", rng.randint(3, 25)) for _ in range(6)]
    for kind, when in plan:
        start = _step(run)
        cmd = _cmd(run, not first, when if kind == "write" else None)
        p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kind == "time":
            checkpoints, delay = when
            target = max(start, 0) + checkpoints * EVAL_EVERY
            deadline = time.monotonic() + 300
            while p.poll() is None and _step(run) < target and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(delay)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        else:
            p.wait(timeout=600)
        err = p.stderr.read().decode() if p.stderr else ""
        if p.returncode == -signal.SIGKILL:
            kills += 1
        elif p.returncode != 0 and not (p.returncode == 2 and "is finished" in err):  # a fast machine finished
            raise AssertionError(err or p.returncode)
        if (run / "train_state.json").exists():
            first = False
        else:
            # killed before the first checkpoint: start over (the folder has at most its config)
            import shutil

            shutil.rmtree(run, ignore_errors=True)
            first = True
        _check_readable(run) if run.exists() else None
        time.sleep(0.05)
    # finish
    r = subprocess.run(_cmd(run, not first), env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 or (r.returncode == 2 and "is finished" in r.stderr), r.stderr
    assert kills >= 10, f"only {kills} of the planned kills landed"
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _step(run) == _step(ref) > 100  # the same stopping step (early stopping included)
    assert load_run(run).evaluate("test") == load_run(ref).evaluate("test")
    print(f"kills survived: {kills}")
