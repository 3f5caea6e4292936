"""Proximal outer loops: ProMP (Rothfuss et al. 2019) and MAML-PPO.

Both take several Adam steps per meta-iteration on a clipped
post-adaptation surrogate, reusing the same batch, and differentiate through
the inner loop (second order unless ``first_order``).  With ``N`` tasks,
``T`` steps and ``B`` episodes each, one outer step holds as constants:

* ``old_valid_logp (N, T, B)``: log-probabilities of the valid actions under
  the adapted policies that collected them;
* ``old_train_logp (N, T, B)`` and the pre-update means / log-std on the
  train observations: the meta-policy that collected ``train``.

and for ``epochs`` Adam steps of the meta-parameters ``theta`` minimises::

    J(theta) = -mean_i mean_t min(r A, clip(r, 1 - eps, 1 + eps) A)       (valid batch, adapted(theta))
               + kl_coef * mean_i mean_t KL(pi_theta_old || pi_theta)    (train batch, ProMP only)

where ``r = pi_adapted(theta)(a|s) / pi_old_adapted(a|s)``.

**ProMP's inner loop** is the low-variance curvature (LVC) objective: the
inner loss is ``-mean_t (pi_theta(a|s) / pi_theta_old(a|s)) A`` with the
denominator the sampling policy's constant log-probabilities.  At
``theta = theta_old`` its value and gradient are those of the ordinary VPG
loss (so the adapted policies that were rolled out are the same), but its
Hessian is ``E[(grad^2 log pi + grad log pi grad log pi^T) A]``, the
low-variance estimate of the paper; the meta-gradient through the inner
step uses it.  **MAML-PPO** keeps the ordinary VPG inner loss.

The KL coefficient follows the paper's rule when ``adaptive_kl`` is on:
halved when the measured pre-update KL is below ``target_kl / 1.5``,
doubled above ``1.5 * target_kl``.  Adam's moments and step count and the
KL coefficient are part of :meth:`ProximalLearner.state_dict`, so a resumed
run continues exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from metarl.adaptation import adapt
from metarl.algos.base import MAX_PASSES, MetaLearner, StepResult
from metarl.episodes import EpisodeBatch, masked_task_mean
from metarl.policies import Params, gaussian_kl, gaussian_log_prob

STATE_PREFIX = "outer_state/"


@dataclass
class ProximalSettings:
    """The proximal outer loops' settings (the config's ``proximal`` section).

    Defaults are ProMP's locomotion settings (the ProMP authors' run script
    for HalfCheetahRandDirec: Adam lr 1e-3, 5 steps per batch, clip 0.3,
    fixed inner-KL coefficient 5e-4, target 0.01).
    """

    lr: float = 1e-3
    """Adam step size of the meta-parameters."""
    epochs: int = 5
    """Adam steps per meta-iteration, all on the same batch."""
    clip_eps: float = 0.3
    """Likelihood-ratio clip range of the post-adaptation surrogate."""
    kl_coef: float = 5e-4
    """ProMP: initial coefficient of the KL penalty between pre-update policies."""
    target_kl: float = 0.01
    """ProMP: target of that KL for the adaptive coefficient."""
    adaptive_kl: bool = False
    """ProMP: adapt the coefficient (halve below target/1.5, double above 1.5 target) after each step."""
    adam_beta1: float = 0.9
    """Adam's first-moment decay."""
    adam_beta2: float = 0.999
    """Adam's second-moment decay."""
    adam_eps: float = 1e-8
    """Adam's denominator constant."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        """Range checks: ``need(ok, key, value, what)`` (the key without the section)."""
        need(self.lr > 0, "lr", self.lr, "must be > 0")
        need(1 <= self.epochs <= MAX_PASSES, "epochs", self.epochs, f"must be in [1, {MAX_PASSES}]")
        need(self.clip_eps > 0, "clip_eps", self.clip_eps, "must be > 0")
        need(self.kl_coef >= 0, "kl_coef", self.kl_coef, "must be >= 0")
        need(self.target_kl > 0, "target_kl", self.target_kl, "must be > 0")
        need(0 <= self.adam_beta1 < 1, "adam_beta1", self.adam_beta1, "must be in [0, 1)")
        need(0 <= self.adam_beta2 < 1, "adam_beta2", self.adam_beta2, "must be in [0, 1)")
        need(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")


def clipped_surrogate(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, clip_eps: float) -> Tensor:
    """PPO's clipped surrogate loss ``-mean_tasks mean_t min(r A, clip(r) A)`` (a scalar); all ``(N, T, B)``."""
    ratio = torch.exp(logp - old_logp)
    clipped = torch.minimum(ratio * adv, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    return -masked_task_mean(clipped, mask).mean()


def clip_fraction(logp: Tensor, old_logp: Tensor, mask: Tensor, clip_eps: float) -> float:
    """Fraction of the real steps whose ratio lies outside ``[1 - eps, 1 + eps]``."""
    ratio = torch.exp(logp - old_logp)
    outside = ((ratio - 1.0).abs() > clip_eps).to(mask.dtype)
    return float((outside * mask).sum() / mask.sum().clamp(min=1))


def next_kl_coef(coef: float, kl: float, target: float) -> float:
    """The paper's adaptive rule: halve below ``target / 1.5``, double above ``1.5 * target``."""
    if kl < target / 1.5:
        return coef / 2.0
    if kl > target * 1.5:
        return coef * 2.0
    return coef


def move_moments(learner: Any, device: torch.device) -> None:
    """Move a learner's Adam moments (``adam_m``, ``adam_v``: tensors by name) to ``device``."""
    learner.adam_m = OrderedDict((k, t.to(device)) for k, t in learner.adam_m.items())
    learner.adam_v = OrderedDict((k, t.to(device)) for k, t in learner.adam_v.items())


def adam_state(learner: Any) -> dict[str, Tensor]:
    """A learner's Adam moments and step count as checkpoint entries under :data:`STATE_PREFIX`."""
    out = {f"{STATE_PREFIX}adam_m/{k}": t.clone() for k, t in learner.adam_m.items()}
    out.update({f"{STATE_PREFIX}adam_v/{k}": t.clone() for k, t in learner.adam_v.items()})
    out[f"{STATE_PREFIX}adam_step"] = torch.tensor(learner.adam_step, dtype=torch.int64, device="cpu")  # a counter
    return out


def load_adam_state(learner: Any, state: Mapping[str, Tensor]) -> None:
    """Restore what :func:`adam_state` wrote (in place, on the moments' device)."""
    with torch.no_grad():
        for k, t in learner.adam_m.items():
            t.copy_(state[f"{STATE_PREFIX}adam_m/{k}"])
        for k, t in learner.adam_v.items():
            t.copy_(state[f"{STATE_PREFIX}adam_v/{k}"])
    learner.adam_step = int(state[f"{STATE_PREFIX}adam_step"])


def adam_update(params: Sequence[Tensor], grads: Sequence[Tensor], m: Sequence[Tensor], v: Sequence[Tensor],
                step: int, lr: float, beta1: float, beta2: float, eps: float) -> None:
    """One Adam step in place (Kingma & Ba, bias-corrected); ``step`` is the 1-based step count."""
    c1 = 1.0 - beta1**step
    c2 = 1.0 - beta2**step
    with torch.no_grad():
        for p, g, mi, vi in zip(params, grads, m, v, strict=True):
            mi.mul_(beta1).add_(g, alpha=1.0 - beta1)
            vi.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            p.sub_(lr * (mi / c1) / ((vi / c2).sqrt() + eps))


@dataclass
class Constants:
    """What one outer step holds fixed: the sampling policies' outputs and the advantages."""

    train_adv: Tensor
    valid_adv: Tensor
    old_valid_logp: Tensor  # (N, T, B)
    old_train_logp: Tensor  # (N, T, B)
    old_pre_mean: Tensor  # (N, T*B, act_dim)
    old_pre_log_std: Tensor  # (act_dim,)


@dataclass
class ProximalLearner(MetaLearner):
    """Adam on a clipped post-adaptation surrogate; subclasses choose the inner loss and the KL penalty."""

    proximal: ProximalSettings = field(default_factory=ProximalSettings)

    Settings: ClassVar[type | None] = ProximalSettings
    section: ClassVar[str | None] = "proximal"
    lvc: ClassVar[bool] = False
    kl_penalty: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        meta = self.meta_params()
        self.adam_m = OrderedDict((k, torch.zeros_like(v).detach()) for k, v in meta.items())
        self.adam_v = OrderedDict((k, torch.zeros_like(v).detach()) for k, v in meta.items())
        self.adam_step = 0
        self.kl_coef = float(self.proximal.kl_coef)

    def _move_state(self, device: torch.device) -> None:
        move_moments(self, device)

    # -- checkpointed state ----------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        out = {**super().state_dict(), **adam_state(self)}
        out[f"{STATE_PREFIX}kl_coef"] = torch.tensor(self.kl_coef, dtype=torch.float64, device="cpu")
        return out

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        own = {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
        want = set(self.state_dict())
        if set(state) != want:
            raise KeyError(f"checkpoint holds {sorted(state)}, the learner needs {sorted(want)}")
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)})
        load_adam_state(self, own)
        self.kl_coef = float(own[f"{STATE_PREFIX}kl_coef"])

    # -- the inner loop ----------------------------------------------------------------
    def _inner(self, meta: Mapping[str, Tensor], train: EpisodeBatch, train_adv: Tensor,
               old_train_logp: Tensor | None, create_graph: bool) -> Params:
        params, lr = self._split(meta)
        ref = old_train_logp if self.lvc else None
        return adapt(self.policy, params, train, train_adv, lr, self.inner_steps,
                     self.first_order or not create_graph, self.adapt_names, reference_logp=ref)

    def adapt(self, train: EpisodeBatch, train_adv: Tensor, meta: Mapping[str, Tensor] | None = None,
              create_graph: bool = False, steps: int | None = None) -> Params:
        if not self.lvc or (steps is not None and steps != self.inner_steps):
            return super().adapt(train, train_adv, meta, create_graph, steps)
        meta = self.meta_params() if meta is None else meta
        return self._inner(meta, train, train_adv, self._train_logp(train).detach(), create_graph)

    def _train_logp(self, train: EpisodeBatch) -> Tensor:
        """Log-probabilities of the train actions under the current meta-policy: ``(N, T, B)``."""
        with torch.no_grad():
            mean, log_std = self.policy(train.flat_obs())
            return gaussian_log_prob(mean, log_std, train.flat_actions()).reshape(train.mask.shape)

    # -- the outer objective -------------------------------------------------------------
    def constants(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
                  train_adv: Tensor) -> Constants:
        with torch.no_grad():
            mean, log_std = self.policy(valid.flat_obs(), adapted)
            old_valid = gaussian_log_prob(mean, log_std, valid.flat_actions()).reshape(valid.mask.shape)
            pre_mean, pre_log_std = self.policy(train.flat_obs())
            old_train = gaussian_log_prob(pre_mean, pre_log_std, train.flat_actions()).reshape(train.mask.shape)
        return Constants(train_adv.detach(), self.advantages(valid).detach(), old_valid.clone(), old_train.clone(),
                         pre_mean.detach().clone(), pre_log_std.detach().clone())

    def objective(self, meta: Mapping[str, Tensor], train: EpisodeBatch, valid: EpisodeBatch, c: Constants,
                  create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(J, clipped surrogate, pre-update KL, valid log-probs (N, T, B))`` as functions of ``meta``."""
        adapted = self._inner(meta, train, c.train_adv, c.old_train_logp, create_graph)
        mean, log_std = self.policy(valid.flat_obs(), adapted)
        logp = gaussian_log_prob(mean, log_std, valid.flat_actions()).reshape(valid.mask.shape)
        surrogate = clipped_surrogate(logp, c.old_valid_logp, c.valid_adv, valid.mask, self.proximal.clip_eps)
        params, _ = self._split(meta)
        pre_mean, pre_log_std = self.policy(train.flat_obs(), params)
        kl_steps = gaussian_kl(c.old_pre_mean, c.old_pre_log_std, pre_mean, pre_log_std).reshape(train.mask.shape)
        kl_pre = masked_task_mean(kl_steps, train.mask).mean()
        total = surrogate + self.kl_coef * kl_pre if self.kl_penalty else surrogate
        return total, surrogate, kl_pre, logp

    # -- one outer step ----------------------------------------------------------------------
    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None) -> StepResult:
        if train_adv is None:
            train_adv = self.advantages(train)
        if not all(bool(torch.isfinite(x).all()) for x in (train.rewards, valid.rewards, train_adv)):
            return StepResult(self.rejected_scalars(), rejected=True)
        c = self.constants(train, valid, adapted, train_adv)
        meta = self.meta_params()
        tensors = list(meta.values())
        backup = [t.detach().clone() for t in tensors]
        m_backup = [t.clone() for t in (*self.adam_m.values(), *self.adam_v.values())]
        step_backup = self.adam_step
        s = self.proximal
        first = None
        fractions = []
        for _ in range(s.epochs):
            total, surrogate, _, logp = self.objective(meta, train, valid, c, create_graph=True)
            grads = torch.autograd.grad(total, tensors, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]
            if not (torch.isfinite(total) and all(bool(torch.isfinite(g).all()) for g in grads)):
                self._restore(tensors, backup, m_backup, step_backup)
                return StepResult(self.rejected_scalars(), rejected=True)
            if first is None:
                first = (total.item(), surrogate.item(), torch.cat([g.reshape(-1) for g in grads]).norm().item())
            fractions.append(clip_fraction(logp.detach(), c.old_valid_logp, valid.mask, s.clip_eps))
            self.adam_step += 1
            adam_update(tensors, grads, list(self.adam_m.values()), list(self.adam_v.values()), self.adam_step,
                        s.lr, s.adam_beta1, s.adam_beta2, s.adam_eps)
        with torch.no_grad():
            total, surrogate, kl_pre, new_logp = self.objective(meta, train, valid, c, create_graph=False)
            kl_post = float(masked_task_mean(c.old_valid_logp - new_logp, valid.mask).mean())  # sample KL estimate
        if not all(bool(torch.isfinite(t).all()) for t in tensors) or not torch.isfinite(total):
            self._restore(tensors, backup, m_backup, step_backup)
            return StepResult(self.rejected_scalars(), rejected=True)
        coef_used = self.kl_coef
        if self.kl_penalty and s.adaptive_kl:
            self.kl_coef = next_kl_coef(self.kl_coef, float(kl_pre), s.target_kl)
        p = self.scalar_prefix
        scalars = {f"{p}/loss_before": first[0], f"{p}/loss_after": float(total),
                   f"{p}/surrogate_before": first[1], f"{p}/surrogate_after": float(surrogate),
                   f"{p}/grad_norm": first[2], f"{p}/clip_fraction": sum(fractions) / len(fractions),
                   f"{p}/kl_post": kl_post, f"{p}/kl_pre": float(kl_pre), "time/inner_s": 0.0}
        if self.kl_penalty:
            scalars[f"{p}/kl_coef"] = coef_used
        return StepResult(scalars)

    def _restore(self, tensors: list[Tensor], backup: list[Tensor], moments: list[Tensor], step: int) -> None:
        with torch.no_grad():
            for t, b in zip(tensors, backup, strict=True):
                t.copy_(b)
            for t, b in zip((*self.adam_m.values(), *self.adam_v.values()), moments, strict=True):
                t.copy_(b)
        self.adam_step = step

    def rejected_scalars(self) -> dict[str, float]:
        p = self.scalar_prefix
        nan = math.nan
        out = {f"{p}/loss_before": nan, f"{p}/loss_after": nan, f"{p}/surrogate_before": nan,
               f"{p}/surrogate_after": nan, f"{p}/grad_norm": nan, f"{p}/clip_fraction": nan, f"{p}/kl_post": nan,
               f"{p}/kl_pre": nan, "time/inner_s": 0.0}
        if self.kl_penalty:
            out[f"{p}/kl_coef"] = self.kl_coef
        return out


@dataclass
class ProMP(ProximalLearner):
    """ProMP: LVC inner loop, clipped surrogate, KL penalty between pre-update policies."""

    lvc: ClassVar[bool] = True
    kl_penalty: ClassVar[bool] = True
    scalar_prefix: ClassVar[str] = "promp"


@dataclass
class MAMLPPO(ProximalLearner):
    """MAML-PPO: VPG inner loop, clipped surrogate, no KL penalty."""

    scalar_prefix: ClassVar[str] = "ppo"
