"""``blur``: a bidirectional learned update rule (Sandler et al. 2021, "Meta-Learning Bidirectional Update
Rules"), on the policy's MLP.

Each neuron keeps ``k = blur.states`` states. With ``a`` the observation and
``W_l, b_l`` the layers (``body.*``, then ``head``):

* forward states: ``P_0 = [obs, 0, ..., 0]`` (a ``units × k`` matrix per sample; stored
  state-major, ``(..., k, units)``, so that a layer's weight multiplies every state in one product), then per
  layer ``Z_l = (W_l P_l + b_l e_0ᵀ) F`` and ``P_{l+1} = act(Z_l)`` (the head's
  ``Z`` is linear);
* the error injected at the output is the inner loss's policy-gradient signal
  ``e = ∂L/∂μ`` (the Gaussian mean; ``L`` the VPG loss of the real policy):
  ``Q_L = e ⊗ inject``;
* backward states: ``Q_l = (W_{l+1}ᵀ Q_{l+1} B) ⊙ act'(Z_l)``;
* each synapse updates by a Hebbian outer product of its pre- and
  post-synaptic states weighted by the genome's ``H``:
  ``ΔW_l[j, i] = Σ_steps Σ_{c,d} H[c, d] P_l[i, c] Q_l[j, d]``, a bias as a
  synapse from a neuron whose state is ``e_0``; ``W' = W - inner_lr ΔW``.

The genome ``(F, B, H, inject)`` is ``3k² + k`` numbers (14 for k = 2), shared
by every layer, meta-learned by the gradient outer loops (the rule is
differentiable) under ``blur/...``. It starts at the *gradient genome* ``F = B
= I``, ``H = e_0 e_0ᵀ``, ``inject = e_0``, where one inner step is exactly one
plain policy-gradient step. Parameters that are not synapses (``log_std``)
take the plain gradient step. The outer step's Gauss-Newton curvature does not
cover the rule (the double-backward product is used).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarl.episodes import EpisodeBatch
from metarl.inner_updates.base import InnerUpdate, StepSize
from metarl.losses import vpg_loss_of_outputs
from metarl.policies import ACTIVATIONS, GaussianMLPPolicy

MAX_STATES = 8
GENOME = ("forward", "backward", "hebbian", "inject")


@dataclass
class BLURSettings:
    states: int = 2
    """States per neuron, k (the genome has 3k² + k numbers)."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        need(1 <= self.states <= MAX_STATES, "states", self.states, f"must be in [1, {MAX_STATES}]")


def gradient_genome(k: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> dict[str, Tensor]:
    """The genome whose inner step is the plain gradient step (on ``device``, CPU by default)."""
    e0 = torch.zeros(k, dtype=dtype, device=device)
    e0[0] = 1.0
    return OrderedDict([("forward", torch.eye(k, dtype=dtype, device=device)),
                        ("backward", torch.eye(k, dtype=dtype, device=device)),
                        ("hebbian", torch.outer(e0, e0)), ("inject", e0)])


def _slope(activation: str, z: Tensor) -> Tensor:
    if activation == "tanh":
        t = torch.tanh(z)
        return 1 - t * t
    return (z > 0).to(z.dtype)


def _mix(x: Tensor, genome_matrix: Tensor) -> Tensor:
    """States mixed by a genome matrix ``A``: ``x (..., k, units)`` -> ``Σ_c A[c, d] x[..., c, :]`` at ``d``."""
    return torch.einsum("cd,...cu->...du", genome_matrix, x)


def _linear(p: Tensor, w: Tensor) -> Tensor:
    """``W`` applied to every state: ``p (N, M, k, in)``, ``w (out, in)`` shared or ``(N, out, in)`` per task ->
    ``(N, M, k, out)``, one matrix product either way (the states are contiguous rows)."""
    if w.dim() == 2:
        return p @ w.T
    n, m, k, i = p.shape
    return torch.bmm(p.reshape(n, m * k, i), w.transpose(1, 2)).reshape(n, m, k, -1)


def _linear_transposed(q: Tensor, w: Tensor) -> Tensor:
    """``Wᵀ`` applied to every backward state: ``q (N, M, k, out)`` -> ``(N, M, k, in)``."""
    if w.dim() == 2:
        return q @ w
    n, m, k, o = q.shape
    return torch.bmm(q.reshape(n, m * k, o), w).reshape(n, m, k, -1)


def _synapse_product(pre: Tensor, post: Tensor, weight: Tensor) -> Tensor:
    """``ΔW[j, i] = Σ_m Σ_{c,d} H[c,d] P[m,c,i] Q[m,d,j]`` per task: ``pre (N, M, k, in)``,
    ``post (N, M, k, out)`` -> ``(N, out, in)``, as one batched product over the (sample, state) rows."""
    n, m, k, i = pre.shape
    mixed = _mix(pre, weight).reshape(n, m * k, i)  # Σ_c H[c, d] P[m, c, i] at (m, d)
    return torch.bmm(post.reshape(n, m * k, -1).transpose(1, 2), mixed)


class BLURStep:
    """The rule with one genome: :meth:`inner_step` takes one whole inner step (it needs the layers' states, not
    only the gradient)."""

    def __init__(self, genome: Mapping[str, Tensor], inner_lr: float):
        self.g, self.inner_lr = genome, inner_lr

    def inner_step(self, policy: GaussianMLPPolicy, fast: dict[str, Tensor], batch: EpisodeBatch,
                   advantages: Tensor, names: Sequence[str], create_graph: bool,
                   reference_logp: Tensor | None = None) -> dict[str, Tensor]:
        act = ACTIVATIONS[policy.activation]
        obs = batch.flat_obs()  # (N, M, obs_dim)
        mean, log_std = policy(obs, fast)
        loss = vpg_loss_of_outputs(mean, log_std, batch, advantages, reference_logp).sum()
        others = [k for k in names if not k.endswith((".weight", ".bias"))]  # log_std, a context: the plain step
        grads = torch.autograd.grad(loss, [mean] + [fast[k] for k in others], create_graph=create_graph)
        error = grads[0]  # (N, M, act_dim): the policy-gradient signal at the output
        forward, backward, hebbian, inject = (self.g[k] for k in GENOME)
        k = forward.shape[0]
        e0 = torch.zeros(k, dtype=obs.dtype, device=obs.device)
        e0[0] = 1.0
        state0 = e0.unsqueeze(-1)  # (k, 1): a value put in state 0 only
        layers = policy.layer_names()
        # states are kept state-major, (N, M, k, units): each layer's weight multiplies all k states of all samples
        # in one matrix product
        pres, pre_acts = [], []
        p = policy.body_input(obs, fast).unsqueeze(-2) * state0  # (N, M, k, inputs): obs (and a CAVIA context)
        for i, layer in enumerate(layers):
            w, b = fast[f"{layer}.weight"], fast[f"{layer}.bias"]
            pres.append(p)
            bias = (b.unsqueeze(-2).unsqueeze(-2) if b.dim() == 2 else b) * state0  # (N, 1, k, out) or (k, out)
            z = _mix(_linear(p, w) + bias, forward)
            pre_acts.append(z)
            if i < len(layers) - 1:
                p = act(z)
        out = OrderedDict(fast)
        q = error.unsqueeze(-2) * inject.unsqueeze(-1)  # (N, M, k, act_dim)
        lowest = min((i for i, layer in enumerate(layers) if f"{layer}.weight" in names or f"{layer}.bias" in names),
                     default=len(layers))
        for i in reversed(range(lowest, len(layers))):
            layer = layers[i]
            if f"{layer}.weight" in names:
                out[f"{layer}.weight"] = fast[f"{layer}.weight"] - self.inner_lr * _synapse_product(pres[i], q, hebbian)
            if f"{layer}.bias" in names:
                delta = torch.einsum("nmdj,d->nj", q, hebbian[0])  # a synapse from a neuron in state e_0
                out[f"{layer}.bias"] = fast[f"{layer}.bias"] - self.inner_lr * delta
            if i > lowest:
                q = _mix(_linear_transposed(q, fast[f"{layer}.weight"]), backward) * _slope(policy.activation,
                                                                                          pre_acts[i - 1])
        for name, g in zip(others, grads[1:]):
            out[name] = fast[name] - self.inner_lr * g
        return out

    def __call__(self, name: str, grad: Tensor) -> Tensor:
        """A parameter stepped outside :meth:`inner_step` (none in the inner loop) takes the plain step."""
        return self.inner_lr * grad


class BLUR(InnerUpdate):
    Settings = BLURSettings
    section = "blur"
    prefix = "blur/"
    learned = True
    gauss_newton = False

    def init_params(self, params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        dtype = next(iter(params.values())).dtype if params else torch.get_default_dtype()
        device = next(iter(params.values())).device if params else None
        return OrderedDict((k, v.requires_grad_())
                           for k, v in gradient_genome(self.settings.states, dtype, device).items())

    def step(self, learned: Mapping[str, Tensor]) -> StepSize:
        return BLURStep(learned, self.inner_lr)

    def scalars(self, learned: Mapping[str, Tensor]) -> dict[str, float]:
        """The genome's distance from the gradient genome (0: still the plain gradient step)."""
        if not learned:
            return {}
        first = next(iter(learned.values()))
        ref = gradient_genome(self.settings.states, first.dtype, first.device)
        dist = torch.sqrt(sum(((learned[k].detach() - ref[k]) ** 2).sum() for k in GENOME))
        return {"blur/genome_distance": float(dist)}

    def describe(self) -> str:
        return f"BLUR learned bidirectional rule ({self.settings.states} states per neuron), inner lr {self.inner_lr}"
