"""Local sampler start-up: workers forked from the preloading fork server vs spawned interpreters.

Times ``LocalSampler(...)`` plus its first ``sample`` call (the first call
waits for every worker to be ready), then ``close()``, for each start
method, alternating the methods for ``--rounds`` rounds in one process.  The
fork server is started by the first forkserver sampler of the process, so
its first round pays the server's imports (reported separately as
``first``); the later rounds are what every further sampler and every
replacement worker of the same process costs.  The ratio compares medians
measured in this run.

    python benchmarks/bench_sampler_startup.py [--rounds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def start_and_sample(method: str, workers: int) -> float:
    import envs
    from metarl.policies import GaussianMLPPolicy
    from metarl.sampling import PolicySpec
    from metarl.sampling.local import LocalSampler

    family = envs.make_family("HalfCheetahVel", horizon=5)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, [64, 64])
    tasks = family.sample_tasks(workers, np.random.default_rng(0))
    t = time.perf_counter()
    with LocalSampler(family, PolicySpec.of(policy), workers=workers, start_method=method) as sampler:
        sampler.sample(tasks, policy.params(), 1, seed=0)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    times: dict[str, list[float]] = {"spawn": [], "forkserver": []}
    for _ in range(args.rounds):
        for method in times:
            times[method].append(start_and_sample(method, args.workers))
    first = times["forkserver"].pop(0)
    spawn = statistics.median(times["spawn"])
    fork = statistics.median(times["forkserver"])
    print(f"{args.workers} workers, start + first call of 5 steps + close, median of {args.rounds} rounds")
    print(f"  spawn:      {spawn:.2f} s")
    print(f"  forkserver: {fork:.3f} s (the process's first one, which starts the server: {first:.2f} s)")
    print(f"  ratio forkserver / spawn: {fork / spawn:.3f}")


if __name__ == "__main__":
    main()
