"""Small synthetic batches and policies for unit tests of the core maths."""

from __future__ import annotations

import numpy as np
import torch

from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianMLPPolicy


def tiny_policy(obs_dim: int = 3, act_dim: int = 2, hidden=(5,), seed: int = 0,
                activation: str = "tanh") -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden, activation, init_log_std=-0.3).double()
    with torch.no_grad():  # non-zero biases so every parameter matters
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return policy


def random_batch(n: int = 3, t: int = 6, b: int = 4, obs_dim: int = 3, act_dim: int = 2, seed: int = 1,
                 terminate: bool = True) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, t, b, obs_dim, generator=g, dtype=torch.float64)
    actions = torch.randn(n, t, b, act_dim, generator=g, dtype=torch.float64)
    rewards = torch.randn(n, t, b, generator=g, dtype=torch.float64)
    mask = torch.ones(n, t, b, dtype=torch.float64)
    if terminate:  # a few episodes end early
        mask[0, 3:, 1] = 0
        mask[1, 2:, 0] = 0
    return EpisodeBatch(obs, actions, rewards * mask, mask)


def ant_like_arrays(n=3, t=100, b=5, seed=0):
    """Observations shaped like Ant's: positions and velocities of order 1-10, and contact forces that are
    clipped to [-1, 1] and mostly exactly zero (whole columns of zeros among them)."""
    rng = np.random.default_rng(seed)
    joints = rng.normal(size=(n, t, b, 29)) * np.r_[np.ones(15), 8.0 * np.ones(14)]
    contact = np.clip(rng.normal(size=(n, t, b, 78)) * 3.0, -1, 1) * (rng.random(size=(n, t, b, 78)) < 0.05)
    contact[..., :30] = 0.0  # bodies that never touch anything
    obs = np.concatenate([joints, contact, rng.normal(size=(n, t, b, 12))], axis=-1)
    rewards = rng.normal(size=(n, t, b)) + 0.1 * joints[..., 15] + 0.05 * joints[..., 16] ** 2
    mask = np.ones((n, t, b))
    mask[1, 60:, 2] = 0.0
    return obs, rewards * mask, mask
