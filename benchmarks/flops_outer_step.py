"""Floating-point work of the MAML-TRPO outer step, counted, not timed: MAML against ANIL.

Builds the synthetic batch of ``bench_allocator.py`` (default: HalfCheetahVel's
sizes, 40 tasks x 20 episodes x horizon 100, obs 20, act 6, (64, 64) tanh
policy) and counts, with torch's FLOP formulas (``torch.utils.flop_counter``), the
matmul FLOPs of

* one curvature product (the conjugate gradient's ``v -> H v``, built once),
* building it (cached activations, inner gradients),
* the whole outer step (``MAMLTRPO.update``: inner loop, gradient, 10 CG
  iterations, line search),

for each mode: ``maml`` and ``anil`` with the Gauss-Newton product, and
``maml_db`` / ``anil_db`` with the double-backward one.  Counts do not depend
on what else the machine is doing, so this runs beside a campaign; it uses one
thread so that every chunk runs under the counter.  With the measured time of
a product it also prints the FLOP rate against two references timed in the
same run: a plain matmul of the hidden layer's shape (one 4-task chunk's
rows, the product's dominant kernel) and a large square one.  Rates are
timings: read them on a quiet machine; the FLOP counts hold anywhere.

    python benchmarks/flops_outer_step.py
    python benchmarks/flops_outer_step.py --family-sizes navigation   # Navigation2D: 20x20x100, obs 2, act 2
    python benchmarks/flops_outer_step.py --split --threads 2          # time the outer step's parts instead

``--split`` times the parts of one outer step with ``--threads`` intra-op
threads (the trainer's setting is 2 on this machine), median of 3 after a
warm-up: the valid batch's old outputs, the surrogate with its graph, the
meta-gradient, building the curvature product, one product, and one
line-search evaluation (the surrogate at a candidate, no graph).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from metarl.algos.maml_trpo import MAMLTRPO
from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianMLPPolicy

SIZES = {
    "halfcheetah": dict(tasks=40, episodes=20, horizon=100, obs=20, act=6, hidden="64,64"),
    "navigation": dict(tasks=20, episodes=20, horizon=100, obs=2, act=2, hidden="64,64"),
}
MODES = {"maml": ("all", "gauss_newton"), "anil": ("head", "gauss_newton"),
         "maml_db": ("all", "double_backward"), "anil_db": ("head", "double_backward")}


FORMULAS = {str(k).split(".")[-1]: f for k, f in flop_registry.items()}


class MatmulFlops(TorchDispatchMode):
    """Sums torch's own FLOP formulas (mm, addmm, bmm, baddbmm) over every op dispatched under it.

    The registry knows the out-of-place ops only; their in-place forms
    (``addmm_``, ``baddbmm_``, which the curvature products use to accumulate)
    do the same arithmetic and are counted with the same formula.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FORMULAS.get(func._overloadpacket.__name__.rstrip("_"))
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count(fn) -> int:
    with MatmulFlops() as counter:
        fn()
    return counter.total


def timed(fn, repeats: int = 3):
    """``(median seconds of fn() over repeats calls after one warm-up, the last result)``."""
    seconds, out = [], None
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds[1:]), out


def setup(args: argparse.Namespace, mode: str):
    """The learner of ``mode`` with a synthetic train and valid batch: ``(learner, train, adv, valid)``."""
    adapt, curvature = MODES[mode]
    torch.manual_seed(0)
    n, t, b, o, a = args.tasks, args.horizon, args.episodes, args.obs, args.act
    policy = GaussianMLPPolicy(o, a, tuple(int(h) for h in args.hidden.split(",")))
    gen = torch.Generator().manual_seed(1)

    def batch() -> EpisodeBatch:
        return EpisodeBatch(torch.randn(n, t, b, o, generator=gen), 0.5 * torch.randn(n, t, b, a, generator=gen),
                            torch.randn(n, t, b, generator=gen), torch.ones(n, t, b))

    train, valid = batch(), batch()
    names = [k for k, _ in policy.named_parameters()] if adapt == "all" else policy.head_names()
    learner = MAMLTRPO(policy, names)
    learner.trpo.curvature = curvature
    return learner, train, learner.advantages(train), valid


def measure(args: argparse.Namespace, mode: str) -> dict[str, float]:
    """Matmul FLOPs of a product, its build and a whole outer step, and the product's seconds."""
    learner, train, adv, valid = setup(args, mode)
    gen = torch.Generator().manual_seed(2)
    meta = learner.meta_params()
    valid_adv = learner.advantages(valid).detach()
    old = learner.old_outputs(train, adv, valid)
    box: dict[str, object] = {}
    build = count(lambda: box.setdefault("hvp", learner.curvature(meta, train, adv, valid, valid_adv, old)))
    hvp = box["hvp"]
    v = torch.randn(sum(p.numel() for p in meta.values()), generator=gen)
    product = count(lambda: hvp(v))  # type: ignore[operator]
    sec, _ = timed(lambda: hvp(v), args.repeats)  # type: ignore[operator]
    update = count(lambda: learner.update(train, adv, valid))
    return {"product": product, "build": build, "update": update, "product_s": sec}


def split(args: argparse.Namespace, mode: str) -> dict[str, float]:
    """Seconds of each part of one outer step (see the module docstring)."""
    from metarl.algos.maml_trpo import flat_grad

    learner, train, adv, valid = setup(args, mode)
    meta = learner.meta_params()
    tensors = list(meta.values())
    valid_adv = learner.advantages(valid).detach()
    adapted = learner.adapt(train, adv)

    res: dict[str, float] = {}
    res["old outputs"], old = timed(lambda: learner.old_outputs(train, adv, valid, adapted))
    res["surrogate+graph"], _ = timed(lambda: learner.objective(meta, train, adv, valid, valid_adv, old))

    def gradient():
        loss, _ = learner.objective(meta, train, adv, valid, valid_adv, old)
        return flat_grad(loss, tensors)

    both, g = timed(gradient)
    res["meta-gradient"] = both - res["surrogate+graph"]
    res["build"], hvp = timed(lambda: learner.curvature(meta, train, adv, valid, valid_adv, old))
    v = torch.randn_like(g)
    res["product"], _ = timed(lambda: hvp(v))
    res["line-search eval"], _ = timed(
        lambda: learner.objective(meta, train, adv, valid, valid_adv, old, create_graph=False))
    return res


def gemm_rate(m: int, k: int, n: int, repeats: int) -> float:
    """GFLOP/s of ``(m, k) @ (k, n)`` on this thread: the reference the products' rates are read against."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    calls = max(1, int(2e8 // (2 * m * k * n)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / calls)
    return 2 * m * k * n / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family-sizes", choices=sorted(SIZES), default="halfcheetah")
    parser.add_argument("--modes", default="maml,anil,maml_db,anil_db")
    parser.add_argument("--repeats", type=int, default=5, help="timed products per mode (median)")
    parser.add_argument("--split", action="store_true", help="time the outer step's parts instead of counting")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads with --split (counts use 1)")
    args = parser.parse_args()
    for key, value in SIZES[args.family_sizes].items():
        setattr(args, key, value)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        parser.error(f"unknown mode {bad[0]!r} (choose from {', '.join(MODES)})")
    if args.split:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        from metarl.allocator import tune_allocator

        tune_allocator()  # as the trainer does
        torch.set_num_threads(args.threads)
        print(f"{args.family_sizes}: outer step's parts, {args.threads} threads, seconds (median of 3)")
        for m in modes:
            parts = split(args, m)
            print(f"{m:>8}: " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
        return
    torch.set_num_threads(1)
    print(f"{args.family_sizes}: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, "
          f"obs {args.obs}, act {args.act}, hidden ({args.hidden}); 1 thread; GFLOP = 1e9 matmul FLOPs")
    width = max(int(h) for h in args.hidden.split(","))
    rows = 4 * args.episodes * args.horizon  # one 4-task chunk's train rows
    ref = {f"({rows}x{width}) @ ({width}x{width})": gemm_rate(rows, width, width, args.repeats),
           "(2048x2048) @ (2048x2048)": gemm_rate(2048, 2048, 2048, args.repeats)}
    res = {m: measure(args, m) for m in modes}
    for shape, rate in ref.items():
        print(f"reference matmul {shape}: {rate:5.1f} GFLOP/s")
    hidden_rate = next(iter(ref.values()))
    for m, r in res.items():
        rate = r["product"] / r["product_s"] / 1e9
        print(f"{m:>8}: product {r['product'] / 1e9:7.3f} GFLOP ({r['product_s'] * 1e3:6.1f} ms, "
              f"{rate:5.1f} GFLOP/s = {rate / hidden_rate:.2f} of the hidden-layer matmul)  "
              f"build {r['build'] / 1e9:6.3f}  whole outer step {r['update'] / 1e9:7.3f} GFLOP")
    for num, den in (("anil", "maml"), ("anil_db", "maml_db"), ("maml", "maml_db"), ("anil", "anil_db")):
        if num in res and den in res:
            print(f"{num}/{den}: product FLOPs {res[num]['product'] / res[den]['product']:.3f}, "
                  f"outer step FLOPs {res[num]['update'] / res[den]['update']:.3f}, "
                  f"product time {res[num]['product_s'] / res[den]['product_s']:.3f}")


if __name__ == "__main__":
    main()
