"""The inner loop: the one place where parameters are adapted to a task.

``adapt`` takes meta-parameters and every task's training episodes and
returns per-task adapted parameters, stacked along a leading task dim.  All
tasks are adapted at once: the meta-parameters are expanded to ``(N, ...)``,
the per-task VPG losses are summed, and one ``autograd.grad`` yields every
task's gradient (tasks do not share adapted entries, so the gradient of the
sum w.r.t. task i's slice is task i's gradient).

* MAML: every parameter is adapted (``names=None``).
* ANIL: only the head is adapted (``names=policy.head_names()``, the config's
  ``policy.adapt: head``, see :func:`adapt_names`); the body's
  features are computed once per batch and reused across inner steps, and the
  body parameters pass through untouched (not stacked, not copied).
* CAVIA: only the context parameters on the policy's input are adapted
  (``policy.adapt: context``); they start every task at zero (the policy's
  constant ``context``, which no outer loop updates).
* First order: inner gradients are not differentiated (``first_order=True``).
* The inner-update rule (``lr``) comes from :mod:`metarl.inner_updates`: a
  scalar step (``sgd``), per-entry step sizes (``meta_sgd``) or any callable
  ``(name, grad) -> step`` (``kronecker``, a rule loaded with ``--module``).
  Every rule is applied by :func:`metarl.inner_updates.apply_step`; the loop
  itself does not know which one it runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from metarl.episodes import EpisodeBatch
from metarl.inner_updates.base import StepSize, apply_step
from metarl.losses import vpg_loss_of_outputs
from metarl.policies import GaussianMLPPolicy, Params, stack_params


def vpg_loss(policy: GaussianMLPPolicy, params: Mapping[str, Tensor], batch: EpisodeBatch,
             advantages: Tensor, features: Tensor | None = None, reference_logp: Tensor | None = None) -> Tensor:
    """Per-task VPG loss ``-mean_t log pi(a_t|s_t) A_t`` over masked steps: ``(N,)``.

    ``advantages``: (N, T, B), treated as constants.  ``features``: optional
    precomputed body output ``(N, T*B, hidden)`` (ANIL).  ``reference_logp``
    (N, T, B): the sampling policy's log-probabilities (constants); the loss is
    then ProMP's low-variance-curvature objective ``-mean_t (pi / pi_ref) A_t``,
    whose value and gradient at ``pi = pi_ref`` are the VPG loss's.
    """
    if features is None:
        mean, log_std = policy(batch.flat_obs(), params)
    else:
        mean = policy.head_mean(features, params)
        log_std = params["log_std"]
        if log_std.dim() == 2:
            log_std = log_std.unsqueeze(-2)
    return vpg_loss_of_outputs(mean, log_std, batch, advantages, reference_logp)


def adapt(
    policy: GaussianMLPPolicy,
    params: Mapping[str, Tensor],
    batch: EpisodeBatch,
    advantages: Tensor,
    lr: StepSize,
    steps: int = 1,
    first_order: bool = False,
    names: Sequence[str] | None = None,
    reference_logp: Tensor | None = None,
) -> Params:
    """Adapt ``params`` to each of the batch's N tasks with ``steps`` VPG steps.

    Returns a dict where the adapted entries have shape ``(N, *shape)`` and
    the others are the meta-parameters themselves (same tensor objects).
    With ``first_order=False`` the result is differentiable w.r.t. ``params``
    (and the tensors of ``lr``) to second order.  The inputs are never modified.
    ``reference_logp`` (N, T, B) switches every step's loss to the LVC
    objective against those log-probabilities (see :func:`vpg_loss`).
    """
    names = list(params) if names is None else list(names)
    unknown = [k for k in names if k not in params]
    if unknown:
        raise KeyError(f"cannot adapt unknown parameters {unknown}")
    with torch.enable_grad():
        return _adapt(policy, params, batch, advantages, lr, steps, first_order, names, reference_logp)


def _adapt(policy: GaussianMLPPolicy, params: Mapping[str, Tensor], batch: EpisodeBatch, advantages: Tensor,
           lr: StepSize, steps: int, first_order: bool, names: list[str],
           reference_logp: Tensor | None = None) -> Params:
    n = batch.num_tasks
    ref = policy.params()
    # Stack the adapted entries to (N, ...); entries already stacked (a later
    # step at evaluation time) are kept.
    fast = stack_params(params, ref, n, names)
    if steps == 0:
        return fast
    for k in names:  # constants (e.g. at evaluation): differentiate w.r.t. a copy
        if not fast[k].requires_grad:
            fast[k] = fast[k].detach().clone().requires_grad_()
    # the body's features are fixed unless the body or the context on its input (CAVIA) adapts
    body_fixed = not any(k.startswith("body.") or k in policy.context_names() for k in names)
    features = policy.features(batch.flat_obs(), params) if body_fixed else None
    update = getattr(lr, "inner_step", None)  # a rule that needs more than the gradient (BLUR) steps itself
    for _ in range(steps):
        if update is not None:
            fast = update(policy, fast, batch, advantages, names, not first_order, reference_logp)
            continue
        loss = vpg_loss(policy, fast, batch, advantages, features, reference_logp).sum()
        grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=not first_order)
        fast = OrderedDict(fast)
        for k, g in zip(names, grads):
            fast[k] = fast[k] - apply_step(lr, k, g)
    return fast


ADAPT_MODES = {  # policy.adapt -> the method's name (config errors, the run's mode text)
    "all": "MAML",
    "head": "ANIL",
    "head_log_std": "ANIL, log-std adapted too",
    "context": "CAVIA",
}


def adapt_names(policy: GaussianMLPPolicy, mode: str) -> list[str]:
    """Parameter names adapted in the inner loop for ``mode`` (a key of :data:`ADAPT_MODES`).

    ``all`` (MAML) | ``head`` (ANIL: the last linear layer) | ``head_log_std``
    (ANIL with the state-independent log-std adapted too, as MAML adapts it:
    the head then sets both moments of the Gaussian per task) | ``context``
    (CAVIA: only the context parameters on the policy's input, which the
    policy must have, ``context_size > 0``).
    """
    if mode == "all":
        return list(policy.params())
    if mode == "head":
        return policy.head_names()
    if mode == "head_log_std":
        return [*policy.head_names(), "log_std"]
    if mode == "context":
        if not policy.context_names():
            raise ValueError("policy.adapt: context needs a policy with context parameters (context_size > 0)")
        return policy.context_names()
    modes = [m for m in ADAPT_MODES if m != "context" or policy.context_names()]  # the modes this policy has
    raise ValueError(f"policy.adapt must be one of {', '.join(modes)}, got {mode!r}")
