"""Linear feature baseline, refit per task (Duan et al. 2016).

Features per step: ``[obs, obs^2, t, t^2, t^3, 1]`` with ``t = step / 100``.
The fit is ridge regression of discounted returns on features, per task
(batched), in float64 on the masked steps: the normal equations
``(XᵀX + reg I) w = Xᵀy`` by Cholesky, as the reference implementations
solve them.  A task whose matrix is not numerically positive definite
(``reg = 0`` with a constant-zero feature, say) is solved instead as least
squares (SVD) on the stacked system ``[X; sqrt(reg) I] w = [y; 0]``, which has
the same solution whenever it is unique.  Cholesky costs one batched
``XᵀX`` (one GEMM) where least squares runs a pivoted QR of the tall
matrix: for Ant's 242 features the fit takes about a twentieth of the time
(``benchmarks/bench_baseline.py``).
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
    eye = torch.eye(f, dtype=torch.float64)
    xt = xf.transpose(1, 2)
    chol, info = torch.linalg.cholesky_ex(xt @ xf + reg * eye)
    w = torch.cholesky_solve(xt @ yf, chol)  # (N, F, 1)
    singular = info != 0
    if singular.any():  # least squares on [X; sqrt(reg) I] w = [y; 0] for those tasks
        xs, ys = xf[singular], yf[singular]
        k = xs.shape[0]
        a = torch.cat([xs, (reg**0.5) * eye.expand(k, f, f)], dim=1)
        rhs = torch.cat([ys, torch.zeros(k, f, 1, dtype=torch.float64)], dim=1)
        w[singular] = torch.linalg.lstsq(a, rhs, driver="gelsd").solution  # SVD: sound where X is rank-deficient
    values = (xf @ w).reshape(n, t, b) * mask
    values[bad] = float("nan")
    return values.to(batch.rewards.dtype)
