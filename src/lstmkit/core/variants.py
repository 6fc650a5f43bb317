"""The variants of the cell: the one list of their keywords, their validated options, and what the
layer and the cell need from them (initialisation, the weights of one layer, zoneout masks).

Each variant is an option of the same step (see :mod:`lstmkit.core.functional` for the equations),
shared by :class:`~lstmkit.LSTM` and :class:`~lstmkit.LSTMCell`:

* ``forget_bias`` (Jozefowicz et al. 2015): the initial forget-gate bias. Initialisation only, and an
  opt-in: ``None`` (the default) keeps torch's initialisation, so the same seed gives torch's parameters.
* ``chrono_init`` (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?", ICLR): a
  number T_max > 2, the longest time dependency expected. Initialisation only, and an opt-in: the
  forget-gate biases are drawn b_f = log(u), u ~ U(1, T_max − 1), one per unit, and the input-gate
  biases set to b_i = −b_f, so the units' forget times 1/(1 − σ(b_f)) ≈ u spread over [1, T_max − 1].
  The values go in ``bias_ih``'s input and forget rows (gate order i, f, g, o, as torch's); the same
  rows of ``bias_hh`` are set to 0, so b_ih + b_hh is the chrono value. The draws use torch's global
  generator after torch's own init, so the same seed gives the same biases.
* ``peephole`` (Gers & Schmidhuber 2000), ``layer_norm`` (Ba et al. 2016), ``coupled`` (f = 1 − i):
  switches of the step (:class:`~lstmkit.core.functional.CellOptions`).
* ``zoneout`` (Krueger et al. 2016): a rate, or a pair (z_c, z_h).
* ``weight_drop`` (DropConnect on W_hh, Merity et al. 2017).

This module depends on torch and :mod:`lstmkit.core.functional` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .checks import check_flag, check_rate
from .functional import CellOptions, LayerWeights

# The keywords of LSTM and LSTMCell that choose a variant, in this order everywhere (the command
# line's flags, a model config's "variants", names in messages and reprs).
VARIANTS = ("forget_bias", "chrono_init", "peephole", "layer_norm", "coupled", "zoneout", "weight_drop")
# The variants that are switches of the step: the fields of CellOptions.
CELL_SWITCHES = tuple(f.name for f in fields(CellOptions))


@dataclass(frozen=True)
class Variants:
    """The validated variant options of one LSTM or LSTMCell (read-only).

    ``forget_bias`` is the value the initialisation put in the forget-gate bias, or None when it kept
    torch's own init (uniform like every other bias); ``zoneout_c`` / ``zoneout_h`` are the two rates
    of ``zoneout``. A module keeps only its plain keyword attributes in its saved state and rebuilds
    this from them (:func:`variants_of`), so ``torch.load(weights_only=True)`` needs no helper class.
    """

    forget_bias: float | None
    opts: CellOptions
    zoneout_c: float
    zoneout_h: float
    weight_drop: float
    chrono_init: float | None = None

    @classmethod
    def parse(
        cls,
        owner: str,
        *,
        bias: bool,
        forget_bias: float | None,
        peephole: bool,
        layer_norm: bool,
        coupled: bool,
        zoneout: float | tuple[float, float],
        weight_drop: float,
        chrono_init: float | None = None,
    ) -> Variants:
        """Check the keywords as a user gave them (``owner`` names the module in messages)."""
        if forget_bias is not None:
            if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
                raise TypeError(f"{owner}: forget_bias must be a number, got {forget_bias!r}")
            if not math.isfinite(forget_bias):
                raise InputError(f"{owner}: forget_bias must be finite, got {forget_bias}")
            if not bias and forget_bias != 0:
                raise InputError(
                    f"{owner}: forget_bias={forget_bias} needs bias=True (there is no bias to initialise); "
                    "drop forget_bias or set bias=True"
                )
            if coupled and forget_bias != 0:
                raise InputError(
                    f"{owner}: forget_bias={forget_bias} has no effect with coupled=True (f = 1 - i has no "
                    "forget bias); drop one of them"
                )
        fb = float(forget_bias) if forget_bias is not None else None
        if chrono_init is not None:
            if isinstance(chrono_init, bool) or not isinstance(chrono_init, (int, float)):
                raise TypeError(f"{owner}: chrono_init must be a number (T_max), got {chrono_init!r}")
            if not (math.isfinite(chrono_init) and chrono_init > 2):
                raise InputError(
                    f"{owner}: chrono_init must be a finite T_max > 2 (biases log U(1, T_max - 1)), got {chrono_init}"
                )
            if not bias:
                raise InputError(
                    f"{owner}: chrono_init needs bias=True (there is no bias to initialise); set bias=True"
                )
            if coupled:
                raise InputError(
                    f"{owner}: chrono_init has no effect with coupled=True (f = 1 - i has no forget bias); drop one"
                )
            if forget_bias is not None:
                raise InputError(
                    f"{owner}: chrono_init and forget_bias both set the forget-gate bias; give only one of them"
                )
        ci = float(chrono_init) if chrono_init is not None else None
        for name, flag in (("peephole", peephole), ("layer_norm", layer_norm), ("coupled", coupled)):
            check_flag(owner, name, flag)
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise InputError(f"{owner}: zoneout must be a rate or a pair (z_c, z_h), got {zoneout!r}")
            zc = check_rate(owner, "zoneout (cell rate)", zoneout[0])
            zh = check_rate(owner, "zoneout (hidden rate)", zoneout[1])
        else:
            zc = zh = check_rate(owner, "zoneout", zoneout)
        return cls(
            forget_bias=fb,
            opts=CellOptions(peephole=peephole, layer_norm=layer_norm, coupled=coupled),
            zoneout_c=zc,
            zoneout_h=zh,
            weight_drop=check_rate(owner, "weight_drop", weight_drop),
            chrono_init=ci,
        )

    @property
    def zoneout(self) -> float | tuple[float, float]:
        """``zoneout`` as a plain value: the rate, or the pair (z_c, z_h) when they differ."""
        return self.zoneout_c if self.zoneout_c == self.zoneout_h else (self.zoneout_c, self.zoneout_h)

    @property
    def has_zoneout(self) -> bool:
        return self.zoneout_c > 0 or self.zoneout_h > 0

    def names(self) -> list[str]:
        """The variants that change the step (forget_bias and chrono_init only initialise), in the order
        of VARIANTS."""
        on = {n: getattr(self.opts, n) for n in CELL_SWITCHES}
        on.update(zoneout=self.has_zoneout, weight_drop=self.weight_drop > 0)
        return [n for n in VARIANTS if on.get(n, False)]

    @property
    def any_variant(self) -> bool:
        return bool(self.names())

    @property
    def step_variant(self) -> bool:
        """True when an equation of the step differs from torch's (peephole, layer norm, coupled, zoneout)."""
        o = self.opts
        return o.peephole or o.layer_norm or o.coupled or self.has_zoneout

    def plain_now(self, training: bool) -> bool:
        """True when the step is exactly torch's (no variant equation applies in this mode)."""
        return not self.step_variant and not (training and self.weight_drop > 0)


def init_parameters(
    module: nn.Module, hidden_size: int, suffixes: list[str], v: Variants, *, bias: bool, torch_names: list[str]
) -> None:
    """torch's uniform init U(−1/√H, 1/√H), then the variants' (LN gains 1 and shifts 0, the forget-gate
    bias when one was asked for, coupled forget rows 0); shared by LSTM and LSTMCell.

    The random numbers are drawn as torch.nn.LSTM / LSTMCell draw them: first the parameters torch
    has, in torch's order (``torch_names``), then the peepholes; layer norm's are set, not drawn. So
    under the same seed the parameters with torch's names equal torch's, and the random stream after
    the constructor is the same as after torch's (for the plain cell, and layer norm / zoneout /
    weight drop without ``forget_bias``; peepholes draw more)."""
    H = hidden_size
    std = 1.0 / math.sqrt(H)
    with torch.no_grad():
        for name in torch_names:
            getattr(module, name).uniform_(-std, std)
        if v.opts.peephole:
            for sfx in suffixes:
                getattr(module, f"weight_peephole{sfx}").uniform_(-std, std)
        for sfx in suffixes:
            if v.opts.layer_norm:
                for part in ("ih", "hh", "c"):
                    getattr(module, f"layer_norm_{part}_weight{sfx}").fill_(1.0)
                    getattr(module, f"layer_norm_{part}_bias{sfx}").zero_()
            if bias and v.forget_bias is not None:
                getattr(module, f"bias_ih{sfx}")[H : 2 * H].fill_(v.forget_bias)
                getattr(module, f"bias_hh{sfx}")[H : 2 * H].zero_()
            if bias and v.chrono_init is not None:
                chrono_biases_(getattr(module, f"bias_ih{sfx}"), getattr(module, f"bias_hh{sfx}"), v.chrono_init)
            if v.opts.coupled:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih", "weight_hh"):
                    getattr(module, f"{name}{sfx}")[H : 2 * H].zero_()


def chrono_biases_(bias_ih: Tensor, bias_hh: Tensor, t_max: float) -> None:
    """Chrono initialisation (Tallec & Ollivier 2018) of one layer's biases (4H each, gate order
    i, f, g, o), in place: b_f = log(u), u ~ U(1, t_max − 1) in ``bias_ih``'s forget rows, b_i = −b_f
    in its input rows, and 0 in ``bias_hh``'s input and forget rows. Draws H numbers from torch's
    global generator (on the CPU, so a seed gives the same biases on every device)."""
    H = bias_ih.shape[0] // 4
    u = torch.empty(H, dtype=torch.float64).uniform_(1.0, float(t_max) - 1.0)
    b_f = torch.log(u).to(bias_ih.dtype)
    with torch.no_grad():
        bias_ih[H : 2 * H].copy_(b_f)
        bias_ih[:H].copy_(-b_f)
        bias_hh[: 2 * H].zero_()


def keep_attributes(module: Any, v: Variants, *, peephole: bool, layer_norm: bool, coupled: bool) -> None:
    """Set the variants' keywords on an LSTM or LSTMCell as plain attributes: what its saved state
    holds (the inverse of :func:`variants_of`, which rebuilds the variants from them)."""
    module.forget_bias = v.forget_bias
    module.chrono_init = v.chrono_init
    module.peephole = peephole
    module.layer_norm = layer_norm
    module.coupled = coupled
    module.zoneout = v.zoneout
    module.weight_drop = v.weight_drop


def variants_of(module: Any) -> Variants:
    """The validated variants of an LSTM or LSTMCell, from its plain keyword attributes (``bias``,
    ``forget_bias``, ``peephole``, ``layer_norm``, ``coupled``, ``zoneout``, ``weight_drop``)."""
    return Variants.parse(
        type(module).__name__,
        bias=module.bias,
        forget_bias=module.forget_bias,
        chrono_init=getattr(module, "chrono_init", None),  # modules saved before chrono_init existed
        peephole=module.peephole,
        layer_norm=module.layer_norm,
        coupled=module.coupled,
        zoneout=module.zoneout,
        weight_drop=module.weight_drop,
    )


def is_variant_parameter(name: str) -> bool:
    """Parameters that only the variants have (torch.nn.LSTM has no such name)."""
    return name.startswith(("weight_peephole", "layer_norm_"))


def layer_weights(
    module: nn.Module, sfx: str, *, bias: bool, proj: bool, variants: Variants, training: bool
) -> LayerWeights:
    """The weights of one layer and direction (parameter suffix ``sfx``, e.g. ``"_l1_reverse"``, or
    ``""`` for a cell) as the functional step wants them; in training with ``weight_drop`` a fresh
    DropConnect mask on W_hh."""
    v = variants
    w_hh: Tensor = getattr(module, f"weight_hh{sfx}")
    if training and v.weight_drop > 0:
        w_hh = F.dropout(w_hh, v.weight_drop, training=True)
    ln = None
    if v.opts.layer_norm:
        ln = tuple(
            getattr(module, f"layer_norm_{part}_{kind}{sfx}")
            for part in ("ih", "hh", "c")
            for kind in ("weight", "bias")
        )
    return LayerWeights(
        w_ih=getattr(module, f"weight_ih{sfx}"),
        w_hh=w_hh,
        b_ih=getattr(module, f"bias_ih{sfx}") if bias else None,
        b_hh=getattr(module, f"bias_hh{sfx}") if bias else None,
        w_hr=getattr(module, f"weight_hr{sfx}") if proj else None,
        peephole=getattr(module, f"weight_peephole{sfx}") if v.opts.peephole else None,
        ln=ln,  # type: ignore[arg-type]
    )


def zoneout_masks(
    v: Variants, shape_c: tuple[int, ...], shape_h: tuple[int, ...], like: Tensor, training: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Keep-masks (1 = keep the previous value): Bernoulli(z) in training, the constant z in eval."""
    out: list[Tensor | None] = []
    for rate, shape in ((v.zoneout_c, shape_c), (v.zoneout_h, shape_h)):
        if rate <= 0:
            out.append(None)
        elif training:
            out.append((torch.rand(shape, device=like.device) < rate).to(like.dtype))
        else:
            out.append(torch.full(shape, rate, dtype=like.dtype, device=like.device))
    return out[0], out[1]


__all__ = [
    "CELL_SWITCHES",
    "VARIANTS",
    "Variants",
    "chrono_biases_",
    "init_parameters",
    "is_variant_parameter",
    "layer_weights",
    "variants_of",
    "zoneout_masks",
]
