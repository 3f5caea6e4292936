"""Gaussian MLP policy with a functional forward.

The policy is ``body`` (hidden layers) followed by ``head`` (the linear layer
producing the action mean) and a state-independent ``log_std``.  Parameters
live in a ``dict[str, Tensor]``; :meth:`GaussianMLPPolicy.forward` evaluates
the policy at any such dict without touching the module, so adapted weights
never mutate the meta-parameters.

Parameters may carry a leading *task* dimension: a dict whose tensors have
shape ``(N, *shape)`` evaluates N policies at once on observations of shape
``(N, M, obs_dim)``.  Dicts may mix stacked and shared tensors (ANIL stacks
only the head), because every op broadcasts over the leading dimension.

CAVIA (Zintgraf et al. 2019, ``context_size > 0``): ``context_size`` context
parameters, named ``context``, are concatenated to every observation before
the body, so ``body.0`` reads ``obs_dim + context_size`` inputs.  The context
is a per-task quantity, not a meta-parameter: the module's own ``context`` is
a constant zero (``requires_grad=False``), the value every task starts from,
and only the inner loop moves it (:meth:`GaussianMLPPolicy.context_names`).
Without a context (``context_size=0``, the default) the policy has exactly
the parameters it always had.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
CONTEXT = "context"
"""The name of CAVIA's context parameters."""


class GaussianMLPPolicy(nn.Module):
    """Diagonal Gaussian policy ``N(mu_theta(s), exp(log_std)^2)``.

    ``hidden_sizes=(64, 64)`` gives ``body.0`` (obs->64), ``body.1`` (64->64)
    and ``head`` (64->act_dim); with ``context_size=k`` also ``context`` (k,),
    zero, and ``body.0`` reads (obs, context) -> 64.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = 0.0,
        context_size: int = 0,
    ):
        super().__init__()
        if int(context_size) < 0:
            raise ValueError(f"context_size must be >= 0, got {context_size}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.context_size = int(context_size)
        sizes = (self.obs_dim + self.context_size, *self.hidden_sizes)
        self.body = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], self.act_dim)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(init_log_std)))
        for layer in (*self.body, self.head):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.context_size:  # after log_std in params(); the other parameters keep their order
            self.context = nn.Parameter(torch.zeros(self.context_size), requires_grad=False)

    # -- parameters ------------------------------------------------------------
    def params(self) -> Params:
        """The module's own parameters as an ordered dict (shared, not copied)."""
        return OrderedDict(self.named_parameters())

    def head_names(self) -> list[str]:
        return ["head.weight", "head.bias"]

    def context_names(self) -> list[str]:
        """CAVIA's per-task parameters (``["context"]``, or none): zero at every task's start, never meta-learned."""
        return [CONTEXT] if self.context_size else []

    def layer_names(self) -> list[str]:
        """Layer prefixes in order: ``body.0``, ..., ``head``."""
        return [f"body.{i}" for i in range(len(self.body))] + ["head"]

    # -- functional evaluation -------------------------------------------------
    def body_input(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """The body's input: ``obs (..., obs_dim)``, with the context appended when there is one.

        The context is ``(k,)`` (shared) or ``(N, k)`` (per task, with ``obs (N, ..., obs_dim)``).
        """
        if not self.context_size:
            return obs
        ctx = (self.params() if params is None else params)[CONTEXT]
        if ctx.dim() == 2:  # (N, k) -> (N, 1, ..., 1, k)
            ctx = ctx.reshape(ctx.shape[0], *([1] * (obs.dim() - 2)), ctx.shape[1])
        return torch.cat([obs, ctx.expand(*obs.shape[:-1], ctx.shape[-1])], dim=-1)

    def features(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Body output ``(..., hidden)`` for ``obs (..., obs_dim)``."""
        p = self.params() if params is None else params
        act = ACTIVATIONS[self.activation]
        x = self.body_input(obs, p)
        for i in range(len(self.body)):
            x = act(_linear(x, p[f"body.{i}.weight"], p[f"body.{i}.bias"]))
        return x

    def layer_outputs(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """Activations of every layer (body layers after the nonlinearity, then the head)."""
        p = self.params() if params is None else params
        act = ACTIVATIONS[self.activation]
        outs, x = [], self.body_input(obs, p)
        for i in range(len(self.body)):
            x = act(_linear(x, p[f"body.{i}.weight"], p[f"body.{i}.bias"]))
            outs.append(x)
        outs.append(_linear(x, p["head.weight"], p["head.bias"]))
        return outs

    def head_mean(self, features: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        p = self.params() if params is None else params
        return _linear(features, p["head.weight"], p["head.bias"])

    def forward(self, obs: Tensor, params: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(mean (..., act_dim), log_std (act_dim,) or (N, 1, act_dim))``."""
        p = self.params() if params is None else params
        mean = self.head_mean(self.features(obs, p), p)
        log_std = p["log_std"]
        if log_std.dim() == 2:  # stacked per task: (N, act_dim) -> (N, 1, act_dim)
            log_std = log_std.unsqueeze(-2)
        return mean, log_std


def _linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ W^T + b`` broadcasting over a leading task dim of W and b.

    ``x (..., M, in)`` with ``W (out, in)`` or ``W (N, out, in)``; ``b (out,)``
    or ``(N, out)``.
    """
    if bias.dim() == 2:
        bias = bias.unsqueeze(-2)
    return torch.matmul(x, weight.transpose(-1, -2)) + bias


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """``KL(p || q)`` of diagonal Gaussians, summed over the last dim."""
    var_p = torch.exp(2 * log_std_p)
    var_q = torch.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5
    return kl.sum(-1)


_LOG_2PI = float(torch.log(torch.tensor(2 * torch.pi)))


def stack_params(params: Mapping[str, Tensor], like: Mapping[str, Tensor], n: int,
                 names: Sequence[str] | None = None) -> Params:
    """Stack the tensors ``names`` (default: all of ``like``) of a partly stacked dict to ``(n, *shape)``.

    ``like`` holds the unstacked shapes (the meta-parameters); tensors already
    of shape ``(n, *shape)`` are kept, shared ones are expanded (views, no
    copy); tensors not in ``names`` pass through as they are.
    """
    out = OrderedDict(params)
    for k in like if names is None else names:
        v, ref = params[k], like[k]
        if v.shape == ref.shape:
            v = v.unsqueeze(0).expand(n, *ref.shape)
        elif v.shape != (n, *ref.shape):
            raise ValueError(f"parameter {k} has shape {tuple(v.shape)}, expected {tuple(ref.shape)} or "
                             f"({n}, {', '.join(map(str, ref.shape))})")
        out[k] = v
    return out


def flatten(params: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in params.values()])


def unflatten(flat: Tensor, like: Mapping[str, Tensor]) -> Params:
    out, i = OrderedDict(), 0
    for k, v in like.items():
        out[k] = flat[i : i + v.numel()].view_as(v)
        i += v.numel()
    if i != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, parameters need {i}")
    return out
