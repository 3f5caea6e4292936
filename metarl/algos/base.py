"""The meta-learner contract: what every outer-loop algorithm shares.

A meta-learner owns the meta-parameters (the policy's parameters plus the
inner update's learned tensors, see ``INNER_UPDATES``), the advantages every
inner loop uses, the inner loop itself (``adapt``, ``adapt_further``) and the
checkpointed state.

Inner-update rules (``inner_update``), for an adapted parameter ``W`` with
inner gradient ``g`` and the configured step ``alpha = inner_lr``:

* ``sgd``: ``W' = W - alpha g`` (MAML); nothing learned.
* ``meta_sgd``: ``W' = W - a * g`` with ``a`` of ``W``'s shape, initialised at
  ``alpha``, named ``inner_lr/<param>`` (Li et al. 2017).
* ``kronecker``: for a weight matrix ``W (out, in)``,
  ``W' = W - alpha L g R`` with ``L (out, out)`` and ``R (in, in)`` named
  ``precond/<param>/L`` and ``precond/<param>/R``; for a vector parameter
  (bias, log-std) ``W' = W - alpha d * g`` with ``d`` named
  ``precond/<param>/diag``.  All initialised at the identity (ones), so the
  first iteration is MAML's (:class:`metarl.adaptation.KroneckerStep`).

The learned tensors are meta-parameters like the policy's: every outer loop
differentiates through them (to second order unless ``first_order``), and
they are checkpointed with the policy.  An outer
loop subclasses :class:`MetaLearner` and implements :meth:`MetaLearner.step`.

One meta-iteration, as the trainer drives it (``N`` tasks, ``T`` steps,
``B`` episodes per task)::

    train_adv = learner.advantages(train)            # (N, T, B)
    adapted = learner.adapt(train, train_adv)        # adapted entries (N, *shape), no graph
    valid = <roll out adapted>                       # EpisodeBatch (N, T, B, ...)
    result = learner.step(train, valid, adapted, train_adv)

``step`` updates the meta-parameters in place and returns a
:class:`StepResult` whose scalars are namespaced (``trpo/kl``,
``time/cg_s``); the trainer logs them as they come.  A ``time/inner_s``
entry is the step's own share of inner-loop time; the trainer adds the time
of its ``adapt`` call to it.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from metarl import baselines
from metarl.adaptation import KroneckerStep, StepSize, adapt
from metarl.episodes import EpisodeBatch, gae, normalize
from metarl.policies import GaussianMLPPolicy, Params

LR_PREFIX = "inner_lr/"
PRECOND_PREFIX = "precond/"
INNER_UPDATES = ("sgd", "meta_sgd", "kronecker")
"""The inner-update rules (``algo.inner_update``)."""


def resolve_inner_update(inner_update: str, learn_inner_lr: bool) -> str:
    """The rule meant by ``inner_update`` and the older switch ``learn_inner_lr`` together.

    ``learn_inner_lr`` means ``meta_sgd``: it turns ``sgd`` into ``meta_sgd``
    and contradicts ``kronecker`` (a :class:`ValueError`, one line).
    """
    if inner_update not in INNER_UPDATES:
        raise ValueError(f"algo.inner_update must be one of {', '.join(INNER_UPDATES)}, got {inner_update!r}")
    if learn_inner_lr and inner_update == "kronecker":
        raise ValueError("algo.learn_inner_lr: true means inner_update meta_sgd, which contradicts "
                         "algo.inner_update: 'kronecker' (set learn_inner_lr: false)")
    return "meta_sgd" if learn_inner_lr else inner_update


@dataclass
class StepResult:
    """What one outer step reports.

    ``scalars``: namespaced diagnostics, logged as they come.  ``rejected``:
    the update was refused because of non-finite episodes, losses, gradients
    or steps (the meta-parameters are unchanged); the trainer counts these
    and stops after ``trpo.max_consecutive_rejections`` in a row.
    """

    scalars: dict[str, float]
    rejected: bool = False


@dataclass
class MetaLearner(abc.ABC):
    """Meta-learner state, advantages and the inner loop; subclasses add the outer step.

    ``adapt_names``: parameters adapted in the inner loop (all for MAML, the
    head for ANIL).  ``inner_update``: ``sgd`` | ``meta_sgd`` | ``kronecker``
    (module docstring); ``learn_inner_lr`` is the older spelling of
    ``meta_sgd`` and is kept equal to ``inner_update == "meta_sgd"``.
    ``lr_params``: Meta-SGD's step sizes by parameter name;
    ``precond_params``: the preconditioner's factors by ``<param>/L`` etc.
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
    lr_params: dict[str, Tensor] = field(default_factory=dict)
    inner_update: str = "sgd"
    precond_params: dict[str, Tensor] = field(default_factory=dict)

    scalar_prefix: ClassVar[str] = "outer"
    """Namespace of the trainer's per-algorithm counters (``<prefix>/rejected_steps``)."""

    def __post_init__(self) -> None:
        self.adapt_names = list(self.adapt_names)
        self.inner_update = resolve_inner_update(self.inner_update, self.learn_inner_lr)
        self.learn_inner_lr = self.inner_update == "meta_sgd"
        params = self.policy.params()
        if self.learn_inner_lr and not self.lr_params:
            self.lr_params = OrderedDict(
                (k, torch.full_like(params[k], self.inner_lr).detach().requires_grad_())
                for k in self.adapt_names
            )
        if self.inner_update == "kronecker" and not self.precond_params:
            self.precond_params = KroneckerStep.identity_factors(params, self.adapt_names)

    @classmethod
    def from_config(cls, cfg: Any, policy: GaussianMLPPolicy, adapt_names: Sequence[str]) -> MetaLearner:
        """Build from a run config (read by attribute: ``cfg.algo.*``; subclasses read their own section)."""
        return cls(policy, adapt_names, **learner_kwargs(cfg.algo))

    # -- parameters --------------------------------------------------------------
    def meta_params(self) -> Params:
        """Every meta-learned tensor, by name (shared with the policy).

        CAVIA's context (``policy.context_names()``) is not among them: it is
        zero at every task's start, so no outer loop sees or moves it, and a
        checkpoint does not hold it (:meth:`_split` puts the policy's constant
        zeros back).
        """
        context = self.policy.context_names()
        out = OrderedDict((k, v) for k, v in self.policy.params().items() if k not in context)
        for k, v in self.lr_params.items():
            out[LR_PREFIX + k] = v
        for k, v in self.precond_params.items():
            out[PRECOND_PREFIX + k] = v
        return out

    def _split(self, meta: Mapping[str, Tensor]) -> tuple[Params, StepSize]:
        """``meta`` as (policy parameters, the inner step rule built from ``meta``'s learned tensors)."""
        policy_params = OrderedDict((k, v) for k, v in meta.items()
                                    if not k.startswith((LR_PREFIX, PRECOND_PREFIX)))
        # CAVIA: every task starts from the policy's constant zero context, as its pre-update rollouts do
        policy_params.update((k, v) for k, v in self.policy.params().items() if k in self.policy.context_names())
        if self.inner_update == "meta_sgd":
            return policy_params, OrderedDict((k[len(LR_PREFIX):], v) for k, v in meta.items()
                                              if k.startswith(LR_PREFIX))
        if self.inner_update == "kronecker":
            factors = OrderedDict((k[len(PRECOND_PREFIX):], v) for k, v in meta.items()
                                  if k.startswith(PRECOND_PREFIX))
            return policy_params, KroneckerStep(self.inner_lr, factors)
        return policy_params, self.inner_lr

    def step_size(self, names: Sequence[str] | None = None) -> StepSize:
        """The learned inner step rule as constants, covering ``names`` (default: the adapted ones).

        A parameter the rule has not learned (a test-time variant adapting
        more than training did) takes the plain step ``inner_lr``.
        """
        _, lr = self._split(self.meta_params())
        if isinstance(lr, KroneckerStep):
            return lr.detached()
        if isinstance(lr, Mapping):
            ref = self.policy.params()
            return OrderedDict((k, lr[k].detach() if k in lr else torch.full_like(ref[k], self.inner_lr).detach())
                               for k in (self.adapt_names if names is None else names))
        return lr

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of :meth:`meta_params` (what a checkpoint's ``meta`` holds).

        An outer loop with state of its own (optimizer moments, penalty
        coefficients) appends it after the meta-parameters, as tensors, and
        restores it in :meth:`load_state_dict`, so a resumed run is exact."""
        return OrderedDict((k, v.detach().clone()) for k, v in self.meta_params().items())

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        meta = self.meta_params()
        if set(state) != set(meta):
            raise KeyError(f"checkpoint holds {sorted(state)}, the learner needs {sorted(meta)}")
        with torch.no_grad():
            for k, v in meta.items():
                v.copy_(state[k])

    def state_scalars(self) -> dict[str, float]:
        """Scalars describing the meta-parameters, logged every iteration (Meta-SGD step sizes,
        the preconditioner's largest distance from the identity ``max ||L - I||_F`` over factors)."""
        if self.inner_update == "kronecker":
            dev = [float(torch.linalg.norm(v.detach() - (torch.eye(v.shape[0], dtype=v.dtype)
                                                           if v.dim() == 2 else torch.ones_like(v))))
                   for v in self.precond_params.values()]
            return {"kronecker/max_dev_from_identity": max(dev, default=0.0)}
        if not self.learn_inner_lr:
            return {}
        lrs = torch.cat([v.detach().reshape(-1) for v in self.lr_params.values()])
        return {"meta_sgd/lr_mean": float(lrs.mean()), "meta_sgd/lr_std": float(lrs.std())}

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
        (meta- or already adapted, stacked) with the learned (as constants) or fixed step rule."""
        adapted = adapt(self.policy, params, batch, advantages, self.step_size(), steps, True, self.adapt_names)
        return OrderedDict((k, v.detach()) for k, v in adapted.items())

    # -- the outer step ------------------------------------------------------------
    @abc.abstractmethod
    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None) -> StepResult:
        """Update the meta-parameters from one meta-batch.

        ``train``: episodes of the meta-policy; ``valid``: episodes of the
        adapted policies ``adapted`` (the output of :meth:`adapt` on
        ``train``, detached; adapted entries ``(N, *shape)``); ``train_adv``:
        the advantages ``adapted`` was computed with (recomputed if None).
        """

    def rejected_scalars(self) -> dict[str, float]:
        """The scalars of an update refused before :meth:`step` ran (non-finite adapted parameters)."""
        return {}


def learner_kwargs(algo: Any) -> dict[str, Any]:
    """The :class:`MetaLearner` settings held by an ``algo`` config section."""
    names = ("inner_lr", "inner_steps", "first_order", "learn_inner_lr", "inner_update", "gamma", "gae_lambda",
             "normalize_advantages")
    return {k: getattr(algo, k) for k in names}
