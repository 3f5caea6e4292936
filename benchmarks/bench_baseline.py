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
and mostly-zero contact columns (``benchmarks.synthetic.ant_like_arrays``, the
tests' own; HalfCheetah's size takes its first 20 columns).

    python benchmarks/bench_baseline.py [--repeats 5] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.synthetic import ant_like_arrays  # noqa: E402
from metarl import baselines  # noqa: E402
from metarl.episodes import EpisodeBatch  # noqa: E402


def lstsq_reference(batch: EpisodeBatch, gamma: float, reg: float = 1e-5) -> torch.Tensor:
    """The fit as it was before the normal equations: default-driver least squares on the stacked system."""
    x, y = baselines.regression_data(batch, gamma)
    w = baselines.stacked_lstsq(x, y, reg)
    return ((x @ w).reshape(batch.mask.shape) * batch.mask).to(batch.rewards.dtype)


def make_batch(obs_dim: int, n: int, t: int, b: int) -> EpisodeBatch:
    obs, rewards, mask = ant_like_arrays(n, t, b)
    # float64 throughout, so that the printed difference is the solvers' and not a float32 rounding
    return EpisodeBatch(torch.tensor(obs[..., :obs_dim]), torch.zeros(n, t, b, 1, dtype=torch.float64),
                        torch.tensor(rewards), torch.tensor(mask))


def median_time(fn, batch: EpisodeBatch, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``fn(batch, 0.99)`` after a warm-up, and its result."""
    out = fn(batch, 0.99)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(batch, 0.99)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


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
            new, a = median_time(baselines.fit_predict, batch, args.repeats)
            ref, r = median_time(lstsq_reference, batch, args.repeats)
            diff = float((a - r).abs().max() / r.abs().max())
            print(f"obs {d:4d} ({2 * d + 4:3d} features), {th} thread(s): cholesky {new * 1e3:8.1f} ms   "
                  f"lstsq {ref * 1e3:8.1f} ms   ratio {new / ref:.3f}   max |difference| / max |value| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
