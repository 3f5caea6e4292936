"""Time full meta-iterations for MAML (second order), first-order MAML, ANIL and the learned inner updates.

One run trains each mode for a few iterations on the same family and sizes,
and prints the median time per iteration split into sampling / inner /
outer (CG, line search), plus the ratios ANIL/MAML and FO/MAML of the outer
step measured in the same run.  Modes ending in ``_db`` use the
double-backward KL product (``trpo.curvature=double_backward``), the others
the Gauss-Newton product; each figure is printed next to its ``_db`` twin.
``promp`` and ``maml_ppo`` are the proximal outer loops (Adam epochs, no CG),
timed with the same sampler and sizes; every row gives its env steps per
iteration.

    python benchmarks/bench_meta_iteration.py                      # HalfCheetahVel 40x20x100, 2 local workers
    python benchmarks/bench_meta_iteration.py --family Navigation2D --tasks 20
    python benchmarks/bench_meta_iteration.py --iterations 3 --modes maml,meta_sgd,kronecker
    python benchmarks/bench_meta_iteration.py --modes maml,promp,maml_ppo      # the outer loops
    python benchmarks/bench_meta_iteration.py --modes maml_db,meta_sgd_db,kronecker_db,lstm_db,blur_db  # the rules
    python benchmarks/bench_meta_iteration.py --family Navigation2D --tasks 20 --modes maml,rl2   # RL² beside MAML
    python benchmarks/bench_meta_iteration.py --family Navigation2D --tasks 20 --modes es_blur,es_all  # ES

The learned rules the Gauss-Newton product does not cover (kronecker, lstm,
blur) always take the double-backward product, so the rules compare against
``maml_db`` (plain SGD, the same product).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from metarl.config import load_config
from metarl.trainer import Trainer

GN, DB = ["trpo.curvature=gauss_newton"], ["trpo.curvature=double_backward"]
MODES = {
    "maml": GN,
    "maml_db": DB,
    "anil": GN + ["policy.adapt=head"],
    "anil_db": DB + ["policy.adapt=head"],
    "fomaml": GN + ["algo.first_order=true"],
    "fomaml_db": DB + ["algo.first_order=true"],
    "maml_cg0.25": GN + ["trpo.cg_subsample=0.25"],
    "meta_sgd": GN + ["algo.inner_update=meta_sgd"],
    "meta_sgd_db": DB + ["algo.inner_update=meta_sgd"],
    "kronecker": DB + ["algo.inner_update=kronecker"],
    "kronecker_db": DB + ["algo.inner_update=kronecker"],
    "lstm_db": DB + ["algo.inner_update=lstm"],
    "blur_db": DB + ["algo.inner_update=blur"],
    "rl2": ["algo.name=rl2", "policy.kind=gru"],  # PPO on trials of rl2.episodes_per_trial episodes
    "es_blur": ["algo.name=es", "algo.inner_update=blur", "es.method=cma", "es.params=rule"],  # BLUR's genome by CMA-ES
    "es_all": ["algo.name=es", "es.method=openes", "es.params=all"],  # OpenES on the whole policy
    "promp": ["algo.name=promp"],
    "maml_ppo": ["algo.name=maml_ppo"],
}
DEFAULT_MODES = "maml,maml_db,anil,anil_db"
KEYS = ["time/iteration_s", "time/sampling_s", "time/inner_s", "time/outer_s", "time/cg_s", "time/line_search_s",
        "env_steps"]


def run_mode(args: argparse.Namespace, extra: list[str]) -> dict[str, float]:
    overrides = [
        f"env.family={args.family}", f"env.horizon={args.horizon}", f"algo.meta_batch_size={args.tasks}",
        f"algo.episodes_per_task={args.episodes}", f"sampler.backend={args.backend}",
        f"sampler.workers={args.workers}", f"iterations={args.iterations}", "log.checkpoint_every=1000",
    ] + extra
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        results = Trainer(cfg, Path(tmp)).train()
    timed = results[1:] if len(results) > 1 else results  # the first iteration warms up workers
    for r in timed:  # the proximal outer loops have no CG or line search
        r.scalars["env_steps"] = r.scalars["time/env_steps_per_s"] * r.scalars["time/sampling_s"]
    return {k: statistics.median(r.scalars.get(k, 0.0) for r in timed) for k in KEYS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="HalfCheetahVel")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--backend", default="local")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--iterations", type=int, default=4, help="per mode; the first is not timed")
    p.add_argument("--modes", default=DEFAULT_MODES, help=f"comma-separated subset of {list(MODES)}")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads, main process")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.family}: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}, "
          f"{args.backend} sampler with {args.workers} workers, {args.threads} main-process threads; "
          f"median of {max(args.iterations - 1, 1)} iterations per mode")
    rows = {}
    for mode in args.modes.split(","):
        rows[mode] = run_mode(args, MODES[mode])
        r = rows[mode]
        print(f"{mode:>12}: iteration {r['time/iteration_s']:6.2f} s = sampling {r['time/sampling_s']:5.2f} "
              f"+ inner {r['time/inner_s']:5.2f} + outer {r['time/outer_s']:5.2f} "
              f"(cg {r['time/cg_s']:5.2f}, line search {r['time/line_search_s']:5.2f}); "
              f"{r['env_steps']:,.0f} env steps", flush=True)
    for mode in rows:  # each Gauss-Newton figure next to its double-backward twin
        twin = f"{mode}_db"
        if twin in rows:
            a, b = rows[mode], rows[twin]
            print(f"{mode:>12} vs {twin}: iteration {a['time/iteration_s']:5.2f} vs {b['time/iteration_s']:5.2f} s, "
                  f"outer {a['time/outer_s']:5.2f} vs {b['time/outer_s']:5.2f} s, "
                  f"cg {a['time/cg_s']:5.2f} vs {b['time/cg_s']:5.2f} s")
    for base in ("maml", "maml_db"):
        if base not in rows:
            continue
        for mode in rows:
            if mode != base and mode.endswith("_db") == base.endswith("_db"):
                print(f"{mode}/{base}: outer step {rows[mode]['time/outer_s'] / rows[base]['time/outer_s']:.2f}, "
                      f"iteration {rows[mode]['time/iteration_s'] / rows[base]['time/iteration_s']:.2f}")


if __name__ == "__main__":
    main()
