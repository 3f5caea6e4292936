"""The linear baseline's fit: Cholesky on the normal equations against least squares, same run.

``metarl.baselines.fit_predict`` solves each task's ridge regression
``(XᵀX + reg I) w = Xᵀy`` by Cholesky.  The reference timed beside it is
the previous solver, ``torch.linalg.lstsq`` (pivoted QR) on the stacked
system ``[X; sqrt(reg) I] w = [y; 0]``, on the same features and targets.
For each observation size (HalfCheetah's 20, Ant's 119) and intra-op thread
count it prints the median time of both, their ratio, and the largest
difference of the predicted values relative to the largest value.

Sizes: ``--tasks`` x ``--episodes`` x ``--horizon`` steps (40 x 20 x 100,
the campaign's), float64, observations with Ant's mix of large velocities
and mostly-zero contact columns (see ``tests/test_references.py``).

    python benchmarks/bench_baseline.py [--repeats 5] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metarl import baselines  # noqa: E402
from metarl.episodes import EpisodeBatch, discounted_returns  # noqa: E402


def lstsq_reference(batch: EpisodeBatch, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """The stacked least-squares fit (the solver before the normal equations), finite inputs only."""
    obs, mask = batch.obs.to(torch.float64), batch.mask.to(torch.float64)
    x = baselines.features(obs, mask)
    n, t, b, f = x.shape
    y = discounted_returns(batch.rewards.to(torch.float64), mask, gamma)
    xf, yf = x.reshape(n, t * b, f), y.reshape(n, t * b, 1)
    a = torch.cat([xf, (reg**0.5) * torch.eye(f, dtype=torch.float64).expand(n, f, f)], dim=1)
    rhs = torch.cat([yf, torch.zeros(n, f, 1, dtype=torch.float64)], dim=1)
    w = torch.linalg.lstsq(a, rhs).solution
    return ((xf @ w).reshape(n, t, b) * mask).to(batch.rewards.dtype)


def make_batch(obs_dim: int, n: int, t: int, b: int, seed: int = 0) -> EpisodeBatch:
    rng = np.random.default_rng(seed)
    k = min(29, obs_dim)
    joints = rng.normal(size=(n, t, b, k)) * np.where(np.arange(k) < k // 2, 1.0, 8.0)
    rest = obs_dim - k
    contact = np.clip(rng.normal(size=(n, t, b, rest)) * 3.0, -1, 1) * (rng.random(size=(n, t, b, rest)) < 0.05)
    contact[..., : rest // 3] = 0.0
    obs = np.concatenate([joints, contact], axis=-1)
    rewards = rng.normal(size=(n, t, b)) + 0.1 * joints[..., 0] + 0.05 * joints[..., -1] ** 2
    return EpisodeBatch(torch.tensor(obs, dtype=torch.float32), torch.zeros(n, t, b, 1),
                        torch.tensor(rewards, dtype=torch.float32), torch.ones(n, t, b))


def median_time(fn, batch: EpisodeBatch, repeats: int) -> float:
    fn(batch, 0.99)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch, 0.99)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=100)
    ap.add_argument("--obs-dims", default="20,119", help="comma-separated observation sizes")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(f"{args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}; median of {args.repeats}")
    for d in (int(v) for v in args.obs_dims.split(",")):
        batch = make_batch(d, args.tasks, args.horizon, args.episodes)
        for th in (int(v) for v in args.threads.split(",")):
            torch.set_num_threads(th)
            new = median_time(baselines.fit_predict, batch, args.repeats)
            ref = median_time(lstsq_reference, batch, args.repeats)
            a, r = baselines.fit_predict(batch, 0.99).double(), lstsq_reference(batch, 0.99).double()
            diff = float((a - r).abs().max() / r.abs().max())
            print(f"obs {d:4d} ({2 * d + 4:3d} features), {th} thread(s): cholesky {new * 1e3:8.1f} ms   "
                  f"lstsq {ref * 1e3:8.1f} ms   ratio {new / ref:.3f}   max |difference| / max |value| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
