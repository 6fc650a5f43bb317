"""Sampling text from a character-level language model (``Run.sample``)."""

from __future__ import annotations

import torch

from ..errors import InputError
from ..models import SequenceModel
from ..tokens import encode_text


@torch.no_grad()
def sample_text(
    model: SequenceModel,
    vocab: list[str],
    prompt: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> str:
    """Continue ``prompt`` by ``length`` characters, sampling each from the model's next-character
    distribution at ``temperature`` (0 = greedy), restricted to the ``top_k`` most likely if given.
    ``model`` is a language model over ``vocab`` (its output is the next token of each step).
    Characters of ``prompt`` outside ``vocab`` are fed as a stand-in (:func:`lstmkit.tokens.encode_text`,
    the rule of ``explore``; :func:`lstmkit.tokens.unknown_note` names them); the prompt is returned as given."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise InputError(f"--length must be a positive int, got {length!r}")
    if not temperature >= 0:
        raise InputError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {top_k}")
    index = {c: i for i, c in enumerate(vocab)}
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    # characters outside the vocabulary are fed as a stand-in, as explore does (lstmkit.tokens)
    start = encode_text(vocab, prompt).ids if prompt else [index["\n"] if "\n" in index else 0]
    ids = torch.tensor([start])
    model = model.eval()
    logits, state = model(ids, return_state=True)
    out: list[str] = []
    for _ in range(length):
        last = logits[0, -1]
        if temperature == 0:
            nxt = int(last.argmax())
        else:
            scaled = last / temperature
            if top_k is not None and top_k < scaled.numel():
                kth = torch.topk(scaled, top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=gen))
        out.append(vocab[nxt])
        logits, state = model(torch.tensor([[nxt]]), state=state, return_state=True)
    return prompt + "".join(out)
