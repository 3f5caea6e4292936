"""RL² (Duan et al. 2016, "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning") with PPO.

A recurrent policy (:class:`metarl.policies.GaussianGRUPolicy`, ``policy.kind: gru``) reads the
observation, the previous action, the previous reward and a done flag; its hidden state carries across
the ``rl2.episodes_per_trial`` episodes of a trial on one task and resets between trials. Adaptation is
that hidden state: there is no inner gradient step (:meth:`RL2Learner.adapt` returns the meta-parameters).

One meta-iteration (``adapts = False``: the trainer samples one batch and passes it as ``train`` and
``valid``): ``algo.meta_batch_size`` tasks, ``algo.episodes_per_task`` *trials* per task, each a column of
an :class:`~metarl.episodes.EpisodeBatch` of ``T = K H`` steps (episode ``k`` in steps ``[k H, (k+1) H)``,
see :mod:`metarl.episodes`). Then PPO on whole trials (garage's RL2PPO; the paper used TRPO):

- advantages: GAE over the whole trial (values carry across its episodes' boundaries; only the trial's
  end is terminal) with the linear baseline refit per task (:mod:`metarl.baselines`) on the task's
  trials with their masked steps moved to the end (:func:`~metarl.episodes.live_first`). The per-task
  refit sees the task, which a value head would have to infer from the history, costs no parameters and
  no second loss, and is the baseline every other outer loop here uses;
- ``rl2.epochs`` passes over the trials in ``rl2.minibatches`` minibatches of whole trials (the
  permutation drawn from the run's seed and the Adam step count, so a resumed run draws the same),
  each an Adam step (:func:`~metarl.algos.proximal.adam_update`) on the clipped surrogate
  (:func:`~metarl.algos.proximal.clipped_surrogate`, one row per trial), backpropagated through the
  whole trial (no truncation: K H steps of a GRU is cheap at these sizes).

The Adam moments and step count are checkpointed with the parameters, so a killed run resumes exactly.
``returns/pre_adapt`` and ``returns/post_adapt`` are per trial (the K episodes summed);
``rl2/return_episode_<k>`` is the mean return of the trials' k-th episode (the adaptation curve).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from metarl.algos.base import MAX_PASSES, MetaLearner, StepResult
from metarl.algos.proximal import (
    STATE_PREFIX,
    adam_state,
    adam_update,
    clip_fraction,
    clipped_surrogate,
    load_adam_state,
    move_moments,
)
from metarl.episodes import EpisodeBatch, live_first
from metarl.inner_updates import INNER_UPDATES
from metarl.policies import Params, gaussian_log_prob, trial_inputs


@dataclass
class RL2Settings:
    """RL²'s trials and its PPO step (defaults: the paper's two-episode MuJoCo trials, garage's RL2PPO)."""

    episodes_per_trial: int = 2
    """Episodes of one trial on one task, the hidden state carried across them (K)."""
    epochs: int = 5
    """Passes over the iteration's trials."""
    minibatches: int = 4
    """Minibatches of whole trials per pass, each one Adam step."""
    lr: float = 1e-3
    """Adam step size."""
    clip: float = 0.2
    """Likelihood-ratio clip range of the surrogate."""
    adam_beta1: float = 0.9
    """Adam's first-moment decay."""
    adam_beta2: float = 0.999
    """Adam's second-moment decay."""
    adam_eps: float = 1e-8
    """Adam's denominator constant."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        need(self.episodes_per_trial >= 1, "episodes_per_trial", self.episodes_per_trial, "must be >= 1")
        need(1 <= self.epochs <= MAX_PASSES, "epochs", self.epochs, f"must be in [1, {MAX_PASSES}]")
        need(1 <= self.minibatches <= MAX_PASSES, "minibatches", self.minibatches, f"must be in [1, {MAX_PASSES}]")
        need(self.lr > 0, "lr", self.lr, "must be > 0")
        need(self.clip > 0, "clip", self.clip, "must be > 0")
        need(0 <= self.adam_beta1 < 1, "adam_beta1", self.adam_beta1, "must be in [0, 1)")
        need(0 <= self.adam_beta2 < 1, "adam_beta2", self.adam_beta2, "must be in [0, 1)")
        need(self.adam_eps > 0, "adam_eps", self.adam_eps, "must be > 0")


def as_rows(x: Tensor) -> Tensor:
    """``(N, T, B, ...)`` -> ``(T, N B, ...)``: one column per trial (task-major)."""
    n, t, b = x.shape[:3]
    return x.transpose(0, 1).reshape(t, n * b, *x.shape[3:])


@dataclass
class RL2Learner(MetaLearner):
    """RL² with PPO on whole trials (module docstring). ``seed``: the run's seed (the minibatch draws)."""

    rl2: RL2Settings = field(default_factory=RL2Settings)
    seed: int = 1

    Settings: ClassVar[type | None] = RL2Settings
    section: ClassVar[str | None] = "rl2"
    scalar_prefix: ClassVar[str] = "rl2"
    adapts: ClassVar[bool] = False
    policy_kinds: ClassVar[tuple[str, ...]] = ("gru",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if getattr(self.policy, "episodes_per_trial", None) != self.rl2.episodes_per_trial:
            raise ValueError(f"rl2 needs a recurrent policy with episodes_per_trial {self.rl2.episodes_per_trial}")
        meta = self.meta_params()
        self.adam_m = OrderedDict((k, torch.zeros_like(v).detach()) for k, v in meta.items())
        self.adam_v = OrderedDict((k, torch.zeros_like(v).detach()) for k, v in meta.items())
        self.adam_step = 0

    def _move_state(self, device: torch.device) -> None:
        move_moments(self, device)

    @classmethod
    def from_config(cls, cfg: Any, policy: Any, adapt_names: Any) -> MetaLearner:
        learner = super().from_config(cfg, policy, adapt_names)
        assert isinstance(learner, RL2Learner)
        learner.seed = int(cfg.seed)
        return learner

    @classmethod
    def episodes_per_trial(cls, cfg: Any) -> int:
        return int(cfg.rl2.episodes_per_trial) if hasattr(cfg, "rl2") else RL2Settings.episodes_per_trial

    @classmethod
    def check_config(cls, cfg: Any, need: Callable[[bool, str, Any, str], None]) -> None:
        need(cfg.policy.adapt == "all", "policy.adapt", cfg.policy.adapt,
             "must be all with algo.name: rl2 (it adapts by its hidden state, not by gradient steps on a part "
             "of the policy)")
        rule = INNER_UPDATES[cfg.algo.inner_update]
        need(not rule.learned, "algo.inner_update", cfg.algo.inner_update,
             "must be a rule without meta-parameters with algo.name: rl2 (it takes no inner step)")

    # -- checkpointed state ------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {**super().state_dict(), **adam_state(self)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        want = set(self.state_dict())
        if set(state) != want:
            raise KeyError(f"checkpoint holds {sorted(state)}, the learner needs {sorted(want)}")
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)})
        load_adam_state(self, state)

    # -- no inner step ----------------------------------------------------------------------
    def adapt(self, train: EpisodeBatch, train_adv: Tensor, meta: Mapping[str, Tensor] | None = None,
              create_graph: bool = False, steps: int | None = None) -> Params:
        """The meta-parameters themselves: RL² adapts by its hidden state."""
        params, _ = self._split(self.meta_params() if meta is None else meta)
        return OrderedDict((k, v if create_graph else v.detach()) for k, v in params.items())

    def adapt_further(self, params: Mapping[str, Tensor], batch: EpisodeBatch, advantages: Tensor,
                      steps: int = 1) -> Params:
        return OrderedDict((k, v.detach()) for k, v in params.items())

    def advantages(self, batch: EpisodeBatch) -> Tensor:
        """GAE over whole trials (module docstring): ``(N, T, B)``, 0 on masked steps."""
        order = live_first(batch.mask)
        obs_order = order.unsqueeze(-1)
        compact = EpisodeBatch(batch.obs.gather(1, obs_order.expand_as(batch.obs)),
                               batch.actions.gather(1, obs_order.expand_as(batch.actions)),
                               batch.rewards.gather(1, order), batch.mask.gather(1, order))
        adv = super().advantages(compact)
        return torch.zeros_like(adv).scatter(1, order, adv)

    # -- the PPO step ---------------------------------------------------------------------------
    def horizon(self, batch: EpisodeBatch) -> int:
        """The episodes' horizon ``H`` of a trial batch (``T = K H``)."""
        steps, k = batch.mask.shape[1], self.rl2.episodes_per_trial
        if steps % k:
            raise ValueError(f"a trial batch of {steps} steps does not hold {k} episodes of equal length")
        return steps // k

    def log_probs(self, meta: Mapping[str, Tensor], inputs: Tensor, actions: Tensor, mask: Tensor) -> Tensor:
        """Log-probabilities ``(T, R)`` of trials ``inputs (T, R, in)`` (:func:`trial_inputs` as rows),
        ``actions (T, R, act)``, ``mask (T, R)``, each trial from a zero hidden state."""
        params, _ = self._split(meta)
        mean, log_std, _ = self.policy(inputs, params, None, mask)
        return gaussian_log_prob(mean, log_std, actions)

    def loss(self, meta: Mapping[str, Tensor], inputs: Tensor, actions: Tensor, mask: Tensor, adv: Tensor,
             old_logp: Tensor) -> tuple[Tensor, Tensor]:
        """``(clipped surrogate loss, log-probs (T, R))`` of trials laid out as rows (``(T, R, ...)``); the
        surrogate averages each trial's live steps, then the trials."""
        logp = self.log_probs(meta, inputs, actions, mask)
        def col(x: Tensor) -> Tensor:  # (T, R) -> (R, T, 1): one "task" per trial
            return x.transpose(0, 1).unsqueeze(-1)

        return clipped_surrogate(col(logp), col(old_logp), col(adv), col(mask), self.rl2.clip), logp

    def _draws(self) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.adam_step]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None) -> StepResult:
        """One PPO pass over the iteration's trials (module docstring), on one intra-op thread: the GRU's
        K H sequential steps are small products whose thread pool only adds synchronisation (on 2 busy cores,
        Navigation2D's step took 50-70 s with torch's default threads and 5-7 s with one)."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._step(train, valid, train_adv)
        finally:
            torch.set_num_threads(before)

    def _step(self, train: EpisodeBatch, valid: EpisodeBatch, train_adv: Tensor | None) -> StepResult:
        if not (bool(torch.isfinite(train.rewards).all()) and bool(torch.isfinite(valid.rewards).all())):
            return StepResult(self.rejected_scalars(), rejected=True)
        adv = self.advantages(train) if train_adv is None else train_adv
        if not bool(torch.isfinite(adv).all()):
            return StepResult(self.rejected_scalars(), rejected=True)
        horizon = self.horizon(train)
        x = as_rows(trial_inputs(train.obs, train.actions, train.rewards, train.mask, horizon))
        a, m, adv = as_rows(train.actions), as_rows(train.mask), as_rows(adv.detach())
        meta = self.meta_params()
        tensors = list(meta.values())
        with torch.no_grad():
            old = self.log_probs(meta, x, a, m)
        backup = [t.detach().clone() for t in (*tensors, *self.adam_m.values(), *self.adam_v.values())]
        step_backup = self.adam_step
        s = self.rl2
        g = self._draws()
        first: tuple[float, float] | None = None
        fractions = []
        for _ in range(s.epochs):
            for idx in torch.randperm(x.shape[1], generator=g, device="cpu").tensor_split(s.minibatches):
                if not idx.numel():
                    continue
                total, logp = self.loss(meta, x[:, idx], a[:, idx], m[:, idx], adv[:, idx], old[:, idx])
                grads = torch.autograd.grad(total, tensors, allow_unused=True)
                grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(tensors, grads, strict=True)]
                if not (torch.isfinite(total) and all(bool(torch.isfinite(gr).all()) for gr in grads)):
                    self._restore(backup, step_backup)
                    return StepResult(self.rejected_scalars(), rejected=True)
                if first is None:
                    first = (total.item(), torch.cat([gr.reshape(-1) for gr in grads]).norm().item())
                fractions.append(clip_fraction(logp.detach(), old[:, idx], m[:, idx], s.clip))
                self.adam_step += 1
                adam_update(tensors, grads, list(self.adam_m.values()), list(self.adam_v.values()), self.adam_step,
                            s.lr, s.adam_beta1, s.adam_beta2, s.adam_eps)
        with torch.no_grad():
            after, new = self.loss(meta, x, a, m, adv, old)
        if not (torch.isfinite(after) and all(bool(torch.isfinite(t).all()) for t in tensors)):
            self._restore(backup, step_backup)
            return StepResult(self.rejected_scalars(), rejected=True)
        assert first is not None
        kl = float(((old - new) * m).sum() / m.sum().clamp(min=1))  # sample estimate of KL(old || new)
        p = self.scalar_prefix
        return StepResult({f"{p}/loss_before": first[0], f"{p}/loss_after": float(after), f"{p}/grad_norm": first[1],
                           f"{p}/clip_fraction": sum(fractions) / len(fractions), f"{p}/kl": kl,
                           **self.episode_scalars(train, horizon), "time/inner_s": 0.0})

    def episode_scalars(self, batch: EpisodeBatch, horizon: int) -> dict[str, float]:
        """``rl2/return_episode_<k>``: the mean return of the trials' k-th episode, k = 1..K."""
        returns = (batch.rewards * batch.mask).unflatten(1, (self.rl2.episodes_per_trial, horizon)).sum(2)
        return {f"{self.scalar_prefix}/return_episode_{k + 1}": float(returns[:, k].mean())
                for k in range(self.rl2.episodes_per_trial)}

    def _restore(self, backup: list[Tensor], step: int) -> None:
        with torch.no_grad():
            for t, b in zip((*self.meta_params().values(), *self.adam_m.values(), *self.adam_v.values()), backup,
                            strict=True):
                t.copy_(b)
        self.adam_step = step

    def rejected_scalars(self) -> dict[str, float]:
        p, nan = self.scalar_prefix, math.nan
        out = {f"{p}/{k}": nan for k in ("loss_before", "loss_after", "grad_norm", "clip_fraction", "kl")}
        out.update({f"{p}/return_episode_{k + 1}": nan for k in range(self.rl2.episodes_per_trial)})
        out["time/inner_s"] = 0.0
        return out
