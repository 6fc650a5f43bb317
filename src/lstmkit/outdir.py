"""The one rule for a folder that a command writes (``--out``): never write among a user's own files.

A command may write into a folder that does not exist yet (it is created), an empty folder, or a
folder that already holds what lstmkit writes there: a run (``config.json``), or only the names
that this kind of output consists of (an earlier explorer page, an earlier runtime bundle). Any
other existing folder holds someone's files: the command refuses with one line (exit status 2 on
the command line) unless the user asks to write into it anyway (``force=True``, ``--force``); even
then lstmkit only writes its own names and deletes nothing.

Standard library only, like :mod:`lstmkit.atomic`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import InputError

__all__ = ["check_out_folder", "is_run_folder"]


def is_run_folder(path: Path) -> bool:
    """A run folder: lstmkit's ``config.json`` is in it (train and compress write it last)."""
    return (path / "config.json").is_file()


def check_out_folder(
    path: str | Path,
    command: str,
    *,
    force: bool = False,
    own: Iterable[str] = (),
    runs_ok: bool = True,
) -> Path:
    """``path`` as a Path once it is safe for ``command`` to write a folder there, else an InputError.

    ``own``: the names (files or folders directly inside) that this output consists of; a folder
    holding only those (and the temporary files of an interrupted atomic write, ``.*.tmp-*``) is
    an earlier output of the same kind and may be written again. ``runs_ok``: an existing run folder
    is left to the caller (train resumes or refuses, compress refuses). ``force`` skips the check of
    the folder's contents (a file in the way of the folder is still an error).
    """
    p = Path(path)
    if not p.exists():
        return p
    if not p.is_dir():
        raise InputError(f"{command}: --out {p} exists and is not a folder; give a new or empty folder")
    if force or (runs_ok and is_run_folder(p)):
        return p
    allowed = set(own)
    foreign = sorted(
        e.name for e in p.iterdir() if e.name not in allowed and not (e.name.startswith(".") and ".tmp-" in e.name)
    )
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(
            f"{command}: --out {p} already holds files that lstmkit did not write ({shown}); "
            "choose a new or empty folder, or add --force to write into it anyway"
        )
    return p
