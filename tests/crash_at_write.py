"""Run the command line and kill the process (SIGKILL) inside its N-th atomic file write, after half
the bytes are in the temporary file and before the rename (tests/test_crash.py):

    python tests/crash_at_write.py N train mystery --out DIR ...
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from lstmkit import atomic
from lstmkit.cli import main


def crash_at(n: int) -> None:
    """Install the hook that kills this process on its ``n``-th atomic write."""
    writes = 0

    def hook(tmp: Path) -> None:
        nonlocal writes
        writes += 1
        if writes == n:
            os.kill(os.getpid(), signal.SIGKILL)

    atomic.before_rename = hook


if __name__ == "__main__":
    crash_at(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
