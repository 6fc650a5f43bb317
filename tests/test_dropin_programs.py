"""Programs written for torch.nn.LSTM / LSTMCell, run once with torch's class and once with lstmkit's
swapped in, under the same seed (issue 19, part 5). The oracle is the run with torch's class.

* A word-level language model in the style of PyTorch's ``examples/word_language_model``: embedding,
  a 2-layer LSTM with dropout between the layers (and around it), the hidden state carried across
  batches and detached, gradient clipping, plain SGD, the best model saved with ``torch.save`` and
  reloaded with ``torch.load(weights_only=True)`` inside ``safe_globals``. Dropout draws the same
  masks on every lstmkit path (the inter-layer dropout is ``F.dropout`` on each layer's output, as in
  torch's fused LSTM), so the losses agree to float32 rounding with dropout on.
* Two stacked ``LSTMCell`` trained in float64 by LBFGS on sine waves, PyTorch's
  ``examples/time_sequence_prediction``: the losses agree to 1e-10.

The programs take the recurrent class as their only difference and call nothing of lstmkit's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import backends
from torch import nn

import lstmkit

# ----------------------------------------------------------------------------- a word-level language model


class RNNModel(nn.Module):
    """examples/word_language_model's model: encoder, recurrent module, decoder."""

    def __init__(self, rnn_cls: Any, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = rnn_cls(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid, self.nlayers = nhid, nlayers
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]) -> Any:
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


VOCAB = 40


def corpus(n_tokens: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """A tiny synthetic corpus with something to learn: eight fixed "sentences" (drawn once from the
    vocabulary, Zipf-like: low ids are common) in a random order; ``seed`` changes only the order."""
    g = torch.Generator().manual_seed(1234)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    sentences = [
        torch.multinomial(zipf, int(torch.randint(4, 9, (1,), generator=g)), True, generator=g) for _ in range(8)
    ]
    order = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    total = 0
    while total < n_tokens:
        out.append(sentences[int(torch.randint(0, 8, (1,), generator=order))])
        total += len(out[-1])
    return torch.cat(out)[:n_tokens]


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


def repackage_hidden(h: Any) -> Any:
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def word_lm_program(
    rnn_cls: Any, save_path: Path, *, dropout: float, epochs: int = 3, lr: float = 20.0, clip: float = 0.25
) -> dict[str, Any]:
    """The training script; returns every training loss, the validation losses, the reloaded model's
    test loss and the model."""
    torch.manual_seed(1111)
    ntokens, bptt, bsz = VOCAB, 12, 8
    train_data = batchify(corpus(1200, ntokens, 0), bsz)
    val_data = batchify(corpus(300, ntokens, 1), 4)
    test_data = batchify(corpus(300, ntokens, 2), 4)
    model = RNNModel(rnn_cls, ntokens, 16, 24, 2, dropout)
    criterion = nn.NLLLoss()

    def evaluate(model: RNNModel, data_source: torch.Tensor) -> float:
        model.eval()
        total = 0.0
        hidden = model.init_hidden(4)
        with torch.no_grad():
            for i in range(0, data_source.size(0) - 1, bptt):
                data, targets = get_batch(data_source, i, bptt)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total += len(data) * criterion(output, targets).item()
        return total / (len(data_source) - 1)

    losses: list[float] = []
    val_losses: list[float] = []
    best_val = math.inf
    for _ in range(epochs):
        model.train()
        hidden = model.init_hidden(bsz)
        for i in range(0, train_data.size(0) - 1, bptt):
            data, targets = get_batch(train_data, i, bptt)
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
        val = evaluate(model, val_data)
        val_losses.append(val)
        if val < best_val:
            with open(save_path, "wb") as f:
                torch.save(model, f)
            best_val = val
        else:
            lr /= 4.0
    allowed = [RNNModel, nn.Dropout, nn.Embedding, nn.Linear, type(model.rnn)]
    with open(save_path, "rb") as f, torch.serialization.safe_globals(allowed):
        best = torch.load(f, weights_only=True)
    best.rnn.flatten_parameters()
    return {"losses": losses, "val": val_losses, "test": evaluate(best, test_data), "model": best}


def _lstmkit_lstm(backend: str) -> Any:
    """lstmkit.LSTM with torch's signature (and one path forced, where the test asks for one)."""
    if backend == "auto":
        return lstmkit.LSTM
    return lambda *a, **k: lstmkit.LSTM(*a, backend=backend, **k)


def _close_lists(got: list[float], want: list[float], tol: float, what: str) -> None:
    assert len(got) == len(want), what
    worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(got, want))
    assert worst <= tol, f"{what}: largest relative difference {worst:.3g} > {tol:.3g}"


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize(
    "backend", ["auto", *[pytest.param(b, marks=pytest.mark.slow) for b in backends() if b != "torch"]]
)
def test_word_language_model_same_losses(backend: str, dropout: float, tmp_path: Path) -> None:
    want = word_lm_program(nn.LSTM, tmp_path / "torch.pt", dropout=dropout)
    got = word_lm_program(_lstmkit_lstm(backend), tmp_path / "lstmkit.pt", dropout=dropout)
    assert isinstance(got["model"].rnn, lstmkit.LSTM)
    assert len(want["losses"]) == 3 * 13
    # the program learns (so equal losses are not equal constants)
    assert want["losses"][-1] < want["losses"][0] - 0.5
    # torch's own LSTM (backend="auto" picks it at these shapes) gives bit-equal losses; the other
    # paths round differently, within float32 after 39 steps of SGD
    tol = 0.0 if got["model"].rnn.backend == "torch" else 2e-4
    _close_lists(got["losses"], want["losses"], tol, "training losses")
    _close_lists(got["val"], want["val"], tol, "validation losses")
    _close_lists([got["test"]], [want["test"]], tol, "the reloaded best model's test loss")


def test_word_language_model_checkpoint_loads_into_the_other_class(tmp_path: Path) -> None:
    """A checkpoint's state_dict from the torch program loads into the lstmkit program's model and
    gives the same predictions (the swap keeps old checkpoints usable)."""
    run = word_lm_program(nn.LSTM, tmp_path / "torch.pt", dropout=0.2, epochs=1)
    torch.manual_seed(0)
    swapped = RNNModel(lstmkit.LSTM, VOCAB, 16, 24, 2, 0.2)
    swapped.load_state_dict(run["model"].state_dict())
    swapped.eval()
    x = batchify(corpus(60, VOCAB, 3), 4)
    with torch.no_grad():
        a, _ = run["model"](x, run["model"].init_hidden(4))
        b, _ = swapped(x, swapped.init_hidden(4))
    assert torch.allclose(a, b, atol=1e-6)


def export_onnx(model: RNNModel, path: Path, *, dynamo: bool) -> None:
    """The example's export step: a dummy input of the batch's shape and a fresh hidden state."""
    seq_len, batch_size = 12, 4
    dummy_input = torch.LongTensor(seq_len * batch_size).zero_().view(-1, batch_size)
    hidden = model.init_hidden(batch_size)
    model.eval()
    torch.onnx.export(model, (dummy_input, hidden), str(path), dynamo=dynamo)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("dynamo", [True, False])
def test_word_language_model_onnx_export_same_behaviour(dynamo: bool, tmp_path: Path) -> None:
    """The reloaded best model of each program exported to ONNX (torch 2.13's default exporter and the
    TorchScript one): onnxruntime gives both programs' eager outputs on real data."""
    ort = pytest.importorskip("onnxruntime")
    x = batchify(corpus(12 * 4, VOCAB, 3), 4)  # (12, 4): the export's shape
    h0 = torch.randn(2, 4, 24) * 0.5
    c0 = torch.randn(2, 4, 24) * 0.5
    results = {}
    for name, cls in (("torch", nn.LSTM), ("lstmkit", lstmkit.LSTM)):
        run = word_lm_program(cls, tmp_path / f"{name}.pt", dropout=0.2, epochs=1)
        model = run["model"]
        export_onnx(model, tmp_path / f"{name}.onnx", dynamo=dynamo)
        with torch.no_grad():
            y, (h, c) = model(x, (h0, c0))
        sess = ort.InferenceSession(str(tmp_path / f"{name}.onnx"))
        names = [i.name for i in sess.get_inputs()]
        got = sess.run(None, dict(zip(names, (x.numpy(), h0.numpy(), c0.numpy()))))
        for out, want in zip(got, (y, h, c)):
            assert torch.allclose(torch.from_numpy(out), want, atol=1e-5), name
        results[name] = [torch.from_numpy(o) for o in got]
    assert isinstance(model.rnn, lstmkit.LSTM)
    for a, b in zip(results["torch"], results["lstmkit"]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- LSTMCell, float64, LBFGS


class Sequence(nn.Module):
    """examples/time_sequence_prediction's model: two stacked cells and a linear read-out."""

    def __init__(self, cell_cls: Any) -> None:
        super().__init__()
        self.lstm1 = cell_cls(1, 51)
        self.lstm2 = cell_cls(51, 51)
        self.linear = nn.Linear(51, 1)

    def forward(self, input: torch.Tensor, future: int = 0) -> torch.Tensor:
        outputs = []
        h_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for _ in range(future):
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        return torch.cat(outputs, dim=1)


def sine_program(cell_cls: Any, steps: int = 2) -> tuple[list[float], list[float], torch.Tensor]:
    """The training script (shorter waves and fewer steps); returns the closure's losses, the test
    losses and the predicted future."""
    T, L, N = 20, 60, 12
    g = torch.Generator().manual_seed(2)
    x = torch.arange(L, dtype=torch.float64) + torch.randint(-4 * T, 4 * T, (N, 1), generator=g)
    data = torch.sin(x / 1.0 / T)
    input, target = data[3:, :-1], data[3:, 1:]
    test_input, test_target = data[:3, :-1], data[:3, 1:]
    torch.manual_seed(0)
    seq = Sequence(cell_cls).double()
    criterion = nn.MSELoss()
    optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8, max_iter=8)
    losses: list[float] = []
    tests: list[float] = []
    future = 10
    for _ in range(steps):

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            losses.append(loss.item())
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            pred = seq(test_input, future=future)
            tests.append(criterion(pred[:, :-future], test_target).item())
    return losses, tests, pred


def test_lstmcell_lbfgs_float64_same_losses() -> None:
    want_losses, want_tests, want_pred = sine_program(nn.LSTMCell)
    got_losses, got_tests, got_pred = sine_program(lstmkit.LSTMCell)
    assert got_losses[0] == pytest.approx(want_losses[0], abs=1e-12)  # same initial parameters
    assert want_losses[-1] < want_losses[0] / 2  # it learns
    _close_lists(got_losses, want_losses, 1e-10, "LBFGS closure losses")
    _close_lists(got_tests, want_tests, 1e-10, "test losses")
    assert torch.allclose(got_pred, want_pred, atol=1e-10, rtol=0)


@pytest.mark.slow  # the reference equations step by step in Python, 8 LBFGS evaluations of 2 x 59 steps
def test_lstmcell_lbfgs_float64_reference_path_same_losses() -> None:
    """The same with lstmkit's own equations running the cell (not torch's cell kernel)."""
    want_losses, _, want_pred = sine_program(nn.LSTMCell, steps=1)
    got_losses, _, got_pred = sine_program(lambda i, h: lstmkit.LSTMCell(i, h, backend="reference"), steps=1)
    _close_lists(got_losses, want_losses, 1e-10, "LBFGS closure losses")
    assert torch.allclose(got_pred, want_pred, atol=1e-10, rtol=0)
