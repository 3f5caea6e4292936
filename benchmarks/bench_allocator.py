"""The outer step with and without the allocator thresholds of ``metarl.allocator``.

Each round runs two child processes, one with ``METARL_MALLOC_TUNING=0``
(glibc's defaults) and one with the thresholds, in alternating order.  Each
child builds the same synthetic MAML batch (default: HalfCheetahVel's sizes,
40 tasks x 20 episodes x horizon 100, obs 20, act 6, (64, 64) tanh policy),
then times the whole MAML-TRPO outer step (``MAMLTRPO.update``: the inner
loop with its graph, the gradient, 10 CG iterations of the Gauss-Newton
product, the line search) and one curvature product.  Printed: the median
per mode and the ratio tuned / default, measured in the same run.

    python benchmarks/bench_allocator.py
    python benchmarks/bench_allocator.py --rounds 3 --threads 2 --hidden 64,64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    import torch

    from metarl.algos.maml_trpo import MAMLTRPO
    from metarl.allocator import tune_allocator
    from metarl.episodes import EpisodeBatch
    from metarl.policies import GaussianMLPPolicy

    applied = tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, t, b, o, a = args.tasks, args.horizon, args.episodes, args.obs, args.act
    policy = GaussianMLPPolicy(o, a, tuple(int(h) for h in args.hidden.split(",")))

    def batch() -> EpisodeBatch:
        return EpisodeBatch(torch.randn(n, t, b, o), 0.5 * torch.randn(n, t, b, a), torch.randn(n, t, b),
                            torch.ones(n, t, b))

    train, valid = batch(), batch()
    learner = MAMLTRPO(policy, [k for k, _ in policy.named_parameters()])
    adv = learner.advantages(train)
    outer = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.repeats + 1):  # the first one warms up
        t0 = time.perf_counter()
        learner.update(train, adv, valid)
        outer.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / (args.repeats + 1)
    meta = learner.meta_params()
    valid_adv = learner.advantages(valid).detach()
    old = learner.old_outputs(train, adv, valid)
    hvp = learner.curvature(meta, train, adv, valid, valid_adv, old)
    v = torch.randn(sum(p.numel() for p in meta.values()))
    hvp(v)
    products = []
    for _ in range(args.repeats * 3):
        t0 = time.perf_counter()
        hvp(v)
        products.append(time.perf_counter() - t0)
    print(json.dumps({"applied": applied, "outer": statistics.median(outer[1:]),
                      "product": statistics.median(products), "faults": faults}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="pairs of child processes, order alternating")
    p.add_argument("--repeats", type=int, default=3, help="timed outer steps per child")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--obs", type=int, default=20)
    p.add_argument("--act", type=int, default=6)
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results: dict[str, list[dict[str, float]]] = {"default": [], "tuned": []}
    for r in range(args.rounds):
        order = ["default", "tuned"] if r % 2 == 0 else ["tuned", "default"]
        for mode in order:
            env = dict(os.environ, METARL_MALLOC_TUNING="0" if mode == "default" else "1")
            out = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env, check=True,
                                 capture_output=True, text=True).stdout
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
    print(f"outer step: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, obs {args.obs}, "
          f"act {args.act}, hidden ({args.hidden}), {args.threads} threads; {args.rounds} rounds")
    med = {}
    for mode, rows in results.items():
        med[mode] = {k: statistics.median(row[k] for row in rows) for k in ("outer", "product", "faults")}
        applied = {row["applied"] for row in rows}
        print(f"  {mode:8s} outer step {med[mode]['outer']:.3f} s, one curvature product {med[mode]['product']:.4f} s, "
              f"{med[mode]['faults']:,.0f} page faults per outer step"
              f"  (thresholds applied: {sorted(applied)})")
    print(f"tuned/default: outer step {med['tuned']['outer'] / med['default']['outer']:.2f}, "
          f"product {med['tuned']['product'] / med['default']['product']:.2f}")


if __name__ == "__main__":
    main()
