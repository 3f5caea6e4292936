"""Small synthetic batches and policies for unit tests of the core maths."""

from __future__ import annotations

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
