"""``python -m lstmkit.runtime BUNDLE [--text TEXT | --tokens "w1 w2 …" | --input-json FILE]``: check a
bundle, run it.

``--text`` is plain text: one step per character for a character model (spaces and newlines are
characters like any other), whitespace-separated words for a word model (the rule of
``lstmkit.tokens``, repeated here because a device that runs bundles ships without it). An item
outside the model's vocabulary is refused, all such items named: a deployed model does not guess.

Prints the model's shape and, with an input, the output as JSON. Exit status 2 with one line on
stderr for a missing, truncated or changed bundle or bad input; any other error is a bug (traceback,
exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .model import load


def _items(vocab: list[str], text: str) -> list[str]:
    """Characters for a character model (every vocabulary item one character), else words."""
    return list(text) if vocab and all(len(t) == 1 for t in vocab) else text.split()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstmkit.runtime", description="run an exported lstmkit model")
    p.add_argument("bundle")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--text", help="plain text (one sequence): characters for a character model, spaces included; else words"
    )
    src.add_argument("--tokens", help="space-separated tokens of the model's vocabulary (one sequence)")
    src.add_argument("--input-json", help="a JSON file holding x: ids (B, T) or features (B, T, I)")
    args = p.parse_args(argv)
    try:
        m = load(args.bundle)
        kind = "int8/int4" if m.quantized else "float32"
        print(f"{args.bundle}: {m.input_type} input, {m.num_layers}x{m.hidden_size} LSTM, target {m.target}, {kind}")
        x = None
        if args.tokens is not None or args.text is not None:
            if m.vocab is None:
                raise InputError("the model has no vocabulary; give --input-json with ids or features")
            index = {t: i for i, t in enumerate(m.vocab)}
            items = args.tokens.split() if args.tokens is not None else _items(m.vocab, args.text)
            if not items:
                raise InputError("the input is empty; give some text")
            unknown = [t for t in dict.fromkeys(items) if t not in index]
            if unknown:
                shown = ", ".join(repr(t) for t in unknown[:8]) + (" …" if len(unknown) > 8 else "")
                raise InputError(
                    f"{len(unknown)} distinct input items are not in the model's vocabulary: {shown}; leave them out"
                )
            x = np.array([[index[t] for t in items]], dtype=np.int64)
        elif args.input_json is not None:
            with open(args.input_json, encoding="utf-8") as f:
                try:
                    raw = json.load(f)
                    x = np.array(raw, dtype=np.int64 if m.input_type == "tokens" else np.float32)
                except (ValueError, TypeError) as e:  # not JSON, or not a rectangular array of numbers
                    msg = f"{args.input_json}: not a JSON array of numbers of shape (B, T) or (B, T, I) ({e})"
                    raise InputError(msg) from None
        if x is not None:
            print(json.dumps(np.asarray(m.run(x)).tolist()))
    except (InputError, OSError) as e:  # bad input or an unreadable file; anything else is a bug
        lines = str(e).strip().splitlines()
        print(f"lstmkit.runtime: error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
