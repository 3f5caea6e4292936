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
matrix: for Ant's 242 features the fit takes about a fifth of the time with
two threads (``benchmarks/bench_baseline.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.episodes import EpisodeBatch, discounted_returns


def features(obs: Tensor, mask: Tensor) -> Tensor:
    """``(N, T, B, 2*obs_dim + 4)`` features; zero rows where ``mask`` is 0."""
    n, t, b, _ = obs.shape
    time = (torch.arange(t, dtype=obs.dtype, device=obs.device) / 100.0).view(1, t, 1, 1).expand(n, t, b, 1)
    feats = torch.cat([obs, obs * obs, time, time**2, time**3, torch.ones_like(time)], dim=-1)
    return feats * mask.unsqueeze(-1)


def regression_data(batch: EpisodeBatch, gamma: float) -> tuple[Tensor, Tensor]:
    """Each task's regression in float64: features ``(N, T*B, F)`` and discounted returns ``(N, T*B, 1)``,
    zero on masked steps."""
    mask = batch.mask.detach().to(torch.float64)
    x = features(batch.obs.detach().to(torch.float64), mask)
    y = discounted_returns(batch.rewards.detach().to(torch.float64), mask, gamma)
    n = x.shape[0]
    return x.reshape(n, -1, x.shape[-1]), y.reshape(n, -1, 1)


def stacked_lstsq(x: Tensor, y: Tensor, reg: float, driver: str | None = None) -> Tensor:
    """Ridge weights ``(N, F, 1)`` as least squares on ``[X; sqrt(reg) I] w = [y; 0]`` (no ``XᵀX`` formed)."""
    n, _, f = x.shape
    a = torch.cat([x, (reg**0.5) * torch.eye(f, dtype=x.dtype, device=x.device).expand(n, f, f)], dim=1)
    rhs = torch.cat([y, torch.zeros(n, f, 1, dtype=y.dtype, device=y.device)], dim=1)
    return torch.linalg.lstsq(a, rhs, driver=driver).solution


def ridge_weights(x: Tensor, y: Tensor, reg: float) -> Tensor:
    """Ridge weights ``(N, F, 1)`` from ``(XᵀX + reg I) w = Xᵀy`` by Cholesky; the tasks whose matrix
    Cholesky rejects go to :func:`stacked_lstsq` with SVD (sound where ``X`` is rank-deficient)."""
    xt = x.transpose(1, 2)
    chol, info = torch.linalg.cholesky_ex(xt @ x + reg * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device))
    w = torch.cholesky_solve(xt @ y, chol)
    singular = info != 0
    if singular.any():
        w[singular] = stacked_lstsq(x[singular], y[singular], reg, driver="gelsd")
    return w


def fit_predict(batch: EpisodeBatch, gamma: float, reg: float = 1e-5) -> Tensor:
    """Fit one linear baseline per task on its own episodes and return the
    predicted values ``(N, T, B)`` (0 on masked steps)."""
    xf, yf = regression_data(batch, gamma)
    n, t, b = batch.mask.shape
    # LAPACK rejects non-finite input: fit those tasks on zeros, then mark their values NaN
    bad = ~(torch.isfinite(xf).all(dim=(1, 2)) & torch.isfinite(yf).all(dim=(1, 2)))
    if bad.any():
        xf = torch.where(bad.view(n, 1, 1), torch.zeros_like(xf), xf)
        yf = torch.where(bad.view(n, 1, 1), torch.zeros_like(yf), yf)
    values = (xf @ ridge_weights(xf, yf, reg)).reshape(n, t, b) * batch.mask  # float64: mask is 0 or 1
    values[bad] = float("nan")
    return values.to(batch.rewards.dtype)
