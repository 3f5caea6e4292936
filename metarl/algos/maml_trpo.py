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

The registry entry ``maml_trpo`` (``algo.name``).  The meta-parameters (the
policy's plus, for Meta-SGD, one learned step-size tensor per adapted
parameter, ``inner_lr/<param>``), the advantages and the inner loop are
:class:`~metarl.algos.base.MetaLearner`'s.  :meth:`MAMLTRPO.step` is handed
the adapted parameters that collected the validation episodes; they give the
ratio's and the KL's constants (:meth:`MAMLTRPO.old_outputs`) without
re-running the inner loop.  :meth:`MAMLTRPO.update` is the step itself, with
un-namespaced diagnostics.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from metarl.algos.base import MAX_PASSES, MetaLearner, StepResult
from metarl.algos.curvature import gauss_newton_product, map_chunks, weighted_sum
from metarl.algos.trpo import conjugate_gradient_with_product, line_search
from metarl.episodes import EpisodeBatch, masked_task_mean
from metarl.policies import Params, flatten, gaussian_kl, gaussian_log_prob, unflatten


@dataclass
class TRPOSettings:
    """The trust-region step's settings (the config's ``trpo`` section extends them)."""

    max_kl: float = 0.01
    """Trust region: mean KL between the adapted policies before and after the update."""
    cg_iters: int = 10
    """Conjugate-gradient iterations."""
    cg_damping: float = 1.0e-5
    """Added to the KL Hessian."""
    cg_subsample: float = 1.0
    """Fraction of tasks used for the conjugate gradient's KL curvature (1.0 = exact)."""
    hvp_chunk_tasks: int = 4
    """Tasks per chunk of the KL Hessian-vector product (exact for any value; speed and memory only)."""
    curvature: str = "gauss_newton"
    """KL Hessian-vector product: gauss_newton (Jᵀ F J through the inner loop) | double_backward (of the KL graph).
    A rule the Gauss-Newton product does not cover (``kronecker``, ``lstm``, ``blur``; see
    ``InnerUpdate.gauss_newton``) and ``policy.adapt: context`` always use double_backward."""
    ls_backtrack: float = 0.8
    """Line-search step shrink factor."""
    ls_max_steps: int = 15
    """Line-search steps before the update is rejected."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        """Range checks: ``need(ok, key, value, what)`` (the key without the section)."""
        need(self.max_kl > 0, "max_kl", self.max_kl, "must be > 0")
        need(1 <= self.cg_iters <= MAX_PASSES, "cg_iters", self.cg_iters, f"must be in [1, {MAX_PASSES}]")
        need(self.cg_damping >= 0, "cg_damping", self.cg_damping, "must be >= 0")
        need(0 < self.cg_subsample <= 1, "cg_subsample", self.cg_subsample, "must be in (0, 1]")
        need(self.curvature in ("gauss_newton", "double_backward"), "curvature", self.curvature,
             "must be gauss_newton or double_backward")
        need(self.hvp_chunk_tasks >= 1, "hvp_chunk_tasks", self.hvp_chunk_tasks, "must be >= 1")
        need(0 < self.ls_backtrack < 1, "ls_backtrack", self.ls_backtrack, "must be in (0, 1)")
        need(1 <= self.ls_max_steps <= MAX_PASSES, "ls_max_steps", self.ls_max_steps, f"must be in [1, {MAX_PASSES}]")


# The diagnostics of :meth:`MAMLTRPO.update` and the scalar names they are logged under.
SCALAR_NAMES = {
    "kl": "trpo/kl",
    "surrogate_before": "trpo/surrogate_before",
    "surrogate_after": "trpo/surrogate_after",
    "line_search_steps": "trpo/line_search_steps",
    "accepted": "trpo/accepted",
    "grad_norm": "trpo/grad_norm",
    "time_inner_s": "time/inner_s",
    "time_cg_s": "time/cg_s",
    "time_line_search_s": "time/line_search_s",
}


@dataclass
class MAMLTRPO(MetaLearner):
    """MAML-TRPO: the :class:`~metarl.algos.base.MetaLearner` state plus the TRPO outer step."""

    trpo: TRPOSettings = field(default_factory=TRPOSettings)

    Settings: ClassVar[type | None] = TRPOSettings
    section: ClassVar[str | None] = "trpo"
    scalar_prefix: ClassVar[str] = "trpo"

    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None) -> StepResult:
        """One TRPO update (:meth:`update`), its diagnostics under their scalar names."""
        if train_adv is None:
            train_adv = self.advantages(train)
        return self._result(self.update(train, train_adv, valid, adapted))

    def rejected_scalars(self) -> dict[str, float]:
        return self._result(self.rejected_stats()).scalars

    @staticmethod
    def _result(stats: dict[str, float]) -> StepResult:
        return StepResult({name: stats[k] for k, name in SCALAR_NAMES.items()}, bool(stats["rejected_nonfinite"]))

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

        ``adapted``: those policies' parameters (computed from ``train`` if None).
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

        # The Gauss-Newton product's inner-loop Jacobian is derived for plain and per-entry step sizes and
        # observations as the body's input; any other rule (the rule says so) and CAVIA's context (on the
        # body's input) take the double-backward product, exact for any inner update and adapted set.
        gauss_newton = (self.trpo.curvature == "gauss_newton" and self.rule.gauss_newton
                        and not self.policy.context_names())

        def build(a: int, b: int) -> tuple[float, Callable[[Tensor], Tensor]]:
            if gauss_newton:
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

    def update(self, train: EpisodeBatch, train_adv: Tensor, valid: EpisodeBatch,
               adapted: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """One TRPO update of the meta-parameters.  Returns diagnostics.

        ``adapted``: the parameters that collected ``valid`` (recomputed if None).

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
        # xᵀ A x from the products CG already took (A x = Σ α_i A p_i): no eleventh product
        stepdir, h_step = conjugate_gradient_with_product(hvp, -g, self.trpo.cg_iters)
        shs = 0.5 * (stepdir @ h_step)
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
