"""Batched env stepping throughput as a ratio to a raw ``mujoco.mj_step`` loop.

For each family, one process, ``--envs`` environments (default 200):

* ``batched``: ``family.make_vector(tasks).step(actions)`` -- action checks,
  clipping, physics, observations and rewards for every env;
* ``raw ctrl+step``: the same model and number of ``MjData``, a plain Python
  loop ``data.ctrl[:] = a; mj_step(model, data, nstep=frame_skip)`` with the
  same actions (same physics work), no observations or rewards;
* ``raw step``: the same loop without setting ``ctrl`` (zero torques);
* with ``--rollout``: ``mujoco.rollout`` (1 and 2 threads) stepping the same
  start states and actions, full physics state in and out per env step --
  for comparison only: it returns no ``xipos``/``cfrc_ext`` for observations
  and does not carry the solver warm start, so it cannot reproduce the
  single-env trajectories bit for bit.

It also times building the batched env (``make_vector``) the first time in
the process and again (simulator data then come from the pool).

Actions come from a seeded generator and are drawn before timing.  Each
measurement is repeated ``--repeats`` times, interleaved, and the best time
is kept.  Prints env steps/s and the ratios batched / raw.

    python benchmarks/bench_env_stepping.py [--envs 200] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import mujoco
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402  (the repository root on the path, for running without installing)
from envs.mujoco_base import load_model  # noqa: E402


def _start_states(venv, seeds):
    """Reset ``venv`` and return its physics states, to start every loop from the same place."""
    venv.reset(seeds)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    out = []
    for m, d in zip(venv.models, venv.datas, strict=True):
        s = np.empty(mujoco.mj_stateSize(m, spec))
        mujoco.mj_getState(m, d, s, spec)
        out.append(s)
    return out


def _set_states(models, datas, states):
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    for m, d, s in zip(models, datas, states, strict=True):
        mujoco.mj_resetData(m, d)
        mujoco.mj_setState(m, d, s, spec)
        mujoco.mj_forward(m, d)


def time_batched(venv, seeds, actions) -> float:
    venv.reset(seeds)
    t0 = time.perf_counter()
    for a in actions:
        venv.step(a)
    return time.perf_counter() - t0


def time_raw(model, datas, states, actions, frame_skip: int, set_ctrl: bool) -> float:
    _set_states([model] * len(datas), datas, states)
    step = mujoco.mj_step
    applied = np.clip(actions, -1.0, 1.0).astype(np.float64)
    t0 = time.perf_counter()
    if set_ctrl:
        for a in applied:
            for i, d in enumerate(datas):
                d.ctrl[:] = a[i]
                step(model, d, nstep=frame_skip)
    else:
        for _ in range(len(applied)):
            for d in datas:
                step(model, d, nstep=frame_skip)
    return time.perf_counter() - t0


def time_rollout(model, states, actions, frame_skip: int, nthread: int) -> float:
    from mujoco import rollout

    datas = [mujoco.MjData(model) for _ in range(nthread)]
    models = [model] * len(states)
    state = np.array(states)
    applied = np.clip(actions, -1.0, 1.0).astype(np.float64)
    t0 = time.perf_counter()
    for a in applied:
        ctrl = np.repeat(a[:, None, :], frame_skip, axis=1)
        out, _ = rollout.rollout(models, datas, state, ctrl, persistent_pool=True)
        state = out[:, -1]
    return time.perf_counter() - t0


def bench(name: str, n_envs: int, steps: int, repeats: int, seed: int = 0,
          with_rollout: bool = False) -> dict[str, float]:
    family = envs.make_family(name)
    rng = np.random.default_rng(seed)
    tasks = family.sample_tasks(n_envs, rng)
    t0 = time.perf_counter()
    venv = family.make_vector(tasks)
    build_cold = time.perf_counter() - t0
    del venv
    t0 = time.perf_counter()
    venv = family.make_vector(tasks)
    build_warm = time.perf_counter() - t0
    seeds = list(range(seed, seed + n_envs))
    actions = rng.uniform(-1.0, 1.0, size=(steps, n_envs, venv.act_dim)).astype(np.float32)
    states = _start_states(venv, seeds)
    model = load_model(venv.proto.fullpath)
    datas = [mujoco.MjData(model) for _ in range(n_envs)]
    fs = venv.frame_skip
    time_batched(venv, seeds, actions[:5])  # warm up
    best = {"batched": np.inf, "raw ctrl+step": np.inf, "raw step": np.inf}
    for _ in range(repeats):
        best["batched"] = min(best["batched"], time_batched(venv, seeds, actions))
        best["raw ctrl+step"] = min(best["raw ctrl+step"], time_raw(model, datas, states, actions, fs, True))
        best["raw step"] = min(best["raw step"], time_raw(model, datas, states, actions, fs, False))
        if with_rollout:
            for nth in (1, 2):
                key = f"rollout x{nth}"
                best[key] = min(best.get(key, np.inf), time_rollout(model, states, actions, fs, nth))
    env_steps = n_envs * steps
    rates = {k: env_steps / v for k, v in best.items()}
    print(f"{name}: {n_envs} envs x {steps} steps, frame_skip {fs} (best of {repeats})")
    for k, r in rates.items():
        print(f"  {k:14s} {r:10.0f} env steps/s  ({r * fs:10.0f} mj_step/s)")
    print(f"  ratio batched / raw ctrl+step = {rates['batched'] / rates['raw ctrl+step']:.3f}")
    print(f"  ratio batched / raw step      = {rates['batched'] / rates['raw step']:.3f}")
    print(f"  make_vector({n_envs}): first {build_cold * 1e3:.1f} ms, again {build_warm * 1e3:.1f} ms")
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", type=int, default=200)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--families", nargs="+", default=["HalfCheetahVel", "AntVel"])
    p.add_argument("--rollout", action="store_true", help="also time mujoco.rollout (1 and 2 threads)")
    args = p.parse_args()
    print(f"mujoco {mujoco.__version__}, numpy {np.__version__}, {os.cpu_count()} cpus")
    for name in args.families:
        bench(name, args.envs, args.steps, args.repeats, with_rollout=args.rollout)


if __name__ == "__main__":
    main()
