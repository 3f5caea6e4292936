"""MAML-TRPO: TRPO on the post-adaptation surrogate, differentiating through
the inner loop (Finn et al. 2017).

One outer step, given each task's training episodes (collected with the
meta-parameters) and validation episodes (collected with the adapted
parameters):

1. re-run the inner loop at the current meta-parameters with a graph
   (second order unless ``first_order``), giving adapted means / log-stds on
   the validation observations;
2. the surrogate ``L = -mean_tasks mean_t ratio_t A_t`` and the mean KL
   between the adapted policies before and after the update;
3. natural-gradient direction by conjugate gradient on Hessian-vector
   products of the KL (double backward through the same graph, built once);
4. backtracking line search: accept only when ``L`` decreases and
   ``KL <= max_kl``; otherwise the meta-parameters stay as they were.

Meta-parameters are the policy's parameters plus, for Meta-SGD, one learned
step-size tensor per adapted parameter (named ``inner_lr/<param>``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from metarl import baselines
from metarl.adaptation import adapt
from metarl.algos.curvature import gauss_newton_product, map_chunks, weighted_sum
from metarl.algos.trpo import conjugate_gradient, line_search
from metarl.config import TRPOConfig
from metarl.episodes import EpisodeBatch, gae, masked_task_mean, normalize
from metarl.policies import GaussianMLPPolicy, Params, flatten, gaussian_kl, gaussian_log_prob, unflatten

LR_PREFIX = "inner_lr/"


@dataclass
class MAMLTRPO:
    """Meta-learner state and the MAML-TRPO update.

    ``adapt_names``: parameters adapted in the inner loop (all for MAML, the
    head for ANIL).  ``learn_inner_lr``: Meta-SGD step sizes, initialised at
    ``inner_lr``.
    """

    policy: GaussianMLPPolicy
    adapt_names: Sequence[str]
    inner_lr: float = 0.1
    inner_steps: int = 1
    first_order: bool = False
    learn_inner_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    trpo: TRPOConfig = field(default_factory=TRPOConfig)
    lr_params: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adapt_names = list(self.adapt_names)
        if self.learn_inner_lr and not self.lr_params:
            params = self.policy.params()
            self.lr_params = OrderedDict(
                (k, torch.full_like(params[k], self.inner_lr).detach().requires_grad_())
                for k in self.adapt_names
            )

    # -- parameters --------------------------------------------------------------
    def meta_params(self) -> Params:
        """Every meta-learned tensor, by name (shared with the policy)."""
        out = OrderedDict(self.policy.params())
        for k, v in self.lr_params.items():
            out[LR_PREFIX + k] = v
        return out

    def _split(self, meta: Mapping[str, Tensor]) -> tuple[Params, float | Params]:
        policy_params = OrderedDict((k, v) for k, v in meta.items() if not k.startswith(LR_PREFIX))
        if not self.learn_inner_lr:
            return policy_params, self.inner_lr
        lr = OrderedDict((k[len(LR_PREFIX):], v) for k, v in meta.items() if k.startswith(LR_PREFIX))
        return policy_params, lr

    def state_dict(self) -> dict[str, Tensor]:
        return OrderedDict((k, v.detach().clone()) for k, v in self.meta_params().items())

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        meta = self.meta_params()
        if set(state) != set(meta):
            raise KeyError(f"checkpoint holds {sorted(state)}, the learner needs {sorted(meta)}")
        with torch.no_grad():
            for k, v in meta.items():
                v.copy_(state[k])

    # -- advantages and adaptation -----------------------------------------------
    def advantages(self, batch: EpisodeBatch) -> Tensor:
        """Per-task linear baseline, GAE, optional per-task normalisation: (N, T, B)."""
        values = baselines.fit_predict(batch, self.gamma)
        adv = gae(batch.rewards, values, batch.mask, self.gamma, self.gae_lambda)
        return normalize(adv, batch.mask) if self.normalize_advantages else adv

    def adapt(self, train: EpisodeBatch, train_adv: Tensor, meta: Mapping[str, Tensor] | None = None,
              create_graph: bool = False, steps: int | None = None) -> Params:
        """Adapted parameters per task (adapted entries stacked ``(N, ...)``)."""
        params, lr = self._split(self.meta_params() if meta is None else meta)
        first_order = self.first_order or not create_graph
        return adapt(self.policy, params, train, train_adv, lr,
                     self.inner_steps if steps is None else steps, first_order, self.adapt_names)

    def adapt_further(self, params: Mapping[str, Tensor], batch: EpisodeBatch, advantages: Tensor,
                      steps: int = 1) -> Params:
        """Test-time adaptation: ``steps`` more inner steps from ``params``
        (meta- or already adapted, stacked) with the learned or fixed step size."""
        _, lr = self._split(self.meta_params())
        if not isinstance(lr, float):
            lr = OrderedDict((k, v.detach()) for k, v in lr.items())
        adapted = adapt(self.policy, params, batch, advantages, lr, steps, True, self.adapt_names)
        return OrderedDict((k, v.detach()) for k, v in adapted.items())

    # -- the outer step ------------------------------------------------------------
    def _surrogate_kl(self, adapted: Params, valid: EpisodeBatch, valid_adv: Tensor, old_mean: Tensor,
                      old_log_std: Tensor, old_logp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mean, log_std = self.policy(valid.flat_obs(), adapted)
        n, t, b = valid.mask.shape
        logp = gaussian_log_prob(mean, log_std, valid.flat_actions()).reshape(n, t, b)
        ratio = torch.exp(logp - old_logp)
        loss = -masked_task_mean(ratio * valid_adv, valid.mask).mean()
        kl_steps = gaussian_kl(old_mean, old_log_std, mean, log_std).reshape(n, t, b)
        kl = masked_task_mean(kl_steps, valid.mask).mean()
        return loss, kl, mean, log_std

    def old_outputs(self, train: EpisodeBatch, train_adv: Tensor, valid: EpisodeBatch,
                    adapted: Mapping[str, Tensor] | None = None) -> Old:
        """The adapted policies that collected ``valid``: means, log-stds, log-probs (constants).

        ``adapted``: those policies' parameters when the caller already has
        them (``adapt(train, train_adv)`` at the current meta-parameters).
        """
        with torch.no_grad():
            if adapted is None:
                adapted = self.adapt(train, train_adv, create_graph=False)
            mean, log_std = self.policy(valid.flat_obs(), adapted)
            n, t, b = valid.mask.shape
            logp = gaussian_log_prob(mean, log_std, valid.flat_actions()).reshape(n, t, b)
        # Copies: under ANIL ``log_std`` is the meta-parameter itself, which
        # must not alias the constants of the KL.
        return Old(mean.detach().clone(), log_std.detach().clone(), logp.detach().clone())

    def objective(self, meta: Mapping[str, Tensor], train: EpisodeBatch, train_adv: Tensor,
                  valid: EpisodeBatch, valid_adv: Tensor, old: Old,
                  create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """Post-adaptation surrogate loss and mean KL to ``old``, as functions of ``meta``.

        With ``create_graph`` both are differentiable w.r.t. ``meta`` through
        the inner loop (to second order unless ``first_order``).
        """
        adapted = self.adapt(train, train_adv, meta, create_graph=create_graph)
        loss, kl, _, _ = self._surrogate_kl(adapted, valid, valid_adv, old.mean, old.log_std, old.logp)
        return loss, kl

    def curvature_tasks(self, num_tasks: int) -> int:
        """How many tasks (the first ones) the conjugate gradient's curvature uses."""
        return min(num_tasks, max(1, math.ceil(self.trpo.cg_subsample * num_tasks)))

    def curvature(self, meta: Mapping[str, Tensor], train: EpisodeBatch, train_adv: Tensor, valid: EpisodeBatch,
                  valid_adv: Tensor, old: Old) -> Callable[[Tensor], Tensor]:
        """Damped Hessian-vector product of the mean KL, for the conjugate gradient.

        Uses the first :meth:`curvature_tasks` tasks, in chunks of
        ``hvp_chunk_tasks`` tasks whose products are summed with each chunk's
        weight: the same Hessian, but every pass works on tensors small enough
        to stay in cache.  Chunks are built and multiplied in as many Python
        threads as torch has intra-op threads (:func:`~metarl.algos.curvature.weighted_sum`).
        ``trpo.curvature``: ``double_backward`` builds each chunk's KL graph
        and differentiates it twice; ``gauss_newton`` is the same Hessian as
        ``Jᵀ F J`` (:mod:`metarl.algos.curvature`).
        """
        n_curv = self.curvature_tasks(train.num_tasks)
        chunk = max(1, self.trpo.hvp_chunk_tasks)
        tensors = list(meta.values())

        def build(a: int, b: int) -> tuple[float, Callable[[Tensor], Tensor]]:
            if self.trpo.curvature == "gauss_newton":
                params, lr = self._split(meta)
                return (b - a) / n_curv, gauss_newton_product(
                    self.policy, params, lr, self.adapt_names, self.inner_steps, self.first_order,
                    train.tasks(a, b), train_adv[a:b], valid.tasks(a, b))
            _, kl = self.objective(meta, train.tasks(a, b), train_adv[a:b], valid.tasks(a, b), valid_adv[a:b],
                                   old.tasks(a, b), create_graph=True)
            return (b - a) / n_curv, kl_hvp(kl, tensors, 0.0)

        threads = torch.get_num_threads()
        ranges = [(a, min(a + chunk, n_curv)) for a in range(0, n_curv, chunk)]
        parts = map_chunks(build, ranges, threads)
        return weighted_sum(parts, threads, self.trpo.cg_damping)

    @staticmethod
    def rejected_stats() -> dict[str, float]:
        """Diagnostics of an update rejected for non-finite values."""
        return {"accepted": 0.0, "line_search_steps": 0.0, "kl": 0.0, "rejected_nonfinite": 1.0,
                "surrogate_before": float("nan"), "surrogate_after": float("nan"), "grad_norm": float("nan"),
                "cg_tasks": 0.0, "time_inner_s": 0.0, "time_cg_s": 0.0, "time_line_search_s": 0.0}

    def step(self, train: EpisodeBatch, train_adv: Tensor, valid: EpisodeBatch,
             adapted: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """One TRPO update of the meta-parameters.  Returns diagnostics.

        ``adapted``: the parameters that collected ``valid``, if the caller
        has them (else the inner loop is re-run without a graph).

        Non-finite episodes, losses, gradients or CG solutions reject the step
        (``rejected_nonfinite = 1``) and leave the meta-parameters unchanged.
        """
        timings: dict[str, float] = {}
        stats = self.rejected_stats()

        def finish() -> dict[str, float]:
            for key, value in timings.items():
                stats[f"time_{key}"] = value
            return stats

        t0 = time.perf_counter()
        meta = self.meta_params()
        tensors = list(meta.values())
        if not all(bool(torch.isfinite(x).all()) for x in (train.rewards, valid.rewards, train_adv)):
            return finish()
        valid_adv = self.advantages(valid).detach()
        old = self.old_outputs(train, train_adv, valid, adapted)
        loss, kl = self.objective(meta, train, train_adv, valid, valid_adv, old, create_graph=True)
        timings["inner_s"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        g = flat_grad(loss, tensors).detach()
        loss = loss.detach()
        del kl
        stats.update(surrogate_before=loss.item(), surrogate_after=loss.item(), grad_norm=g.norm().item(),
                     cg_tasks=float(self.curvature_tasks(train.num_tasks)))
        if not (torch.isfinite(loss) and torch.isfinite(g).all()):
            return finish()
        hvp = self.curvature(meta, train, train_adv, valid, valid_adv, old)
        stepdir = conjugate_gradient(hvp, -g, self.trpo.cg_iters)
        shs = 0.5 * (stepdir @ hvp(stepdir))
        timings["cg_s"] = time.perf_counter() - t1
        del hvp  # free the double-backward graph before the line search
        if not (torch.isfinite(stepdir).all() and torch.isfinite(shs) and shs > 0):
            return finish()

        t2 = time.perf_counter()
        full_step = stepdir * math.sqrt(self.trpo.max_kl / float(shs))

        def evaluate(flat: Tensor) -> tuple[float, float]:
            cand = OrderedDict((k, v.detach()) for k, v in unflatten(flat, meta).items())
            c_loss, c_kl = self.objective(cand, train, train_adv, valid, valid_adv, old, create_graph=False)
            return c_loss.item(), c_kl.item()

        result = line_search(evaluate, flatten(meta).detach().clone(), full_step, loss.item(), self.trpo.max_kl,
                             self.trpo.ls_backtrack, self.trpo.ls_max_steps)
        if result.accepted:
            with torch.no_grad():
                for v, new in zip(tensors, unflatten(result.params, meta).values()):
                    v.copy_(new)
            stats.update(kl=result.kl, surrogate_after=result.loss)
        timings["line_search_s"] = time.perf_counter() - t2
        stats.update(accepted=float(result.accepted), line_search_steps=float(result.steps), rejected_nonfinite=0.0)
        return finish()


class Old(NamedTuple):
    """Outputs of the policies that collected the validation episodes."""

    mean: Tensor
    log_std: Tensor
    logp: Tensor

    def tasks(self, start: int, stop: int) -> Old:
        """Tasks ``start..stop-1``'s outputs (a shared log-std stays shared)."""
        s = slice(start, stop)
        log_std = self.log_std[s] if self.log_std.dim() == 3 else self.log_std
        return Old(self.mean[s], log_std, self.logp[s])


def flat_grad(y: Tensor, tensors: Sequence[Tensor], **kwargs: bool) -> Tensor:
    """Gradient of scalar ``y`` w.r.t. ``tensors`` as one flat vector (zeros where unused)."""
    grads = torch.autograd.grad(y, list(tensors), allow_unused=True, **kwargs)
    return torch.cat([(torch.zeros_like(t) if g is None else g).reshape(-1) for t, g in zip(tensors, grads)])


def kl_hvp(kl: Tensor, tensors: Sequence[Tensor], damping: float) -> Callable[[Tensor], Tensor]:
    """``v -> (H + damping I) v`` with ``H`` the Hessian of ``kl`` w.r.t. ``tensors``.

    The gradient graph is built once; each product is one more backward pass.
    """
    grad_kl = flat_grad(kl, tensors, create_graph=True)

    def hvp(v: Tensor) -> Tensor:
        return flat_grad(grad_kl @ v, tensors, retain_graph=True).detach() + damping * v

    return hvp
