"""Sampling text from a character-level language model run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .run import Run


@torch.no_grad()
def sample_text(
    run: Run,
    prompt: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> str:
    """Continue ``prompt`` by ``length`` characters, sampling each from the model's next-character
    distribution at ``temperature`` (0 = greedy), restricted to the ``top_k`` most likely if given."""
    cfg = run.model_config
    if (
        cfg.target != "class_steps"
        or cfg.input_type != "tokens"
        or cfg.output_size != cfg.input_size
        or run.vocab is None
    ):
        raise ValueError(
            f"{run.path}: sampling needs a language-model run (lstmkit train text), "
            f"this one is {run.config['task']['name']}"
        )
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"--length must be a positive int, got {length!r}")
    if not temperature >= 0:
        raise ValueError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {top_k}")
    index = {c: i for i, c in enumerate(run.vocab)}
    bad = sorted({c for c in prompt if c not in index})
    if bad:
        raise ValueError(f"the prompt has characters outside the model's vocabulary: {''.join(bad)!r}; leave them out")
    gen = torch.Generator().manual_seed(seed if seed is not None else 0)
    start = prompt or ("\n" if "\n" in index else run.vocab[0])
    ids = torch.tensor([[index[c] for c in start]])
    model = run.model.eval()
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
        out.append(run.vocab[nxt])
        logits, state = model(torch.tensor([[nxt]]), state=state, return_state=True)
    return prompt + "".join(out)
