"""The mystery: the story the LSTM is usually explained with, made a task."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .base import Batch, DataError, SyntheticTask, check_int, class_last_metrics, class_last_sums, tokens_to_strings

SUSPECT_NAMES = (
    "butler", "maid", "gardener", "cook", "chauffeur", "nanny",
    "doctor", "colonel", "vicar", "governess", "footman", "housekeeper",
)  # fmt: skip
FILLER_WORDS = (
    "the", "rain", "door", "night", "house", "candle", "clock", "stairs", "window", "letter",
    "garden", "library", "quiet", "storm", "dinner", "guests", "fire", "shadow", "key", "hall",
    "wine", "lamp", "cellar", "moon", "carriage", "silver", "portrait", "fog", "study", "piano",
    "tea", "cards", "snow", "gate", "bell", "coat", "hat", "ink", "glass", "knock",
    "dog", "thunder", "curtain", "morning", "attic", "pond", "rose", "train",
)  # fmt: skip
# The task's token names, defined here once (the explorer's mystery report reads stories by them).
CLUE_PREFIX = "clue:"  # clue:<name> names a suspect
ALIBI_PREFIX = "alibi:"  # alibi:<name> clears one
QUESTION = "who?"  # the last token of every story


class MysteryTask(SyntheticTask):
    """Who did it? A stream of T word tokens ending in a question.

    Vocabulary, in id order: `filler_words` plain words ("the", "rain", "door", ...), then
    `clue:<name>` for each of the `suspects` names of the pool (butler, maid, gardener, cook, ...),
    then `alibi:<name>` for each, then the question `who?`. Every story draws 1 + `red_herrings`
    distinct names from the pool: the culprit gets one clue; each red herring gets a clue and, later,
    an alibi that clears them. These 1 + 2R events go at distinct random positions in the first T - 1
    steps (each alibi after its suspect's clue), filler words fill the rest, and the question is the
    last token. The target is the culprit's index in the pool (`suspects` classes); the answer is the
    one suspect with a clue and no alibi. Solving it takes the four behaviours of an LSTM cell:
    note the clue (input gate), hold the suspects (cell), drop the cleared one (forget gate), answer at
    the question (output gate). A 64-unit LSTM reaches 99.95% at T = 100, 4 suspects, R = 2 in about
    25 s of CPU training; a vanilla RNN stays near 72% (lstmkit's own check; the task is new here).

    Baseline: `accuracy` = 1/(1 + R), not 1/suspects. Only the 1 + R clued names are candidates, so
    a model that guesses among them, or one that remembers the clues but ignores the alibis, is right
    once in 1 + R.

    Batch.meta, per sequence: `culprit` (B,) pool index; `suspects` (B, 1+R) pool indices of the
    clued names, column 0 the culprit; `clue_pos` (B, 1+R) positions of their clues, same columns;
    `alibi_pos` (B, R) positions of the alibis of columns 1..R; `question_pos` (B,) = T - 1.
    """

    name: ClassVar[str] = "mystery"
    input_type = "tokens"
    target = "class_last"
    main_metric = "accuracy"
    higher_is_better = True

    def __init__(
        self,
        seed: int = 0,
        *,
        T: int = 100,
        suspects: int = 4,
        red_herrings: int = 2,
        filler_words: int = 20,
        n_val: int = 1000,
        n_test: int = 2000,
    ) -> None:
        R = check_int(self.name, "red_herrings", red_herrings, minimum=0)
        S = check_int(self.name, "suspects", suspects, minimum=2, maximum=len(SUSPECT_NAMES))
        if S < R + 1:
            raise DataError(
                f"mystery: suspects={S} cannot hold 1 culprit + red_herrings={R}; "
                f"use suspects >= {R + 1} or fewer red_herrings"
            )
        Fw = check_int(self.name, "filler_words", filler_words, minimum=1, maximum=len(FILLER_WORDS))
        T = check_int(self.name, "T", T, minimum=1)
        if T < 2 * R + 2:
            raise DataError(
                f"mystery: T={T} is too short for {2 * R + 1} events and the question; use T >= {2 * R + 2}"
            )
        super().__init__(
            seed,
            {"T": T, "suspects": S, "red_herrings": R, "filler_words": Fw, "n_val": n_val, "n_test": n_test},
        )
        self.T, self.suspects, self.red_herrings, self.filler_words = T, S, R, Fw
        self.names = list(SUSPECT_NAMES[:S])
        self.vocab = (
            list(FILLER_WORDS[:Fw])
            + [CLUE_PREFIX + n for n in self.names]
            + [ALIBI_PREFIX + n for n in self.names]
            + [QUESTION]
        )
        self.input_size = len(self.vocab)
        self.output_size = S

    def clue_id(self, suspect: int) -> int:
        return self.filler_words + suspect

    def alibi_id(self, suspect: int) -> int:
        return self.filler_words + self.suspects + suspect

    @property
    def question_id(self) -> int:
        return self.filler_words + 2 * self.suspects

    def class_names(self) -> list[str] | None:
        return list(self.names)

    def _generate(self, n: int, rng: np.random.Generator) -> Batch:
        T, S, R = self.T, self.suspects, self.red_herrings
        rows = np.arange(n)[:, None]
        who = np.argsort(rng.random((n, S)), axis=1)[:, : R + 1]  # column 0 is the culprit
        slots = np.argsort(rng.random((n, T - 1)), axis=1)[:, : 2 * R + 1]  # distinct, uniformly placed
        clue_pos = np.empty((n, R + 1), dtype=np.int64)
        clue_pos[:, 0] = slots[:, 0]
        pair = slots[:, 1:].reshape(n, R, 2)
        clue_pos[:, 1:] = pair.min(-1)
        alibi_pos = pair.max(-1)
        x = rng.integers(0, self.filler_words, (n, T))
        x[rows, clue_pos] = self.filler_words + who
        x[rows, alibi_pos] = self.filler_words + S + who[:, 1:]
        x[:, T - 1] = self.question_id
        return Batch(
            x=torch.from_numpy(x.astype(np.int64)),
            y=torch.from_numpy(who[:, 0].astype(np.int64)),
            meta={
                "culprit": torch.from_numpy(who[:, 0].astype(np.int64)),
                "suspects": torch.from_numpy(who.astype(np.int64)),
                "clue_pos": torch.from_numpy(clue_pos),
                "alibi_pos": torch.from_numpy(alibi_pos.astype(np.int64)),
                "question_pos": torch.full((n,), T - 1, dtype=torch.int64),
            },
        )

    def _batch_sums(self, output: torch.Tensor, batch: Batch) -> dict[str, float]:
        return class_last_sums(output, batch)

    def _metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return class_last_metrics(sums)

    def render(self, x_row: torch.Tensor) -> list[str]:
        assert self.vocab is not None
        return tokens_to_strings(self.vocab, x_row)

    def baseline(self) -> dict[str, float]:
        return {"accuracy": 1.0 / (1 + self.red_herrings)}
