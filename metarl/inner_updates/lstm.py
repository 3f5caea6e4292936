"""``lstm``: a learned coordinate-wise LSTM optimizer (Andrychowicz et al. 2016).

Every adapted coordinate (each entry of each adapted parameter, per task) is
fed to one shared two-layer LSTM of ``lstm.hidden_size`` units:

* input: the coordinate's inner gradient ``g``, preprocessed by log-magnitude
  and sign (the paper's appendix A, ``k = lstm.preprocess_k``):
  ``(max(log(|g| + eps) / k, -1), clip(e^k g, -1, 1))``;
* state: ``(h1, c1, h2, c2)`` per coordinate, zero at the start of every
  adaptation (so every task starts from zero) and carried across the inner
  steps of one adaptation;
* output: ``lstm.output_scale * (h2 · w_out + b_out)``.

The step subtracted from the coordinate is that output, plus ``inner_lr * g``
when ``lstm.residual`` (the default): the output weights start at zero, so the
rule starts as the plain gradient step and the LSTM learns a correction
(with ``residual: false`` it is the paper's pure LSTM step, from a random
start). The LSTM's weights are meta-parameters (``lstm/...``) learned by the
outer loop like Meta-SGD's step sizes. Under ``algo.first_order`` the inner
gradients are constants, so the LSTM's gradient input carries no second
derivatives (as the paper drops them). The outer step's Gauss-Newton
curvature does not cover the rule (the double-backward product is used).

Test-time adaptation (``metarl evaluate``) adapts one step at a time, so the
LSTM state starts at zero for each evaluation step.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarl.inner_updates.base import InnerUpdate, StepSize

MAX_HIDDEN = 1024
LAYERS = ("l1", "l2")


@dataclass
class LSTMSettings:
    hidden_size: int = 20
    """Units of each of the two LSTM layers (the paper: 20)."""
    preprocess_k: float = 10.0
    """k of the log-magnitude and sign preprocessing (the paper: 10)."""
    output_scale: float = 0.1
    """Scale of the LSTM's output (the paper: 0.1)."""
    residual: bool = True
    """Add the plain step ``inner_lr * g`` to the LSTM's output (which starts at zero): the rule starts as SGD.
    false: the paper's pure LSTM step."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        need(1 <= self.hidden_size <= MAX_HIDDEN, "hidden_size", self.hidden_size, f"must be in [1, {MAX_HIDDEN}]")
        need(self.preprocess_k > 0, "preprocess_k", self.preprocess_k, "must be > 0")
        need(self.output_scale > 0, "output_scale", self.output_scale, "must be > 0")


def log_and_sign(g: Tensor, k: float) -> Tensor:
    """The paper's gradient preprocessing: ``(*shape) -> (*shape, 2)``."""
    magnitude = torch.clamp(torch.log(g.abs() + 1e-20) / k, min=-1.0)
    sign = torch.clamp(g * math.exp(k), -1.0, 1.0)
    return torch.stack([magnitude, sign], dim=-1)


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM cell (torch.nn.LSTM's gate order i, f, g, o) on any leading shape: ``x (..., in)``,
    ``h, c (..., H)``."""
    gates = x @ w_ih.transpose(0, 1) + h @ w_hh.transpose(0, 1) + bias
    i, f, cand, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
    return torch.sigmoid(o) * torch.tanh(c), c


class LSTMStep:
    """The rule for one adaptation: per-parameter LSTM state, zero at the start, carried across steps."""

    def __init__(self, weights: Mapping[str, Tensor], settings: LSTMSettings, inner_lr: float):
        self.w, self.settings, self.inner_lr = weights, settings, inner_lr
        self.state: dict[str, tuple[Tensor, ...]] = {}

    def __call__(self, name: str, grad: Tensor) -> Tensor:
        hidden = self.settings.hidden_size
        x = log_and_sign(grad, self.settings.preprocess_k).to(self.w["l1/w_ih"].dtype)
        if name in self.state:
            h1, c1, h2, c2 = self.state[name]
        else:
            h1 = c1 = h2 = c2 = x.new_zeros(*grad.shape, hidden)
        h1, c1 = lstm_cell(x, h1, c1, self.w["l1/w_ih"], self.w["l1/w_hh"], self.w["l1/bias"])
        h2, c2 = lstm_cell(h1, h2, c2, self.w["l2/w_ih"], self.w["l2/w_hh"], self.w["l2/bias"])
        self.state[name] = (h1, c1, h2, c2)
        out = self.settings.output_scale * (h2 @ self.w["out/weight"] + self.w["out/bias"])
        return out + self.inner_lr * grad if self.settings.residual else out


class LSTMOptimizer(InnerUpdate):
    Settings = LSTMSettings
    section = "lstm"
    prefix = "lstm/"
    learned = True
    gauss_newton = False

    def init_params(self, params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        """torch.nn.LSTM's initialisation (uniform in ±1/sqrt(H), from torch's generator, which the run seeds);
        the output layer at zero (with ``residual``) or like the others."""
        hidden = self.settings.hidden_size
        dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
        device = next(iter(params.values())).device if params else None
        bound = 1.0 / math.sqrt(hidden)
        shapes = {"l1/w_ih": (4 * hidden, 2), "l1/w_hh": (4 * hidden, hidden), "l1/bias": (4 * hidden,),
                  "l2/w_ih": (4 * hidden, hidden), "l2/w_hh": (4 * hidden, hidden), "l2/bias": (4 * hidden,),
                  "out/weight": (hidden,), "out/bias": ()}
        out: dict[str, Tensor] = OrderedDict()
        for key, shape in shapes.items():
            if key.startswith("out/") and self.settings.residual:
                t = torch.zeros(shape, dtype=dtype, device=device)
            else:
                t = torch.empty(shape, dtype=dtype, device=device).uniform_(-bound, bound)
            out[key] = t.requires_grad_()
        return out

    def step(self, learned: Mapping[str, Tensor]) -> StepSize:
        return LSTMStep(learned, self.settings, self.inner_lr)

    def scalars(self, learned: Mapping[str, Tensor]) -> dict[str, float]:
        """The output layer's weight norm (zero: the rule is still the plain step, under ``residual``)."""
        return {"lstm/out_weight_norm": float(torch.linalg.norm(learned["out/weight"].detach()))} if learned else {}

    def describe(self) -> str:
        s = self.settings
        base = f"inner lr {self.inner_lr} + " if s.residual else ""
        return f"learned LSTM optimizer ({base}{s.output_scale} x 2-layer LSTM of {s.hidden_size})"
