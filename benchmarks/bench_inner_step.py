"""Time and memory of one inner step of each inner-update rule, on HalfCheetah's policy.

Each rule runs in a fresh process (so its peak resident memory is its own):
one second-order inner step (the graph kept, as the outer step needs it) of
MAML on a synthetic batch shaped like HalfCheetahVel's (obs 20, actions 6,
policy 64x64 tanh; ``--tasks`` tasks x ``--episodes`` x ``--horizon``), then
the meta-gradient through it. It prints the median time of the step and of
the backward pass over ``--repeats``, the ratio to ``sgd`` measured in the
same run, and the process's peak RSS.

    python benchmarks/bench_inner_step.py                    # 40 x 20 x 100, every rule
    python benchmarks/bench_inner_step.py --rules sgd,lstm --tasks 10
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

RULES = ("sgd", "meta_sgd", "kronecker", "lstm", "blur")


def measure(rule: str, tasks: int, episodes: int, horizon: int, repeats: int, threads: int) -> dict[str, float]:
    import torch

    from metarl.adaptation import adapt_names
    from metarl.algos import MAMLTRPO
    from metarl.episodes import EpisodeBatch
    from metarl.policies import GaussianMLPPolicy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(20, 6, (64, 64), "tanh")
    learner = MAMLTRPO(policy, adapt_names(policy, "all"), inner_lr=0.1, inner_update=rule)
    g = torch.Generator().manual_seed(1)
    shape = (tasks, horizon, episodes)
    batch = EpisodeBatch(torch.randn(*shape, 20, generator=g), torch.randn(*shape, 6, generator=g),
                         torch.randn(*shape, generator=g), torch.ones(shape))
    adv = torch.randn(shape, generator=g)
    steps, backs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        adapted = learner.adapt(batch, adv, create_graph=True)
        t1 = time.perf_counter()
        loss = sum(v.sum() for v in adapted.values())
        torch.autograd.grad(loss, list(learner.meta_params().values()), allow_unused=True)
        steps.append(t1 - t0)
        backs.append(time.perf_counter() - t1)
    coords = sum(v.numel() for k, v in adapted.items() if k in learner.adapt_names)
    return {"step_s": statistics.median(steps), "backward_s": statistics.median(backs), "coordinates": coords,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one rule and print JSON
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.tasks, args.episodes, args.horizon, args.repeats, args.threads)))
        return
    print(f"one second-order inner step on HalfCheetah's policy (20 -> 64 -> 64 -> 6), {args.tasks} tasks x "
          f"{args.episodes} episodes x horizon {args.horizon}, {args.threads} threads, median of {args.repeats}")
    rows = {}
    for rule in args.rules.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", rule, "--tasks", str(args.tasks), "--episodes",
                              str(args.episodes), "--horizon", str(args.horizon), "--repeats", str(args.repeats),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        rows[rule] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{rule:>10}: step {r['step_s'] * 1e3:8.1f} ms, backward {r['backward_s'] * 1e3:8.1f} ms, "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB ({r['coordinates']:,} adapted coordinates)", flush=True)
    if "sgd" in rows:
        base = rows["sgd"]
        for rule, r in rows.items():
            if rule != "sgd":
                print(f"{rule}/sgd: step {r['step_s'] / base['step_s']:.2f}, backward "
                      f"{r['backward_s'] / base['backward_s']:.2f}, "
                      f"peak RSS {r['peak_rss_mb'] / base['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
