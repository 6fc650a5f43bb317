"""The training progress bar: the binding budget, a rate and ETA without the warm-up, the terminal's
width (issue 20 item 5). The terminal tests run the CLI on a pseudo-terminal of a given size."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import tiny_mystery_args

from lstmkit.train.progress import Progress

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_rate_and_eta_leave_out_the_first_step() -> None:
    """A first step of 2 s (warm-up), then 100 steps in 1 s: the rate is 100 steps/s, not 101/3."""
    p = Progress("t", max_steps=1101, stream=io.StringIO(), enabled=False)
    p.update(1, 2.0)
    assert p.rate() is None  # one step: no rate yet
    p.update(101, 3.0)
    assert p.rate() == pytest.approx(100.0)
    assert p.binding() == "steps" and p.eta() == pytest.approx(10.0)  # 1000 steps left at 100/s
    assert p.fraction() == pytest.approx(101 / 1101)


def test_the_budget_that_ends_first_binds() -> None:
    # 100 steps/s after warm-up: 10,000 steps would take 100 s, the time budget ends in 57 s
    p = Progress("t", max_steps=10_000, max_time=60.0, stream=io.StringIO(), enabled=False)
    p.update(1, 1.0)
    p.update(201, 3.0)
    assert p.binding() == "time"
    assert p.eta() == pytest.approx(57.0) and p.fraction() == pytest.approx(3.0 / 60)
    assert p.text({}).startswith("0:03/1:00 · step 201 · ETA 0:57")
    # with 500 steps the step budget ends first (in 2.99 s) and binds
    q = Progress("t", max_steps=500, max_time=60.0, stream=io.StringIO(), enabled=False)
    q.update(1, 1.0)
    q.update(201, 3.0)
    assert q.binding() == "steps" and q.eta() == pytest.approx(2.99)  # 299 steps at 100/s
    assert q.text({}).startswith("step 201/500")
    # a time budget alone: no step total anywhere
    r = Progress("t", max_steps=None, max_time=10.0, stream=io.StringIO(), enabled=False)
    r.update(1, 0.5)
    assert r.binding() == "time" and "/" not in r.text({}).split(" · ")[1]


def test_log_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("task/lstm", max_steps=None, max_time=10.0, stream=out, log_every=2)
    for s in range(1, 6):
        p.update(s, 0.5 * s, loss=1.0 / s)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()  # steps 2 and 4
    assert lines[1].startswith("task/lstm  20% 0:02/0:10 · step 4 · ETA 0:08")


def _run_on_pty(args: list[str], columns: int, timeout: float = 240) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal ``columns`` wide; its exit status and
    everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": SRC, "LSTMKIT_NO_KERNELS": "1", "COLUMNS": str(columns), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lstmkit.cli", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    rc = proc.wait(timeout=30)
    return rc, b"".join(chunks).decode("utf-8", errors="replace")


def _bar_states(out: str, label: str) -> list[str]:
    """Every state the bar was drawn in (the text between carriage returns and newlines)."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    return [s for s in re.split(r"[\r\n]", plain) if s.startswith(label)]


@pytest.mark.parametrize("columns", [60, 200])
def test_bar_fits_the_terminal_and_counts_the_time_budget(tmp_path: Path, columns: int) -> None:
    args = ["train", "mystery", *tiny_mystery_args(), "--max-time", "3", "--out", str(tmp_path / "r")]
    args.remove("--quiet")
    rc, out = _run_on_pty(args, columns)
    assert rc == 0, out[-2000:]
    states = _bar_states(out, "mystery/lstm")
    assert len(states) >= 3, out[-2000:]
    for s in states:
        assert len(s) <= columns, f"{len(s)} > {columns} columns: {s!r}"
    # the time budget binds: the bar shows the training seconds of the 3 s budget, no step total
    assert all("/0:03" in s for s in states[1:]), states
    assert not any(re.search(r"step \d+/\d", s) for s in states), states
    assert re.search(r"100%\|.*0:03/0:03", states[-1]), states[-1]
    if columns >= 120:  # wide enough for the whole line: the rate and ETA are on it
        assert "steps/s" in states[-1] and "ETA 0:00" in states[-1], states[-1]
    assert out.rstrip().splitlines()[-1].startswith("stopped by the time budget (--max-time 3 s)")


def test_bar_counts_steps_when_the_step_budget_binds(tmp_path: Path) -> None:
    args = ["train", "mystery", *tiny_mystery_args(), "--max-steps", "60", "--out", str(tmp_path / "r")]
    args.remove("--quiet")
    rc, out = _run_on_pty(args, 100)
    assert rc == 0, out[-2000:]
    states = _bar_states(out, "mystery/lstm")
    assert states and re.search(r"100%\|.*step 60/60", states[-1]), states
    assert all(len(s) <= 100 for s in states)
    assert out.rstrip().splitlines()[-1].startswith("stopped by the step budget (--max-steps 60)")
