"""CUDA check (run on a machine with a GPU): plain configurations dispatch to torch's path (cuDNN)
and equal nn.LSTM; variants and traces run the reference path on the GPU and equal the CPU.

    PYTHONPATH=src python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys

import torch

import lstmkit


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    dev = torch.device("cuda")
    torch.manual_seed(0)
    ok = True
    ref = torch.nn.LSTM(16, 32, 2, bidirectional=True, batch_first=True).to(dev)
    m = lstmkit.LSTM.from_torch(ref)
    x = torch.randn(4, 50, 16, device=dev, requires_grad=True)
    a, (ha, ca) = ref(x)
    b, (hb, cb) = m(x)
    ga = torch.autograd.grad(a.sum(), x)[0]
    gb = torch.autograd.grad(b.sum(), x)[0]
    err = max((a - b).abs().max().item(), (ga - gb).abs().max().item(), (ha - hb).abs().max().item())
    print(f"plain on cuda: backend={m.backend}, max diff vs nn.LSTM {err:.2e}")
    ok &= m.backend == "torch" and err < 1e-5
    for variant in ({"peephole": True}, {"layer_norm": True}, {"coupled": True}, {"zoneout": 0.2}):
        g = lstmkit.LSTM(16, 32, 2, dtype=torch.float64, **variant).eval()
        xc = torch.randn(30, 3, 16, dtype=torch.float64)
        want, _, tw = g(xc, return_gates=True)
        g.to(dev)
        got, _, tg = g(xc.to(dev), return_gates=True)
        err = max((want - got.cpu()).abs().max().item(), (tw.f - tg.f.cpu()).abs().max().item())
        print(f"{next(iter(variant))} on cuda: backend={g.backend}, max diff vs CPU {err:.2e}")
        ok &= g.backend == "reference" and err < 1e-10
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
