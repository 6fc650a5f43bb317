"""The one base class for bad input.

Everything a user can get wrong (an argument, a file, a run folder, a task's options) raises a
subclass of :class:`InputError`. The command line prints such an error as one line and exits 2;
any other exception is a bug and exits 1 (DESIGN.md). ``InputError`` derives from ``ValueError``
so that code written against the library's earlier ``ValueError`` keeps working.

This module imports nothing, so every layer (the torch-free ``lstmkit.runtime`` too) may use it.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message says what was wrong and how to fix it, in one line."""
