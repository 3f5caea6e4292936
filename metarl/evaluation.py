"""Test-time adaptation curves on held-out tasks.

``adaptation_curve`` takes a trained meta-learner, samples ``num_tasks``
held-out tasks from a stream that training never uses (so every method
evaluated with the same seed sees the same tasks), and for ``k = 0..steps``
rolls out the current per-task parameters, records the mean return, then
takes one more inner step on those fresh episodes.  Step 0 is the
no-inner-loop (NIL) result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from envs.base import TaskFamily
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.sampling import Sampler
from metarl.trainer import EVAL_ROLLOUTS, EVAL_TASKS, derive_seed, episode_mean_returns, stream_rng


def held_out_tasks(family: TaskFamily, num_tasks: int, seed: int) -> list[dict[str, Any]]:
    return family.sample_tasks(num_tasks, stream_rng(seed, EVAL_TASKS, 0))


def adaptation_curve(
    learner: MAMLTRPO,
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
    arr = np.asarray(per_task)
    stderr = arr.std(axis=1, ddof=1) / math.sqrt(num_tasks) if num_tasks > 1 else np.zeros(len(arr))
    return {
        "steps": list(range(steps + 1)),
        "mean": [float(m) for m in arr.mean(axis=1)],
        "stderr": [float(s) for s in stderr],
        "per_task": per_task,
        "tasks": [_jsonable(t) for t in tasks],
        "num_tasks": num_tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | torch.Tensor):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
