"""A progress bar for long work that becomes plain log lines when not on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_time(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """``update(step, **values)`` redraws one line on a TTY (at most 10 times a second), or prints a
    log line every ``log_every`` steps otherwise. ETA comes from the step budget or the time budget,
    whichever ends first."""

    def __init__(
        self,
        label: str,
        total_steps: int | None,
        max_time: float | None = None,
        *,
        start_step: int = 0,
        stream: TextIO | None = None,
        enabled: bool = True,
        log_every: int = 100,
        elapsed: float = 0.0,
    ) -> None:
        self.label = label
        self.total = total_steps
        self.max_time = max_time
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.log_every = max(1, log_every)
        self.t0 = time.perf_counter()
        self.start_step = start_step
        self.elapsed0 = elapsed
        self._last_draw = 0.0
        self._width = 0

    def eta(self, step: int) -> float:
        spent = time.perf_counter() - self.t0
        done = step - self.start_step
        rate = done / spent if spent > 0 and done > 0 else 0.0
        options = []
        if self.total is not None and rate > 0:
            options.append((self.total - step) / rate)
        if self.max_time is not None:
            options.append(max(0.0, self.max_time - self.elapsed0 - spent))
        return min(options) if options else float("nan")

    def line(self, step: int, values: dict[str, float]) -> str:
        spent = time.perf_counter() - self.t0
        rate = (step - self.start_step) / spent if spent > 0 else 0.0
        total = f"/{self.total}" if self.total is not None else ""
        frac = ""
        if self.total:
            n = int(20 * min(1.0, step / self.total))
            frac = "[" + "#" * n + "." * (20 - n) + "] "
        vals = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        return (
            f"{self.label} {frac}step {step}{total} {vals} | {rate:.1f} steps/s | "
            f"elapsed {_fmt_time(self.elapsed0 + spent)} | ETA {_fmt_time(self.eta(step))}"
        )

    def update(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw < 0.1:
                return
            self._last_draw = now
            text = self.line(step, values)
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        elif step % self.log_every == 0:
            self.stream.write(self.line(step, values) + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own (an evaluation, a warning) that does not break the bar."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
