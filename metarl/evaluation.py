"""Test-time adaptation curves on held-out tasks.

``adaptation_curve`` takes a trained meta-learner, samples ``num_tasks``
held-out tasks from a stream that training never uses (so every method
evaluated with the same seed sees the same tasks), and for ``k = 0..steps``
rolls out the current per-task parameters, records the mean return, then
takes one more inner step on those fresh episodes.  Step 0 is the
no-inner-loop (NIL) result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import TaskFamily
from metarl import run
from metarl.algos import MetaLearner
from metarl.run import EVAL_ROLLOUTS, derive_seed, episode_mean_returns, held_out_tasks, jsonable, mean_stderr
from metarl.sampling import Sampler


def adaptation_curve(
    learner: MetaLearner,
    family: TaskFamily,
    sampler: Sampler,
    num_tasks: int = 40,
    steps: int = 3,
    episodes_per_task: int = 20,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Returns ``{"steps", "mean", "stderr", "per_task", "tasks"}`` (per_task: steps x tasks)."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    tasks = held_out_tasks(family, num_tasks, seed)
    params = {k: v.detach() for k, v in learner.policy.params().items()}
    per_task: list[list[float]] = []
    for k in range(steps + 1):
        batch = sampler.sample(tasks, params, episodes_per_task, derive_seed(seed, EVAL_ROLLOUTS, k))
        returns = episode_mean_returns(batch)
        per_task.append([float(r) for r in returns])
        if on_step is not None:
            on_step(k, float(returns.mean()))
        if k < steps:
            params = learner.adapt_further(params, batch, learner.advantages(batch))
    mean, stderr = mean_stderr(np.asarray(per_task), axis=1)
    return {
        "steps": list(range(steps + 1)),
        "mean": mean,
        "stderr": stderr,
        "per_task": per_task,
        "tasks": jsonable(tasks),
        "num_tasks": num_tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
    }


def evaluate_run(run_dir: Path, num_tasks: int = 40, steps: int = 3, episodes_per_task: int | None = None,
                 seed: int = 0, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """:func:`adaptation_curve` of ``run_dir``'s latest checkpoint with the run's own sampler.

    ``episodes_per_task`` defaults to the run's.  The result also names
    ``run_dir`` and the checkpoint's ``iteration``.
    """
    cfg, family, learner, iteration = run.load_run(run_dir)
    episodes = episodes_per_task or cfg.algo.episodes_per_task
    with run.build_sampler(cfg, family, learner.policy) as sampler:
        result = adaptation_curve(learner, family, sampler, num_tasks, steps, episodes, seed, on_step=on_step)
    result["run_dir"] = str(run_dir)
    result["iteration"] = iteration
    return result
