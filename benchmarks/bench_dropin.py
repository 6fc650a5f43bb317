"""Training speed of the swap: PyTorch's word-level language model example (embedding, 2-layer LSTM
with dropout, hidden state carried and detached, gradient clipping, SGD) with torch.nn.LSTM and with
lstmkit.LSTM swapped in, nothing else changed (issue 19 item 5; the same program is tested for equal
losses in tests/test_dropin_programs.py).

    PYTHONPATH=src python benchmarks/bench_dropin.py [--rounds N] [--steps N] [--threads N]

Size: the example's defaults on a Penn-Treebank-sized vocabulary (10,000 words, 200 embedding and
hidden units, 2 layers, 35 steps of back-propagation through time, batch 20, dropout 0.2). The two
programs are timed in alternation (the median and the best of N rounds of one step each), so a change of the
machine's load hits them alike; a step is forward, backward, clipping and the update.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit  # noqa: E402
from lstmkit.bench import machine  # noqa: E402

NTOKEN, NINP, NHID, NLAYERS, BPTT, BSZ, DROPOUT, LR, CLIP = 10_000, 200, 200, 2, 35, 20, 0.2, 20.0, 0.25


class RNNModel(nn.Module):
    def __init__(self, rnn_cls: Any) -> None:
        super().__init__()
        self.drop = nn.Dropout(DROPOUT)
        self.encoder = nn.Embedding(NTOKEN, NINP)
        self.rnn = rnn_cls(NINP, NHID, NLAYERS, dropout=DROPOUT)
        self.decoder = nn.Linear(NHID, NTOKEN)

    def forward(self, x: torch.Tensor, hidden: Any) -> Any:
        output, hidden = self.rnn(self.drop(self.encoder(x)), hidden)
        return F.log_softmax(self.decoder(self.drop(output)).view(-1, NTOKEN), dim=1), hidden


def trainer(rnn_cls: Any) -> tuple[RNNModel, Any]:
    """The model and a function that runs one training step on the next batch."""
    torch.manual_seed(0)
    model = RNNModel(rnn_cls).train()
    data = torch.randint(0, NTOKEN, (BPTT * 50 + 1, BSZ))
    state: dict[str, Any] = {"i": 0, "hidden": None}

    def step() -> None:
        i = state["i"]
        x, y = data[i : i + BPTT], data[i + 1 : i + 1 + BPTT].reshape(-1)
        state["i"] = (i + BPTT) % (BPTT * 50)
        hidden = state["hidden"]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        model.zero_grad()
        out, state["hidden"] = model(x, hidden)
        F.nll_loss(out, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-LR)

    return model, step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=1, help="training steps per round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"machine: {machine()}")
    print(
        f"word LM: vocabulary {NTOKEN}, {NINP}/{NHID} units, {NLAYERS} layers, bptt {BPTT}, batch {BSZ}, "
        f"dropout {DROPOUT}; median of {a.rounds} rounds of {a.steps} step(s) each, in alternation\n"
    )
    runs = {"torch.nn.LSTM": trainer(nn.LSTM), "lstmkit.LSTM": trainer(lstmkit.LSTM)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _, step in runs.values():
        step()  # warm-up (and the kernels' first load)
    for _ in range(a.rounds):
        for k, (_, step) in runs.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            times[k].append((time.perf_counter() - t0) / a.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    path = runs["lstmkit.LSTM"][0].rnn.backend
    print("| module | steps/s (median) | steps/s (best round) | path that ran |")
    print("|---|---|---|---|")
    for k in runs:
        print(f"| {k} | {1 / med[k]:.2f} | {1 / best[k]:.2f} | {path if k.startswith('lstmkit') else 'torch'} |")
    ratio = med["torch.nn.LSTM"] / med["lstmkit.LSTM"]
    print(f"\nlstmkit / torch speed: {ratio:.2f}x (median), {best['torch.nn.LSTM'] / best['lstmkit.LSTM']:.2f}x (best)")


if __name__ == "__main__":
    main()
