"""The meta-learner contract: what every outer-loop algorithm shares.

A meta-learner owns the meta-parameters (the policy's parameters plus the
inner update's learned tensors, see ``INNER_UPDATES``), the advantages every
inner loop uses, the inner loop itself (``adapt``, ``adapt_further``) and the
checkpointed state.

The inner-update rule (``inner_update``, a key of
:data:`metarl.inner_updates.INNER_UPDATES`) owns its learned tensors: the
learner keeps them as ``rule_params`` and names them ``<rule prefix><name>``
among the meta-parameters (``inner_lr/<param>`` for Meta-SGD,
``precond/<param>/L`` for the Kronecker preconditioner). They are
meta-parameters like the policy's: every outer loop differentiates through
them (to second order unless ``first_order``), and they are checkpointed with
the policy. An outer loop subclasses :class:`MetaLearner` and implements
:meth:`MetaLearner.step`; one with settings of its own declares them as a
dataclass ``Settings`` read from the config section ``section``.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from metarl import baselines
from metarl.adaptation import adapt
from metarl.episodes import EpisodeBatch, gae, normalize
from metarl.inner_updates import INNER_UPDATES, InnerUpdate, StepSize
from metarl.inner_updates.kronecker import Kronecker
from metarl.inner_updates.meta_sgd import MetaSGD
from metarl.policies import GaussianMLPPolicy, Params, stack_params

LR_PREFIX = MetaSGD.prefix
MAX_PASSES = 10_000
"""The most optimiser passes, CG iterations or line-search steps an outer loop's setting may ask for per
iteration (``proximal.epochs``, ``rl2.epochs``, ``rl2.minibatches``, ``trpo.cg_iters``, ``trpo.ls_max_steps``):
a bound, so that a typo cannot make an iteration run without end."""
PRECOND_PREFIX = Kronecker.prefix


def resolve_inner_update(inner_update: str, learn_inner_lr: bool) -> str:
    """The rule meant by ``inner_update`` and the older switch ``learn_inner_lr`` together.

    ``learn_inner_lr`` (the old spelling of ``meta_sgd``) turns ``sgd`` into
    ``meta_sgd`` and contradicts any other rule (a :class:`ValueError`, one line).
    """
    if inner_update not in INNER_UPDATES:
        raise ValueError(f"algo.inner_update must be one of {', '.join(INNER_UPDATES)}, got {inner_update!r}")
    if learn_inner_lr and inner_update not in ("sgd", "meta_sgd"):
        raise ValueError("algo.learn_inner_lr: true means inner_update meta_sgd, which contradicts "
                         f"algo.inner_update: {inner_update!r} (set learn_inner_lr: false)")
    return "meta_sgd" if learn_inner_lr else inner_update


MAX_STEPS_PER_CALL = 2_000_000
"""Environment steps one :meth:`Rollouts.sample_many` call asks for at most (its arrays stay within a few hundred
MB on the families here)."""
DEFAULT_STEPS_PER_EPISODE = 1000
"""The horizon :meth:`Rollouts.sample_many` assumes when it is not told one."""


@dataclass
class Rollouts:
    """What an outer loop that rolls out candidates of its own (``needs_rollouts``, e.g. ES) gets from the
    trainer for one iteration: the iteration's tasks and episodes per task, and the run's sampler."""

    sampler: Callable[..., EpisodeBatch]
    """``sampler(tasks, params, episodes_per_task, seed, draw_ids=None)``: the run's
    :meth:`metarl.sampling.Sampler.sample`."""
    tasks: list[Any]
    episodes: int
    iteration: int
    base_seed: int
    """The iteration's own seed; :meth:`seed` derives the rollouts' seeds from it."""
    steps_per_episode: int = 0
    """The family's horizon (0: not known), which bounds the size of :meth:`sample_many`'s calls."""
    workers: int = 1
    """The sampler's workers (local processes or Ray actors): :meth:`sample_many` puts as many parameter sets
    in one call, so each worker's share of a call stays about one set's task grid."""

    def sample(self, params: Mapping[str, Tensor], seed: int) -> EpisodeBatch:
        """Episodes of ``params`` (meta- or adapted, stacked per task) on the iteration's tasks."""
        return self.sampler(self.tasks, params, self.episodes, seed)

    def sample_many(self, sets: Sequence[Mapping[str, Tensor]], seed: int,
                    like: Mapping[str, Tensor]) -> list[EpisodeBatch]:
        """:meth:`sample` of each parameter set in ``sets`` (``like``: the policy's unstacked tensors),
        :attr:`workers` sets per sampler call (fewer where :data:`MAX_STEPS_PER_CALL` says so): the task list
        repeated once per set, every repeat drawing its episodes' randomness from its task's own id. Each set's
        episodes are those a call of its own gives (the same bits: common random numbers), and a cluster with
        more workers than one set's tasks keeps them all busy. Not more sets than workers: on two local workers
        all of ES's candidates in one call were slower than one per call (larger arrays per worker;
        ``benchmarks/bench_sampler.py --sets``)."""
        n = len(self.tasks)
        per_set = n * self.episodes * (self.steps_per_episode or DEFAULT_STEPS_PER_EPISODE)
        chunk = max(1, min(int(self.workers), MAX_STEPS_PER_CALL // per_set))
        out: list[EpisodeBatch] = []
        for a in range(0, len(sets), chunk):
            group = [stack_params(p, like, n) for p in sets[a:a + chunk]]
            params = OrderedDict((k, torch.cat([g[k] for g in group])) for k in group[0])
            batch = self.sampler(self.tasks * len(group), params, self.episodes, seed,
                                 draw_ids=list(range(n)) * len(group))
            out += [batch.tasks(i * n, (i + 1) * n) for i in range(len(group))]
        return out

    def seed(self, index: int) -> int:
        """A 31-bit seed for the ``index``-th rollout of this iteration."""
        return int(np.random.SeedSequence([self.base_seed, index]).generate_state(1)[0] >> 1)


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


@dataclass(kw_only=True)
class LearnerSettings:
    """The inner loop's settings every meta-learner takes (the config's ``algo`` section extends them)."""

    inner_lr: float = 0.1
    """Inner-loop step size (the initial value of learned step sizes)."""
    inner_update: str = "sgd"
    """Inner-update rule, a key of ``metarl.inner_updates.INNER_UPDATES``: sgd (W - lr g) | meta_sgd (learned
    per-entry steps) | kronecker (W - lr L g R, learned L, R per weight matrix, a learned diagonal for vectors) |
    lstm (a learned coordinate-wise LSTM optimizer) | blur (a learned bidirectional Hebbian rule)."""
    inner_steps: int = 1
    """Inner-loop gradient steps."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 1.0
    """GAE lambda."""
    normalize_advantages: bool = True
    """Standardise advantages per task."""


@dataclass
class MetaLearner(LearnerSettings, abc.ABC):
    """Meta-learner state, advantages and the inner loop; subclasses add the outer step.

    ``adapt_names``: parameters adapted in the inner loop (all for MAML, the
    head for ANIL).  ``inner_update``: the rule's registered name, built as
    ``rule`` with ``inner_settings`` (its ``Settings``, None for defaults);
    ``learn_inner_lr`` is the older spelling of ``meta_sgd`` and is kept equal
    to ``inner_update == "meta_sgd"``.  ``rule_params``: the rule's learned
    tensors by name (without the rule's prefix).
    """

    policy: GaussianMLPPolicy
    adapt_names: Sequence[str]
    learn_inner_lr: bool = False
    inner_settings: Any = None
    rule_params: dict[str, Tensor] = field(default_factory=dict)

    Settings: ClassVar[type | None] = None
    """Dataclass of the outer loop's own settings (config section :attr:`section`), or None."""
    section: ClassVar[str | None] = None
    """The config section of :attr:`Settings` (None: the registered name)."""
    scalar_prefix: ClassVar[str] = "outer"
    """Namespace of the trainer's per-algorithm counters (``<prefix>/rejected_steps``)."""
    needs_rollouts: ClassVar[bool] = False
    """Whether :meth:`step` rolls out candidates of its own: the trainer then passes ``rollouts=``
    (:class:`Rollouts`)."""
    adapts: ClassVar[bool] = True
    """Whether the outer loop adapts by inner gradient steps. False (RL², whose adaptation is a recurrent
    policy's hidden state): the trainer samples one batch per iteration, as with ``inner_steps: 0``, and hands
    it to :meth:`step` as both ``train`` and ``valid``."""
    policy_kinds: ClassVar[tuple[str, ...]] = ("mlp",)
    """The ``policy.kind`` values this outer loop takes (the config refuses others)."""

    @classmethod
    def episodes_per_trial(cls, cfg: Any) -> int:
        """Episodes of one trial of a recurrent policy, its hidden state carried across them (1: none)."""
        return 1

    @classmethod
    def check_config(cls, cfg: Any, need: Callable[[bool, str, Any, str], None]) -> None:
        """Checks across sections when this outer loop is selected: ``need(ok, key, value, what)`` (full keys).
        None by default."""

    def start_fresh(self) -> None:
        """Called once on a learner that starts a new run (not on one a checkpoint restores: evaluation,
        analysis and resumes never call it). Outer loops whose start reads outside files do it here
        (``es.init_from``); the default does nothing."""

    def extra_state(self) -> dict[str, Tensor]:
        """Checkpointed state whose shapes may change during a run (an ES fitness history); not part of
        :meth:`state_dict` (whose shapes a checkpoint must match). None by default."""
        return {}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`extra_state` (an empty mapping: a checkpoint without any)."""

    def __post_init__(self) -> None:
        self.adapt_names = list(self.adapt_names)
        self.inner_update = resolve_inner_update(self.inner_update, self.learn_inner_lr)
        self.learn_inner_lr = self.inner_update == "meta_sgd"
        self.rule: InnerUpdate = INNER_UPDATES[self.inner_update](self.inner_lr, self.inner_settings)
        if not self.rule_params:
            self.rule_params = OrderedDict(self.rule.init_params(self.policy.params(), self.adapt_names))

    @classmethod
    def from_config(cls, cfg: Any, policy: GaussianMLPPolicy, adapt_names: Sequence[str]) -> MetaLearner:
        """Build from a run config, read by attribute: ``cfg.algo.*``, the inner-update rule's section and
        this outer loop's own section :attr:`section` (each when the config has it, else their defaults)."""
        name = resolve_inner_update(cfg.algo.inner_update, getattr(cfg.algo, "learn_inner_lr", False))
        rule = INNER_UPDATES[name]
        own = {}
        if cls.Settings is not None and cls.section is not None and hasattr(cfg, cls.section):
            own[cls.section] = settings_of(cls.Settings, getattr(cfg, cls.section))
        rule_section = section_name(name, rule)
        rule_settings = (settings_of(rule.Settings, getattr(cfg, rule_section))
                         if rule.Settings is not None and rule_section and hasattr(cfg, rule_section) else None)
        return cls(policy, adapt_names, **learner_kwargs(cfg.algo), inner_settings=rule_settings, **own)

    # -- the device -----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the meta-parameters live, and so the inner loop, the outer step and the baseline fit."""
        return next(iter(self.meta_params().values())).device

    def to(self, device: torch.device | str) -> MetaLearner:
        """Move the meta-parameters (the policy's and the rule's) and the outer loop's own tensors
        (:meth:`_move_state`) to ``device``; returns ``self``.

        A learner is built on CPU (the same initialisation from the same seed on every device) and then moved:
        the policy by ``nn.Module.to``, the rule's tensors replaced by leaves on ``device``. A no-op where they
        are already there."""
        device = torch.device(device)
        self.policy.to(device)
        self.rule_params = OrderedDict(
            (k, v if v.device == device else v.detach().to(device).requires_grad_(v.requires_grad))
            for k, v in self.rule_params.items())
        self._move_state(device)
        return self

    def _move_state(self, device: torch.device) -> None:
        """Move the outer loop's own tensors (optimizer moments) to ``device``; none by default."""

    # -- the rule's tensors under their older names ---------------------------------
    @property
    def lr_params(self) -> dict[str, Tensor]:
        """Meta-SGD's step sizes by parameter name (empty for other rules)."""
        return self.rule_params if self.inner_update == "meta_sgd" else {}

    @lr_params.setter
    def lr_params(self, value: dict[str, Tensor]) -> None:
        self.rule_params = value

    @property
    def precond_params(self) -> dict[str, Tensor]:
        """The Kronecker preconditioner's factors by ``<param>/L`` etc. (empty for other rules)."""
        return self.rule_params if self.inner_update == "kronecker" else {}

    # -- parameters --------------------------------------------------------------
    def meta_params(self) -> Params:
        """Every meta-learned tensor, by name (shared with the policy): the policy's, then the rule's.

        CAVIA's context (``policy.context_names()``) is not among them: it is
        zero at every task's start, so no outer loop sees or moves it, and a
        checkpoint does not hold it (:meth:`_split` puts the policy's constant
        zeros back).
        """
        context = self.policy.context_names()
        out = OrderedDict((k, v) for k, v in self.policy.params().items() if k not in context)
        for k, v in self.rule_params.items():
            out[self.rule.prefix + k] = v
        return out

    def _split(self, meta: Mapping[str, Tensor]) -> tuple[Params, StepSize]:
        """``meta`` as (policy parameters, the inner step rule built from ``meta``'s learned tensors)."""
        prefix = self.rule.prefix
        learned = OrderedDict((k[len(prefix):], v) for k, v in meta.items() if prefix and k.startswith(prefix))
        policy_params = OrderedDict((k, v) for k, v in meta.items() if not (prefix and k.startswith(prefix)))
        # CAVIA: every task starts from the policy's constant zero context, as its pre-update rollouts do
        policy_params.update((k, v) for k, v in self.policy.params().items() if k in self.policy.context_names())
        return policy_params, self.rule.step(learned)

    def step_size(self, names: Sequence[str] | None = None) -> StepSize:
        """The learned inner step rule as constants, covering ``names`` (default: the adapted ones).

        A parameter the rule has not learned (a test-time variant adapting
        more than training did) takes the plain step ``inner_lr``.
        """
        return self.rule.constant_step(self.rule_params, self.policy.params(),
                                       self.adapt_names if names is None else list(names))

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
        """Scalars describing the meta-parameters, logged every iteration (the rule's own:
        Meta-SGD's step sizes, the preconditioner's largest distance from the identity)."""
        return self.rule.scalars(self.rule_params)

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


def settings_of(settings_cls: type, section: Any) -> Any:
    """``section`` as an instance of the settings dataclass ``settings_cls`` (read by attribute)."""
    if isinstance(section, settings_cls):
        return section
    return settings_cls(**{f.name: getattr(section, f.name) for f in fields(settings_cls)})


def section_name(name: str, component: Any) -> str | None:
    """The config section of the component registered as ``name``: its ``section``, else ``name``; None
    for a component without ``Settings``."""
    if getattr(component, "Settings", None) is None:
        return None
    return getattr(component, "section", None) or name


def learner_kwargs(algo: Any) -> dict[str, Any]:
    """The :class:`LearnerSettings` held by an ``algo`` config section (read by attribute)."""
    return {f.name: getattr(algo, f.name) for f in fields(LearnerSettings)}
