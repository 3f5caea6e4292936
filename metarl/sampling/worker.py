"""The rollout worker: runs a policy in a batched env and returns arrays.

Workers never compute losses or adapt parameters; they receive per-task
parameters and tasks and return episodes.  Every backend (serial, local
processes, Ray) runs this same code.

Randomness depends only on ``(seed, task index, episode index)``: each
(task, episode) pair draws its reset seed and its whole action-noise sequence
from its own generator, so a batch does not depend on how the (task, episode)
grid is split across workers.

The policy mean is evaluated by :func:`rowwise_mean`, whose result for one
row does not depend on how many rows or tasks are evaluated with it (BLAS
matmul kernels do depend on the batch shape), so the same seed gives
bit-identical batches for every split of the grid on every step that
happened.  After termination (mask 0) rewards are 0 in every split, but the
observations and actions there depend on the split: a shard stops stepping
once all of its episodes have terminated and leaves zeros.

A recurrent policy (``PolicySpec.kind == "gru"``, RL²) takes the trial path
(:meth:`RolloutWorker._rollout_trials`): each (task, trial) pair draws its
episodes' reset seeds and its noise from its own generator likewise, but the
GRU runs on ordinary matmuls, so different splits of the grid agree to float
rounding rather than bit for bit (one split, one seed: identical batches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from envs.base import Task, TaskFamily
from metarl.policies import CONTEXT, GaussianGRUPolicy, GaussianMLPPolicy, rl2_inputs

INPLACE_ACTIVATIONS = {"tanh": torch.tanh_, "relu": torch.relu_}


@dataclass(frozen=True)
class PolicySpec:
    """What a worker needs to rebuild the policy's functional forward."""

    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...]
    activation: str
    context_size: int = 0
    """CAVIA's context parameters on the input (0: none)."""
    kind: str = "mlp"
    """mlp (:class:`GaussianMLPPolicy`, episodes) | gru (:class:`GaussianGRUPolicy`, RL²'s trials)."""
    gru_size: int = 0
    """The GRU's width (gru only)."""
    episodes_per_trial: int = 1
    """Episodes of one trial, with the hidden state carried across them (gru only)."""

    @classmethod
    def of(cls, policy: GaussianMLPPolicy | GaussianGRUPolicy) -> PolicySpec:
        if isinstance(policy, GaussianGRUPolicy):
            return cls(policy.obs_dim, policy.act_dim, policy.hidden_sizes, policy.activation, 0, "gru",
                       policy.gru_size, policy.episodes_per_trial)
        return cls(policy.obs_dim, policy.act_dim, policy.hidden_sizes, policy.activation, policy.context_size)

    def build(self) -> GaussianMLPPolicy | GaussianGRUPolicy:
        if self.kind == "gru":
            return GaussianGRUPolicy(self.obs_dim, self.act_dim, self.hidden_sizes, self.activation, self.gru_size,
                                     episodes_per_trial=self.episodes_per_trial)
        return GaussianMLPPolicy(self.obs_dim, self.act_dim, self.hidden_sizes, self.activation,
                                 context_size=self.context_size)


@dataclass(frozen=True)
class Shard:
    """A worker's slice of the grid: ``task_ids`` x episodes ``[ep_start, ep_stop)``.

    ``draws``: per task of ``task_ids``, the id its episodes' random draws (reset seeds, action noise) derive
    from; None: the task ids themselves. A call that rolls out several parameter sets on the same tasks (ES's
    candidates, one task list repeated) gives each repeat its task's own id, so every set meets the same
    episodes' randomness (common random numbers)."""

    task_ids: tuple[int, ...]
    ep_start: int
    ep_stop: int
    draws: tuple[int, ...] | None = None

    def draw_ids(self) -> tuple[int, ...]:
        """The draw id of each of ``task_ids``, in order."""
        return self.task_ids if self.draws is None else self.draws


def trial_draws(seed: int, task_id: int, trial: int, episodes: int, horizon: int,
                act_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The reset seeds ``(episodes,)`` of the episodes of trial ``trial`` of task ``task_id`` and its
    standard-normal action noise ``(episodes * horizon, act_dim)`` float32, from the trial's own generator."""
    rng = episode_rng(seed, task_id, trial)
    reset_seeds = rng.integers(2**31 - 1, size=episodes)
    return reset_seeds, rng.standard_normal((episodes * horizon, act_dim), dtype=np.float32)


def episode_rng(seed: int, task_id: int, episode: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(task_id), int(episode)])


def episode_draws(seed: int, task_id: int, episode: int, horizon: int, act_dim: int) -> tuple[int, np.ndarray]:
    """The reset seed and the standard-normal action noise ``(horizon, act_dim)``
    float32 of episode ``episode`` of task ``task_id`` in a call with ``seed``."""
    rng = episode_rng(seed, task_id, episode)
    reset_seed = int(rng.integers(2**31 - 1))
    return reset_seed, rng.standard_normal((horizon, act_dim), dtype=np.float32)


class RowwiseMLP:
    """The policy mean for stacked per-task parameters, row by row independent.

    Each layer's ``x @ W^T`` is one elementwise product ``x[k] * W[:, k]``
    over all input features ``k`` followed by a pairwise sum over ``k`` whose
    order depends only on the layer width.  Elementwise IEEE operations give
    the same bits for an element wherever it sits in a tensor, so a row's
    result does not depend on which rows and tasks share its call; BLAS
    kernels pick their blocking by shape and give no such guarantee.
    Products live in one buffer per layer, ``(in, n, b, out)``, reused across
    steps and reduced in place.

    ``weights``: per layer ``(n, out, in)``; ``biases``: ``(n, out)``.
    """

    def __init__(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], activation: str,
                 rows_per_task: int):
        n, b = weights[0].shape[0], rows_per_task
        self.weights_k = [w.permute(2, 0, 1).unsqueeze(2).contiguous() for w in weights]  # (in, n, 1, out)
        self.biases = [bias.unsqueeze(1).contiguous() for bias in biases]  # (n, 1, out)
        self.act_ = INPLACE_ACTIVATIONS[activation]
        self.bufs = [torch.empty(w.shape[2], n, b, w.shape[1]) for w in weights]

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (n, b, obs_dim) -> mean (n, b, act_dim)``; the result is a reused buffer."""
        x = obs
        last = len(self.bufs) - 1
        for i, (wk, bias, buf) in enumerate(zip(self.weights_k, self.biases, self.bufs, strict=True)):
            torch.mul(x.permute(2, 0, 1).unsqueeze(-1), wk, out=buf)  # (in, n, b, out)
            k = buf.shape[0]
            while k > 1:  # pairwise sum over the input features, in a fixed order
                h = k // 2
                if k % 2:
                    buf[h - 1].add_(buf[k - 1])
                buf[:h].add_(buf[h:2 * h])
                k = h
            out = buf[0]
            out.add_(bias)
            if i < last:
                self.act_(out)
            x = out
        return x


class RolloutWorker:
    """Rolls out per-task Gaussian policies on a shard of (task, episode) pairs."""

    def __init__(self, family: TaskFamily, spec: PolicySpec):
        self.family = family
        self.spec = spec
        self.policy = spec.build()
        self.policy.requires_grad_(False)

    def rollout(self, tasks: Sequence[Task], params: Mapping[str, np.ndarray], shard: Shard,
                seed: int) -> dict[str, np.ndarray]:
        """Run every (task, episode) of ``shard`` for the family's horizon.

        ``params``: every policy tensor stacked over *all* N tasks of the call,
        ``(N, *shape)`` (CAVIA's ``context`` too: each task's own, appended to its
        observations).  Returns arrays shaped ``(n, T, b, ...)`` with
        ``n = len(shard.task_ids)``, ``b = ep_stop - ep_start``: obs, actions,
        rewards (float32) and mask (1.0 up to and including termination), plus
        ``success`` (float32, 1.0 where the env reported ``info["success"]`` on
        a live step) for families that report it.  A family with
        ``max_batch_envs`` is stepped in blocks of at most that many envs; the
        result is the same as in one block.
        """
        blocks = sub_shards(shard, self.family.max_batch_envs)
        if len(blocks) == 1:
            return self._rollout_block(tasks, params, shard, seed)
        parts = [self._rollout_block(tasks, params, blk, seed) for blk in blocks]
        ids = list(shard.task_ids)
        out = {k: np.zeros((len(ids), v.shape[1], shard.ep_stop - shard.ep_start, *v.shape[3:]), dtype=v.dtype)
               for k, v in parts[0].items()}
        for blk, part in zip(blocks, parts, strict=True):
            rows = [ids.index(t) for t in blk.task_ids]
            for k, v in part.items():
                out[k][rows, :, blk.ep_start - shard.ep_start:blk.ep_stop - shard.ep_start] = v
        return out

    def _rollout_block(self, tasks: Sequence[Task], params: Mapping[str, np.ndarray], shard: Shard,
                       seed: int) -> dict[str, np.ndarray]:
        if self.spec.kind == "gru":
            return self._rollout_trials(tasks, params, shard, seed)
        ids = list(shard.task_ids)
        n, b = len(ids), shard.ep_stop - shard.ep_start
        horizon, act_dim = self.family.horizon, self.spec.act_dim
        env = self.family.make_vector([tasks[i] for i in ids for _ in range(b)])
        noise = np.empty((horizon, n, b, act_dim), dtype=np.float32)
        reset_seeds = np.empty(n * b, dtype=np.int64)
        for j, draw in enumerate(shard.draw_ids()):
            for e in range(b):
                reset_seeds[j * b + e], noise[:, j, e] = episode_draws(seed, draw, shard.ep_start + e, horizon,
                                                                       act_dim)
        index = torch.as_tensor(ids, dtype=torch.long)
        full = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in params.items()}
        p = {k: v[index] for k, v in full.items()}
        # exp over all N tasks, then select: the same op on the same tensor in every worker
        std = torch.exp(full["log_std"])[index].unsqueeze(1)  # (n, 1, act_dim)
        scaled_noise = std * torch.from_numpy(noise)  # (T, n, b, act_dim), elementwise as per step
        layers = self.policy.layer_names()
        mean_fn = RowwiseMLP([p[f"{name}.weight"] for name in layers], [p[f"{name}.bias"] for name in layers],
                             self.spec.activation, b)
        # CAVIA: each task's (adapted) context rides on every observation of its episodes
        context = p[CONTEXT].unsqueeze(1).expand(n, b, -1) if self.spec.context_size else None

        obs_buf = np.zeros((horizon, n * b, self.spec.obs_dim), dtype=np.float32)
        act_buf = np.zeros((horizon, n, b, act_dim), dtype=np.float32)
        rew_buf = np.zeros((horizon, n * b), dtype=np.float32)
        mask_buf = np.zeros((horizon, n * b), dtype=np.float32)
        success_buf: np.ndarray | None = None
        alive = np.ones(n * b, dtype=bool)
        obs = env.reset(reset_seeds.tolist())
        with torch.inference_mode():
            for t in range(horizon):
                obs_buf[t] = obs
                x = torch.from_numpy(obs).view(n, b, -1)
                mean = mean_fn(x if context is None else torch.cat([x, context], dim=-1))
                actions = act_buf[t]
                torch.add(mean, scaled_noise[t], out=torch.from_numpy(actions))
                bad = nonfinite_rows(actions.reshape(n * b, act_dim))
                obs, rewards, terminated = env.step(finite_actions(actions.reshape(n * b, act_dim), bad))
                mask_buf[t] = alive
                rew_buf[t] = np.where(alive, rewards, 0.0)
                if bad is not None:  # a NaN observation or parameter: the episode ends with a NaN reward
                    rew_buf[t] = np.where(alive & bad, np.nan, rew_buf[t])
                    terminated = terminated | bad
                success = getattr(env, "success", None)
                if success is not None:
                    if success_buf is None:
                        success_buf = np.zeros((horizon, n * b), dtype=np.float32)
                    success_buf[t] = success & alive
                alive &= ~terminated
                if not alive.any():
                    break
        close = getattr(env, "close", None)
        if callable(close):
            close()
        return _task_major(obs_buf, act_buf, rew_buf, mask_buf, success_buf, n, b)

    def _rollout_trials(self, tasks: Sequence[Task], params: Mapping[str, np.ndarray], shard: Shard,
                        seed: int) -> dict[str, np.ndarray]:
        """RL²'s trials: the shard's "episodes" are trials of ``K = spec.episodes_per_trial`` episodes on one
        task, episode ``k`` in steps ``[k H, (k + 1) H)`` of arrays ``(n, K H, b, ...)`` (layout: module
        :mod:`metarl.episodes`). Each env keeps its own hidden state, zero at the trial's start and carried
        across its episodes; on steps after an episode terminated (mask 0) the state and the previous
        action and reward stay as they were. Trial ``j``'s reset seeds and noise: :func:`trial_draws`.
        """
        ids = list(shard.task_ids)
        n, b = len(ids), shard.ep_stop - shard.ep_start
        horizon, act_dim, k_eps = self.family.horizon, self.spec.act_dim, self.spec.episodes_per_trial
        steps = k_eps * horizon
        env = self.family.make_vector([tasks[i] for i in ids for _ in range(b)])
        noise = np.empty((steps, n, b, act_dim), dtype=np.float32)
        reset_seeds = np.empty((k_eps, n * b), dtype=np.int64)
        for j, draw in enumerate(shard.draw_ids()):
            for e in range(b):
                reset_seeds[:, j * b + e], noise[:, j, e] = trial_draws(seed, draw, shard.ep_start + e, k_eps,
                                                                       horizon, act_dim)
        index = torch.as_tensor(ids, dtype=torch.long)
        full = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in params.items()}
        p = {k: v[index] for k, v in full.items()}
        scaled_noise = torch.exp(full["log_std"])[index].unsqueeze(1) * torch.from_numpy(noise)
        policy = self.policy
        assert isinstance(policy, GaussianGRUPolicy)

        obs_buf = np.zeros((steps, n * b, self.spec.obs_dim), dtype=np.float32)
        act_buf = np.zeros((steps, n, b, act_dim), dtype=np.float32)
        rew_buf = np.zeros((steps, n * b), dtype=np.float32)
        mask_buf = np.zeros((steps, n * b), dtype=np.float32)
        success_buf: np.ndarray | None = None
        hidden = policy.initial_hidden(n, b)
        prev_a = torch.zeros(n, b, act_dim)
        prev_r = torch.zeros(n, b)
        with torch.inference_mode():
            for k in range(k_eps):
                obs = env.reset(reset_seeds[k].tolist())
                alive = np.ones(n * b, dtype=bool)
                done = torch.full((n, b), 1.0 if k else 0.0)
                for s in range(horizon):
                    t = k * horizon + s
                    obs_buf[t] = obs
                    x = rl2_inputs(torch.from_numpy(obs).view(n, b, -1), prev_a, prev_r, done)
                    mean, h_new = policy.step(x, hidden, p)
                    actions = act_buf[t]
                    torch.add(mean, scaled_noise[t], out=torch.from_numpy(actions))
                    bad = nonfinite_rows(actions.reshape(n * b, act_dim))
                    obs, rewards, terminated = env.step(finite_actions(actions.reshape(n * b, act_dim), bad))
                    mask_buf[t] = alive
                    rew_buf[t] = np.where(alive, rewards, 0.0)
                    if bad is not None:  # as in _rollout_block: the episode ends with a NaN reward
                        rew_buf[t] = np.where(alive & bad, np.nan, rew_buf[t])
                        terminated = terminated | bad
                    success = getattr(env, "success", None)
                    if success is not None:
                        if success_buf is None:
                            success_buf = np.zeros((steps, n * b), dtype=np.float32)
                        success_buf[t] = success & alive
                    live = torch.from_numpy(alive).view(n, b)
                    hidden = torch.where(live.unsqueeze(-1), h_new, hidden)
                    prev_a = torch.where(live.unsqueeze(-1), torch.from_numpy(actions), prev_a)
                    prev_r = torch.where(live, torch.from_numpy(rew_buf[t]).view(n, b), prev_r)
                    done = torch.where(live, torch.zeros(()), done)
                    alive &= ~terminated
                    if not alive.any():
                        break  # the episode's remaining steps stay zero (mask 0); the next one starts at (k+1) H
        close = getattr(env, "close", None)
        if callable(close):
            close()
        return _task_major(obs_buf, act_buf, rew_buf, mask_buf, success_buf, n, b)


def nonfinite_rows(actions: np.ndarray) -> np.ndarray | None:
    """The envs (rows of ``actions (E, act_dim)``) whose action is NaN or infinite, or None when every one is
    finite (the common case: one check, no copy)."""
    if np.isfinite(actions).all():
        return None
    return ~np.isfinite(actions).all(axis=1)


def finite_actions(actions: np.ndarray, bad: np.ndarray | None) -> np.ndarray:
    """``actions`` with the rows ``bad`` replaced by zeros: a non-finite action (from a NaN observation a family
    returned, or from non-finite parameters) never reaches the simulator.  The rollout records a NaN reward
    for that step and ends the episode, so the batch is non-finite and the outer loop rejects its update
    (as for non-finite losses); the run stops after ``algo.max_consecutive_rejections`` in a row."""
    if bad is None:
        return actions
    return np.where(bad[:, None], 0.0, actions).astype(actions.dtype)


def sub_shards(shard: Shard, max_envs: int | None) -> list[Shard]:
    """``shard`` cut into blocks of at most ``max_envs`` (task, episode) pairs (``None``: one block).

    Whole tasks go together while their episodes fit in a block; a task with
    more episodes than ``max_envs`` is split into episode ranges.
    """
    b = shard.ep_stop - shard.ep_start
    if max_envs is None or len(shard.task_ids) * b <= max_envs:
        return [shard]
    ids, draws = shard.task_ids, shard.draws
    if b <= max_envs:
        per = max_envs // b
        return [Shard(ids[i:i + per], shard.ep_start, shard.ep_stop, None if draws is None else draws[i:i + per])
                for i in range(0, len(ids), per)]
    return [Shard((t,), e, min(e + max_envs, shard.ep_stop), None if draws is None else (draws[j],))
            for j, t in enumerate(ids) for e in range(shard.ep_start, shard.ep_stop, max_envs)]


def _task_major(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, mask: np.ndarray,
                success: np.ndarray | None, n: int, b: int) -> dict[str, np.ndarray]:
    """A shard's step-major buffers (``(T, n*b, ...)``; actions ``(T, n, b, act)``) as task-major arrays
    ``(n, T, b, ...)``, the layout :class:`metarl.episodes.EpisodeBatch` holds."""
    steps = rewards.shape[0]
    out = {
        "obs": obs.reshape(steps, n, b, -1).transpose(1, 0, 2, 3),
        "actions": actions.transpose(1, 0, 2, 3),
        "rewards": rewards.reshape(steps, n, b).transpose(1, 0, 2),
        "mask": mask.reshape(steps, n, b).transpose(1, 0, 2),
    }
    if success is not None:
        out["success"] = success.reshape(steps, n, b).transpose(1, 0, 2)
    return out
