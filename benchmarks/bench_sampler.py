"""Sampler throughput against the raw physics rate.

For each worker count it measures, in one run:

* **physics**: plain ``mujoco.mj_step`` loops (HalfCheetah, gymnasium's
  ``half_cheetah.xml``, frame_skip 5), no policy and no Python env code, in
  as many processes as workers, over the same total number of env steps as
  the sampler call (tasks x episodes x horizon), with one ``MjData`` per
  episode as the batched env keeps them;
* **sampler**: env steps per second of ``Sampler.sample`` on HalfCheetahVel
  (and Navigation2D) with the (64, 64) tanh policy in the loop;

and prints sampler/physics, 2 workers vs 1, and ray vs local. With ``--sets N`` it
also times N parameter sets on the same tasks (ES's candidates: the task list
repeated per set, ``draw_ids`` keeping each set's episodes) grouped one per
call, one per worker per call (what ES does) and all in one call.

    python benchmarks/bench_sampler.py                       # local and ray, 1 and 2 workers
    python benchmarks/bench_sampler.py --backend local --workers 2 --repeats 5
    python benchmarks/bench_sampler.py --backend local --workers 2 --families Navigation2D --tasks 20 --sets 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from envs.mujoco_base import gym_asset  # noqa: E402
from metarl.policies import GaussianMLPPolicy  # noqa: E402
from metarl.sampling import PolicySpec, make_sampler  # noqa: E402

FRAME_SKIP = 5


def _physics_worker(n_envs: int, horizon: int, seed: int, start: multiprocessing.Barrier,
                    out: multiprocessing.Queue) -> None:
    """Step ``n_envs`` HalfCheetah MjData ``horizon`` env steps each; report seconds."""
    model = mujoco.MjModel.from_xml_path(gym_asset("half_cheetah.xml"))
    datas = [mujoco.MjData(model) for _ in range(n_envs)]
    ctrl = np.random.default_rng(seed).uniform(-1, 1, (horizon, model.nu))
    start.wait()
    t0 = time.perf_counter()
    for t in range(horizon):
        for d in datas:
            d.ctrl[:] = ctrl[t]
            mujoco.mj_step(model, d, nstep=FRAME_SKIP)
    out.put(time.perf_counter() - t0)


def physics_rate(total_envs: int, horizon: int, procs: int) -> float:
    """Env steps/s of plain ``mj_step`` loops in ``procs`` processes (wall time of the slowest)."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(procs), ctx.Queue()
    shares = [len(a) for a in np.array_split(np.arange(total_envs), procs)]
    workers = [ctx.Process(target=_physics_worker, args=(n, horizon, i, start, out)) for i, n in enumerate(shares)]
    for w in workers:
        w.start()
    seconds = max(out.get() for _ in workers)
    for w in workers:
        w.join()
    return total_envs * horizon / seconds


def sampler_rate(backend: str, workers: int, family_name: str, tasks: int, episodes: int, horizon: int,
                 repeats: int) -> tuple[float, list[float], dict[str, float]]:
    """Median env steps/s of ``repeats`` sampling calls (after one warm-up call)."""
    family = envs.make_family(family_name, horizon=horizon)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (64, 64), "tanh")
    task_list = family.sample_tasks(tasks, np.random.default_rng(0))
    with make_sampler(backend, family, PolicySpec.of(policy), workers=workers) as sampler:
        sampler.sample(task_list, policy.params(), episodes, seed=0)  # warm-up: workers start, envs build
        rates = []
        for r in range(repeats):
            t0 = time.perf_counter()
            batch = sampler.sample(task_list, policy.params(), episodes, seed=r + 1)
            seconds = time.perf_counter() - t0
            rates.append(batch.mask.numel() / seconds)  # every (task, step, episode) slot is an env step
        stats = sampler.stats()
    return statistics.median(rates), rates, stats


def grouped_seconds(backend: str, workers: int, family_name: str, tasks: int, episodes: int, horizon: int,
                    sets: int, repeats: int) -> dict[int, list[float]]:
    """Seconds to roll out ``sets`` parameter sets on the same tasks, for each number of sets per call (1,
    ``workers``, ``sets``), ``repeats`` times each, interleaved, after one warm-up call."""
    family = envs.make_family(family_name, horizon=horizon)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (64, 64), "tanh")
    params = {k: v.detach() for k, v in policy.params().items()}
    task_list = family.sample_tasks(tasks, np.random.default_rng(0))
    groups = sorted({1, min(workers, sets), sets})
    out: dict[int, list[float]] = {g: [] for g in groups}
    with make_sampler(backend, family, PolicySpec.of(policy), workers=workers) as sampler:
        sampler.sample(task_list, params, episodes, seed=0)
        for _ in range(repeats):
            for g in groups:
                t0 = time.perf_counter()
                for a in range(0, sets, g):
                    k = min(g, sets - a)
                    sampler.sample(task_list * k, params, episodes, 1, draw_ids=list(range(tasks)) * k)
                out[g].append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", nargs="+", default=["local", "ray"], choices=["local", "ray", "serial"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--families", nargs="+", default=["HalfCheetahVel", "Navigation2D"])
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--sets", type=int, default=0,
                   help="also time this many parameter sets on the same tasks, grouped 1, workers and all per call")
    args = p.parse_args(argv)

    print(f"# {platform.node()} | {os.cpu_count()} cores | python {platform.python_version()} | "
          f"torch {torch.__version__} | mujoco {mujoco.__version__} | load avg {os.getloadavg()[0]:.2f}")
    print(f"# grid: {args.tasks} tasks x {args.episodes} episodes x horizon {args.horizon}; "
          f"median of {args.repeats} calls after one warm-up\n")
    total_envs = args.tasks * args.episodes
    physics = {}
    if "HalfCheetahVel" in args.families:
        for w in args.workers:
            physics[w] = physics_rate(total_envs, args.horizon, w)
            print(f"physics  HalfCheetah mj_step x{FRAME_SKIP}  {w} proc: {physics[w]:10.0f} env steps/s")
    results: dict[tuple[str, str, int], float] = {}
    for family in args.families:
        if family not in envs.family_names():
            print(f"skipping {family}: not registered")
            continue
        for backend in args.backend:
            for w in args.workers:
                if backend == "serial" and w != args.workers[0]:
                    continue
                rate, rates, stats = sampler_rate(backend, w, family, args.tasks, args.episodes, args.horizon,
                                                  args.repeats)
                results[(family, backend, w)] = rate
                util = " ".join(f"{stats[f'utilisation_w{i}']:.2f}" for i in range(w)
                                if f"utilisation_w{i}" in stats)
                line = (f"sampler  {family:15s} {backend:6s} {w} workers: {rate:10.0f} env steps/s "
                        f"(calls: {', '.join(f'{r:.0f}' for r in rates)}; utilisation {util or '-'})")
                if family == "HalfCheetahVel" and w in physics:
                    line += f"  ratio to physics {rate / physics[w]:.2f}"
                print(line, flush=True)
                if args.sets > 1:
                    secs = grouped_seconds(backend, w, family, args.tasks, args.episodes, args.horizon, args.sets,
                                           args.repeats)
                    print("         " + "; ".join(f"{args.sets} sets, {g} per call: "
                                               + ", ".join(f"{x:.2f}" for x in v) + " s" for g, v in secs.items()),
                          flush=True)
    print()
    for family in args.families:
        for backend in args.backend:
            a, b = results.get((family, backend, 1)), results.get((family, backend, 2))
            if a and b:
                print(f"{family:15s} {backend:6s} 2 workers / 1 worker: {b / a:.2f}")
        for w in args.workers:
            loc, ray = results.get((family, "local", w)), results.get((family, "ray", w))
            if loc and ray:
                print(f"{family:15s} ray / local at {w} workers: {ray / loc:.2f}")


if __name__ == "__main__":
    main()
