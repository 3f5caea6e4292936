"""Batched episodes, discounted returns and GAE (pure functions).

Layout: every per-step tensor is ``(N, T, B, ...)`` = (tasks, time, episodes
per task, ...).  ``mask`` is 1.0 for steps that happened (up to and including
the terminating step) and 0.0 after an episode terminated; rewards and values
of masked steps are ignored.

Trials (RL², a recurrent policy): a batch whose "episodes" are trials of
``K`` episodes on one task, ``T = K * H``; episode ``k`` of a trial fills
steps ``[k H, (k + 1) H)``, so an episode that terminates early leaves masked
steps before the next one starts (:func:`live_first` moves them to the end).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class EpisodeBatch:
    """Episodes of N tasks, B episodes each, horizon T.

    obs: (N, T, B, obs_dim); actions: (N, T, B, act_dim);
    rewards: (N, T, B); mask: (N, T, B).
    success: (N, T, B), 1.0 where the env reported success on a live step;
    ``None`` for families that do not report it.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    success: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.obs.shape[0]

    def tasks(self, start: int, stop: int) -> EpisodeBatch:
        """Tasks ``start..stop-1``'s episodes (views, no copy)."""
        s = slice(start, stop)
        return EpisodeBatch(self.obs[s], self.actions[s], self.rewards[s], self.mask[s],
                            None if self.success is None else self.success[s])

    def to(self, device: torch.device | str) -> EpisodeBatch:
        """The batch on ``device`` (the same object's tensors where they are there already: no copy on CPU)."""
        if all(t.device == torch.device(device) for t in (self.obs, self.actions, self.rewards, self.mask)) and (
                self.success is None or self.success.device == torch.device(device)):
            return self
        return EpisodeBatch(self.obs.to(device), self.actions.to(device), self.rewards.to(device),
                            self.mask.to(device), None if self.success is None else self.success.to(device))

    def flat_obs(self) -> Tensor:
        """``(N, T*B, obs_dim)``."""
        n, t, b, d = self.obs.shape
        return self.obs.reshape(n, t * b, d)

    def flat_actions(self) -> Tensor:
        n, t, b, d = self.actions.shape
        return self.actions.reshape(n, t * b, d)

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode: ``(N, B)``."""
        return (self.rewards * self.mask).sum(1)

    def episode_success(self) -> Tensor | None:
        """1.0 for every episode that succeeded at any step, else 0.0: ``(N, B)``; None if not reported."""
        if self.success is None:
            return None
        return (self.success * self.mask).amax(1)


def discount_matrix(horizon: int, factor: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """``D[t, s] = factor**(s - t)`` for ``s >= t``, else 0: ``(T, T)`` on ``device`` (CPU by default)."""
    idx = torch.arange(horizon, dtype=torch.float64, device=device)
    power = idx[None, :] - idx[:, None]
    d = torch.where(power >= 0, idx.new_tensor(float(factor)) ** power.clamp(min=0), idx.new_zeros(()))
    return d.to(dtype)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``G_t = sum_{s>=t} gamma^(s-t) r_s`` per step: ``(N, T, B)``."""
    d = discount_matrix(rewards.shape[1], gamma, rewards.dtype, rewards.device)
    return torch.einsum("ts,nsb->ntb", d, rewards * mask) * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates ``(N, T, B)``.

    ``delta_t = r_t + gamma V_{t+1} - V_t`` (``V`` after the last step or
    after termination is 0) and ``A_t = sum_{s>=t} (gamma lam)^(s-t) delta_s``.
    """
    v = values * mask
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    deltas = (rewards + gamma * next_v - v) * mask
    d = discount_matrix(rewards.shape[1], gamma * lam, rewards.dtype, rewards.device)
    return torch.einsum("ts,nsb->ntb", d, deltas) * mask


def live_first(mask: Tensor) -> Tensor:
    """Per ``(task, column)``, the time indices with the live steps first, in order, then the masked ones:
    ``(N, T, B)`` long. Gathering a trial's tensors along time with it makes the trial one contiguous
    episode (what :func:`gae` needs to carry values across its episodes' boundaries)."""
    return torch.sort((mask <= 0).to(torch.int8), dim=1, stable=True).indices


def normalize(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-task standardisation over the masked entries of ``x (N, T, B)``."""
    count = mask.sum((1, 2), keepdim=True).clamp(min=1)
    mean = (x * mask).sum((1, 2), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum((1, 2), keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * mask


def masked_task_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Per-task mean of ``x (N, T, B)`` over masked entries: ``(N,)``."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
