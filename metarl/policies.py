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


# -- the recurrent policy (RL²) ------------------------------------------------------

def rl2_inputs(obs: Tensor, prev_action: Tensor, prev_reward: Tensor, done: Tensor) -> Tensor:
    """RL²'s per-step input ``obs ⊕ previous action ⊕ previous reward ⊕ done flag``: ``(..., obs+act+2)``.

    ``obs (..., obs_dim)``, ``prev_action (..., act_dim)``, ``prev_reward (...)``, ``done (...)`` (1.0 on
    the first step of every episode of a trial but the first). The worker builds it step by step
    (:meth:`metarl.sampling.worker.RolloutWorker`), the learner for whole trials (:func:`trial_inputs`).
    """
    return torch.cat([obs, prev_action, prev_reward.unsqueeze(-1), done.unsqueeze(-1)], dim=-1)


def trial_inputs(obs: Tensor, actions: Tensor, rewards: Tensor, mask: Tensor, horizon: int) -> Tensor:
    """:func:`rl2_inputs` for whole trials laid out as in :mod:`metarl.episodes` (``(N, T, B, ...)``, episode
    ``k`` of a trial in steps ``[k * horizon, (k + 1) * horizon)``): ``(N, T, B, obs+act+2)``.

    The previous action and reward at step ``t`` are those of the last live step (``mask`` 1) before ``t``
    in the trial (zero before the first), as the worker carries them; ``done`` is 1.0 at ``t = k * horizon``,
    ``k >= 1``.
    """
    n, t, b = mask.shape
    idx = torch.arange(t, device=mask.device).view(1, t, 1).expand(n, t, b)
    last = torch.where(mask > 0, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    prev = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], dim=1)  # last live step before t
    have = (prev >= 0).to(rewards.dtype)
    at = prev.clamp(min=0)
    prev_a = actions.gather(1, at.unsqueeze(-1).expand(-1, -1, -1, actions.shape[-1])) * have.unsqueeze(-1)
    prev_r = rewards.gather(1, at) * have
    steps = torch.arange(t, device=mask.device)
    starts = (steps % int(horizon) == 0) & (steps > 0)
    done = starts.to(rewards.dtype).view(1, t, 1).expand(n, t, b)
    return rl2_inputs(obs, prev_a, prev_r, done)


def gru_cell(x: Tensor, h: Tensor, p: Mapping[str, Tensor], prefix: str = "gru.") -> Tensor:
    """One GRU step with ``torch.nn.GRU``'s gates (reset, update, new; rows of ``weight_ih`` in that order).

    ``x (..., in)``, ``h (..., H)``; weights ``(3H, in)``, ``(3H, H)`` or stacked per task ``(N, 3H, ...)``
    with ``x (N, M, in)``. Returns ``h' (..., H)``.
    """
    return gru_update(_linear(x, p[prefix + "weight_ih"], p[prefix + "bias_ih"]), h, p, prefix)


def gru_loop(x: Tensor, h: Tensor, p: Mapping[str, Tensor], mask: Tensor | None = None,
             prefix: str = "gru.") -> tuple[Tensor, Tensor]:
    """:func:`gru_cell` over a sequence ``x (T, *batch, in)`` from ``h (*batch, H)``, step by step: ``(states
    (T, *batch, H), h after the last step)``. The input gates are one product for the whole sequence; where
    ``mask (T, *batch)`` is 0 the state stays as it was. Weights shared or stacked per task (``x (T, N, M,
    in)``)."""
    gi = _linear(x, p[prefix + "weight_ih"], p[prefix + "bias_ih"])
    keep = [None] * x.shape[0] if mask is None else (mask > 0).unsqueeze(-1).unbind(0)
    states = []
    for gi_t, keep_t in zip(gi.unbind(0), keep, strict=True):  # unbind: one backward for all steps
        h_new = gru_update(gi_t, h, p, prefix)
        h = h_new if keep_t is None else torch.where(keep_t, h_new, h)
        states.append(h)
    return torch.stack(states), h


def gru_sequence(x: Tensor, h: Tensor, p: Mapping[str, Tensor], prefix: str = "gru.") -> tuple[Tensor, Tensor]:
    """:func:`gru_cell` over a whole sequence ``x (T, *batch, in)`` from ``h (*batch, H)`` with shared
    weights, in ``torch.gru``'s loop over time (no step may be masked: :func:`gru_loop` otherwise):
    ``(states (T, *batch, H), h after the last step)``. On the CPU it computes the same operations in the
    same order as :func:`gru_loop`, so its outputs and gradients equal the loop's to the bit
    (``tests/test_rl2.py`` pins it), and its forward and backward take about a tenth less time."""
    steps, batch = x.shape[0], x.shape[1:-1]
    weights = [p[prefix + k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    out, last = torch.gru(x.reshape(steps, -1, x.shape[-1]), h.reshape(1, -1, h.shape[-1]), weights, True, 1, 0.0,
                          False, False, False)
    return out.reshape(steps, *batch, h.shape[-1]), last.reshape(*batch, h.shape[-1])


def gru_update(gi: Tensor, h: Tensor, p: Mapping[str, Tensor], prefix: str = "gru.") -> Tensor:
    """:func:`gru_cell` from the input's gate pre-activations ``gi = x W_ih^T + b_ih (..., 3H)`` (computed
    for a whole sequence at once by :meth:`GaussianGRUPolicy.forward`)."""
    gh = _linear(h, p[prefix + "weight_hh"], p[prefix + "bias_hh"])
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    new = torch.tanh(i_n + r * h_n)
    return new + z * (h - new)


class GaussianGRUPolicy(nn.Module):
    """RL²'s recurrent diagonal Gaussian policy (Duan et al. 2016).

    The input :func:`rl2_inputs` (``obs_dim + act_dim + 2``) goes through ``body`` (the MLP layers of
    ``hidden_sizes``, named as :class:`GaussianMLPPolicy`'s), a GRU of ``gru_size`` (``gru.weight_ih``,
    ``gru.weight_hh``, ``gru.bias_ih``, ``gru.bias_hh``, laid out as ``torch.nn.GRU``'s layer 0) and
    ``head`` (linear to the action mean), with a state-independent ``log_std``. The hidden state is
    explicit: zero at a trial's start, carried across the ``episodes_per_trial`` episodes of a trial.
    """

    recurrent = True

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (64,), activation: str = "tanh",
                 gru_size: int = 64, init_log_std: float = 0.0, episodes_per_trial: int = 1):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if int(gru_size) < 1 or int(episodes_per_trial) < 1:
            raise ValueError(f"gru_size and episodes_per_trial must be >= 1, got {gru_size}, {episodes_per_trial}")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.in_dim = self.obs_dim + self.act_dim + 2
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.activation = activation
        self.gru_size = int(gru_size)
        self.episodes_per_trial = int(episodes_per_trial)
        self.context_size = 0
        sizes = (self.in_dim, *self.hidden_sizes)
        self.body = nn.ModuleList(nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        self.gru = nn.GRUCell(sizes[-1], self.gru_size)
        self.head = nn.Linear(self.gru_size, self.act_dim)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(init_log_std)))
        for layer in (*self.body, self.head):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def params(self) -> Params:
        """The module's own parameters as an ordered dict (shared, not copied)."""
        return OrderedDict(self.named_parameters())

    def head_names(self) -> list[str]:
        return ["head.weight", "head.bias"]

    def context_names(self) -> list[str]:
        return []

    def layer_names(self) -> list[str]:
        """Layer prefixes in order: ``body.0``, ..., ``gru``, ``head``."""
        return [f"body.{i}" for i in range(len(self.body))] + ["gru", "head"]

    def initial_hidden(self, *batch: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The hidden state at a trial's start: zeros ``(*batch, gru_size)``, on the policy's device."""
        return torch.zeros(*batch, self.gru_size, dtype=dtype, device=self.log_std.device)

    def features(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """The body's output ``(..., hidden_sizes[-1])`` for inputs ``x (..., in_dim)`` (:func:`rl2_inputs`)."""
        p = self.params() if params is None else params
        act = ACTIVATIONS[self.activation]
        for i in range(len(self.body)):
            x = act(_linear(x, p[f"body.{i}.weight"], p[f"body.{i}.bias"]))
        return x

    def step(self, x: Tensor, hidden: Tensor, params: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``x (..., in_dim)`` (:func:`rl2_inputs`), ``hidden (..., gru_size)`` ->
        ``(mean (..., act_dim), hidden')``. Stacked parameters ``(N, ...)`` take ``x (N, M, in_dim)``."""
        p = self.params() if params is None else params
        h = gru_cell(self.features(x, p), hidden, p)
        return _linear(h, p["head.weight"], p["head.bias"]), h

    def forward(self, inputs: Tensor, params: Mapping[str, Tensor] | None = None, hidden: Tensor | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run a sequence: ``inputs (T, *batch, in_dim)`` -> ``(mean (T, *batch, act_dim), log_std, hidden)``.

        ``hidden (*batch, gru_size)`` is the state before step 0 (None: zeros, a trial's start); the returned
        one is the state after the last step. Where ``mask (T, *batch)`` is 0 (steps after an episode
        terminated) the state is left as it was, as the worker does, so those steps change nothing. The
        same arithmetic as :meth:`step` at every step; the body, the input gates and the head run on the
        whole sequence at once, only the recurrence step by step (:func:`gru_sequence` with shared weights
        and no masked step, else :func:`gru_loop`).
        """
        p = self.params() if params is None else params
        h = self.initial_hidden(*inputs.shape[1:-1], dtype=inputs.dtype) if hidden is None else hidden
        feats = self.features(inputs, p)
        if p["gru.weight_hh"].dim() == 2 and (mask is None or bool((mask > 0).all())):
            states, h = gru_sequence(feats, h, p)
        else:
            states, h = gru_loop(feats, h, p, mask)
        mean = _linear(states, p["head.weight"], p["head.bias"])
        log_std = p["log_std"]
        if log_std.dim() == 2:  # stacked per task: (N, act_dim) -> (N, 1, act_dim)
            log_std = log_std.unsqueeze(-2)
        return mean, log_std, h
