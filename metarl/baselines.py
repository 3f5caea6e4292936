"""Linear feature baseline, refit per task (Duan et al. 2016).

Features per step: ``[obs, obs^2, t, t^2, t^3, 1]`` with ``t = step / 100``.
The fit is ridge regression of discounted returns on features, solved per
task (batched) with ``torch.linalg.lstsq`` in float64 on the masked steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.episodes import EpisodeBatch, discounted_returns


def features(obs: Tensor, mask: Tensor) -> Tensor:
    """``(N, T, B, 2*obs_dim + 4)`` features; zero rows where ``mask`` is 0."""
    n, t, b, _ = obs.shape
    time = (torch.arange(t, dtype=obs.dtype) / 100.0).view(1, t, 1, 1).expand(n, t, b, 1)
    feats = torch.cat([obs, obs * obs, time, time**2, time**3, torch.ones_like(time)], dim=-1)
    return feats * mask.unsqueeze(-1)


def fit_predict(batch: EpisodeBatch, gamma: float, reg: float = 1e-5) -> Tensor:
    """Fit one linear baseline per task on its own episodes and return the
    predicted values ``(N, T, B)`` (0 on masked steps)."""
    obs = batch.obs.detach().to(torch.float64)
    mask = batch.mask.detach().to(torch.float64)
    x = features(obs, mask)
    n, t, b, f = x.shape
    y = discounted_returns(batch.rewards.detach().to(torch.float64), mask, gamma)
    xf, yf = x.reshape(n, t * b, f), y.reshape(n, t * b, 1)
    # LAPACK rejects non-finite input: fit those tasks on zeros, then mark their values NaN
    bad = ~(torch.isfinite(xf).all(dim=(1, 2)) & torch.isfinite(yf).all(dim=(1, 2)))
    if bad.any():
        xf = torch.where(bad.view(n, 1, 1), torch.zeros_like(xf), xf)
        yf = torch.where(bad.view(n, 1, 1), torch.zeros_like(yf), yf)
    # Ridge as least squares on [X; sqrt(reg) I] w = [y; 0].
    ridge = (reg**0.5) * torch.eye(f, dtype=torch.float64).expand(n, f, f)
    a = torch.cat([xf, ridge], dim=1)
    rhs = torch.cat([yf, torch.zeros(n, f, 1, dtype=torch.float64)], dim=1)
    w = torch.linalg.lstsq(a, rhs).solution  # (N, F, 1)
    values = (xf @ w).reshape(n, t, b) * mask
    values[bad] = float("nan")
    return values.to(batch.rewards.dtype)
