"""The progress of a training run: a tqdm bar on a terminal, plain log lines otherwise.

The bar measures the budget that binds: with a step budget the steps done of it, with a time budget
the training seconds spent of it (``0:25/1:00``), with both whichever will end first at the present
rate. The rate and the ETA leave out what is not training speed: the kernel build happens before
the clock starts, and the first step of a session (its warm-up: first-touch allocations, the first
call of each path) is not counted in the rate. tqdm fits the line to the terminal's width (the bar
shrinks first, then the text is cut) and redraws it at most ten times a second.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress", "fmt_time"]

_SCALE = 1000  # the bar counts thousandths of the binding budget


def fmt_time(s: float) -> str:
    """Seconds as m:ss (h:mm:ss from an hour); ``?`` when unknown."""
    if s != s or s in (float("inf"), float("-inf")):
        return "?"
    s = int(max(0.0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """``update(step, elapsed, **values)`` after each training step: ``elapsed`` is the run's training
    seconds so far (earlier resumed parts included), ``values`` are shown (e.g. ``loss``).

    On a terminal a tqdm bar is redrawn in place; otherwise a log line is printed every
    ``log_every`` steps. :meth:`message` prints a line of its own without breaking the bar."""

    def __init__(
        self,
        label: str,
        max_steps: int | None,
        max_time: float | None = None,
        *,
        start_step: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
        log_every: int = 100,
        elapsed: float = 0.0,
    ) -> None:
        self.label = label
        self.max_steps = max_steps
        self.max_time = max_time
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.log_every = max(1, log_every)
        self.start_step = start_step
        self.step = start_step
        self.elapsed = elapsed
        self._warm: tuple[int, float] | None = None  # (step, elapsed) after the session's first step
        self._bar: Any = None
        self._drawn = 0.0
        if self.tty:
            self._bar = tqdm(
                desc=label,
                total=_SCALE,
                file=self.stream,
                dynamic_ncols=True,
                mininterval=0.1,
                miniters=1,
                bar_format=self._format({}),
                leave=True,
            )

    # ------------------------------------------------------------------ what is shown

    def rate(self) -> float | None:
        """Steps per second since the session's first step (None until a second step is done)."""
        if self._warm is None:
            return None
        steps, secs = self.step - self._warm[0], self.elapsed - self._warm[1]
        return steps / secs if steps > 0 and secs > 0 else None

    def binding(self) -> str:
        """``"steps"`` or ``"time"``: the budget that will end the run first at the present rate."""
        if self.max_time is None:
            return "steps"
        if self.max_steps is None:
            return "time"
        rate = self.rate()
        if rate:
            return "steps" if (self.max_steps - self.step) / rate <= self.max_time - self.elapsed else "time"
        return "steps" if self.step / self.max_steps >= self.elapsed / self.max_time else "time"

    def fraction(self) -> float:
        """How much of the binding budget is spent, 0 to 1."""
        if self.binding() == "time":
            assert self.max_time is not None
            return min(1.0, self.elapsed / self.max_time)
        assert self.max_steps is not None
        return min(1.0, self.step / self.max_steps)

    def eta(self) -> float:
        """Seconds of training left (nan while unknown)."""
        if self.binding() == "time":
            assert self.max_time is not None
            return max(0.0, self.max_time - self.elapsed)
        assert self.max_steps is not None
        rate = self.rate()
        return (self.max_steps - self.step) / rate if rate else float("nan")

    def text(self, values: dict[str, float], width: int | None = None) -> str:
        """The text after the bar, most important first; with ``width``, only the parts that fit."""
        rate = self.rate()
        eta = self.eta()
        if self.binding() == "time":
            assert self.max_time is not None
            parts = [f"{fmt_time(self.elapsed)}/{fmt_time(self.max_time)}", f"step {self.step}"]
        else:
            parts = [f"step {self.step}/{self.max_steps}", fmt_time(self.elapsed)]
        parts.append(f"ETA {fmt_time(math.ceil(eta) if eta == eta else eta)}")
        parts.append(f"{rate:.3g} steps/s" if rate else "? steps/s")
        parts += [f"{k} {v:.4g}" for k, v in values.items()]
        text = parts[0]
        for part in parts[1:]:
            if width is not None and len(text) + 3 + len(part) > width:
                break
            text += " · " + part
        return text

    def _format(self, values: dict[str, float]) -> str:
        """tqdm's bar_format: the label, the percentage, a bar of at least 10 cells, and the text that
        fits the terminal's width beside them (tqdm cuts the line to the width in any case)."""
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = int(os.environ.get("COLUMNS", "80") or 80)
        room = width - len(self.label) - len(" 100%||  ") - 10
        text = self.text(values, max(room, 10)).replace("{", "{{").replace("}", "}}")
        return "{desc} {percentage:3.0f}%|{bar}| " + text

    # ------------------------------------------------------------------ calls from the loop

    def update(self, step: int, elapsed: float, **values: float) -> None:
        self.step, self.elapsed = step, elapsed
        if self._warm is None:
            self._warm = (step, elapsed)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = int(_SCALE * self.fraction())
            now = time.perf_counter()
            if now - self._drawn >= 0.1:  # at most ten redraws a second
                self._drawn = now
                self._bar.bar_format = self._format(values)
                self._bar.refresh()
        elif step % self.log_every == 0:
            self.stream.write(f"{self.label} {100 * self.fraction():3.0f}% {self.text(values)}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (an evaluation, a warning) that does not break the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self, **values: float) -> None:
        """Leave the bar's last state on the screen (``values`` as in :meth:`update`)."""
        if self._bar is not None:
            self._bar.n = int(_SCALE * self.fraction())
            self._bar.bar_format = self._format(values)
            self._bar.close()
            self._bar = None
