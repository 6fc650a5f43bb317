"""Text to a model's vocabulary: one rule for every command that takes a user's text.

A model whose vocabulary is all single characters (``lstmkit train text``) reads text character by
character, spaces and newlines included; any other vocabulary (words: mystery, reber) reads
whitespace-separated items. An item outside the vocabulary is fed as a stand-in, the space for
character models (else the vocabulary's first item), and marked with :data:`UNKNOWN_MARK` wherever
it is shown; :func:`unknown_note` is the line that tells the user which items those were. ``explore``
and ``sample`` follow this rule. The NumPy runtime's command line splits text the same way but
refuses such items, naming them (a deployed model should not guess); it repeats the split rule
because a device that runs bundles ships without this module.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UNKNOWN_MARK", "Encoded", "describe_items", "encode_text", "is_char_level", "split_text", "unknown_note"]

UNKNOWN_MARK = "⚠"


def is_char_level(vocab: list[str]) -> bool:
    """A character model: every item of the vocabulary is one character."""
    return bool(vocab) and all(len(t) == 1 for t in vocab)


def split_text(vocab: list[str], text: str) -> list[str]:
    """The items of ``text`` for a model with ``vocab``: characters, or whitespace-separated words."""
    return list(text) if is_char_level(vocab) else text.split()


@dataclass
class Encoded:
    """``ids``: one id per item; ``shown``: the items for display, unknown ones marked; ``unknown``:
    the distinct unknown items in order of first appearance; ``count``: how many items were unknown;
    ``stand_in``: the vocabulary item fed in their place."""

    ids: list[int]
    shown: list[str]
    unknown: list[str] = field(default_factory=list)
    count: int = 0
    stand_in: str = " "


def encode_text(vocab: list[str], text: str) -> Encoded:
    """``text`` as ids of ``vocab``, unknown items replaced by the stand-in (see the module docstring)."""
    index = {t: i for i, t in enumerate(vocab)}
    stand_in = " " if is_char_level(vocab) and " " in index else vocab[0]
    enc = Encoded([], [], stand_in=stand_in)
    for it in split_text(vocab, text):
        if it in index:
            enc.ids.append(index[it])
            enc.shown.append(it)
        else:
            enc.ids.append(index[stand_in])
            enc.shown.append(UNKNOWN_MARK + it)
            enc.count += 1
            if it not in enc.unknown:
                enc.unknown.append(it)
    return enc


def describe_items(items: list[str], limit: int = 8) -> str:
    """Items for a one-line message: quoted (so a tab or a newline is visible), the first ``limit``."""
    shown = ", ".join(repr(t) for t in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def unknown_note(enc: Encoded, where: str = "") -> str:
    """The line that says which items were outside the vocabulary and what was fed instead ("" if none)."""
    if not enc.count:
        return ""
    return (
        f"{enc.count} input items are outside the model's vocabulary ({describe_items(enc.unknown)}): "
        f"fed as the stand-in {enc.stand_in!r}{where}"
    )
