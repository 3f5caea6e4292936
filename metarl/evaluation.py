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
from metarl.adaptation import adapt
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.episodes import EpisodeBatch
from metarl.sampling import Sampler
from metarl.trainer import EVAL_ROLLOUTS, EVAL_TASKS, derive_seed, episode_mean_returns, stream_rng

EVAL_SHOTS = 6  # seed stream of the k-shot curve's adaptation and evaluation episodes


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
    inner_lr: float | None = None,
) -> dict[str, Any]:
    """Returns ``{"steps", "mean", "stderr", "per_task", "tasks"}`` (per_task: steps x tasks).

    ``inner_lr`` replaces the trained step size (fixed or Meta-SGD's learned
    ones) at test time with one scalar step size."""
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
            params = adapt_step(learner, params, batch, inner_lr)
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
        "inner_lr": inner_lr,
    }


def adapt_step(learner: MAMLTRPO, params: dict[str, torch.Tensor], batch: Any,
          inner_lr: float | None) -> dict[str, torch.Tensor]:
    """One more inner step on ``batch``: the trained step size, or ``inner_lr`` when given."""
    if inner_lr is None:
        return learner.adapt_further(params, batch, learner.advantages(batch))
    adapted = adapt(learner.policy, params, batch, learner.advantages(batch), float(inner_lr), 1, True,
                    learner.adapt_names)
    return {k: v.detach() for k, v in adapted.items()}


def shots_curve(
    learner: MAMLTRPO,
    family: TaskFamily,
    sampler: Sampler,
    shots: list[int],
    num_tasks: int = 40,
    episodes_per_task: int = 20,
    seed: int = 0,
    inner_lr: float | None = None,
    on_point: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """k-shot curve: the return after one inner step vs the number of adaptation episodes per task.

    For each ``m`` in ``shots`` the meta-policy is adapted on the first ``m``
    episodes of one adaptation batch per task (so larger ``m`` sees a superset
    of the smaller ones' data), then evaluated on ``episodes_per_task`` fresh
    episodes; step 0 is reported once as ``before``.  Held-out tasks and
    seeds are those of :func:`adaptation_curve`.
    """
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive episode counts, got {shots}")
    tasks = held_out_tasks(family, num_tasks, seed)
    meta = {k: v.detach() for k, v in learner.policy.params().items()}
    before = sampler.sample(tasks, meta, episodes_per_task, derive_seed(seed, EVAL_ROLLOUTS, 0))
    adapt_batch = sampler.sample(tasks, meta, max(shots), derive_seed(seed, EVAL_SHOTS, 0))
    per_task, means = [], []
    for m in shots:
        first = EpisodeBatch(adapt_batch.obs[:, :, :m], adapt_batch.actions[:, :, :m], adapt_batch.rewards[:, :, :m],
                             adapt_batch.mask[:, :, :m])  # the first m episodes of every task
        params = adapt_step(learner, meta, first, inner_lr)
        after = sampler.sample(tasks, params, episodes_per_task, derive_seed(seed, EVAL_SHOTS, m))
        returns = episode_mean_returns(after)
        per_task.append([float(r) for r in returns])
        means.append(float(returns.mean()))
        if on_point is not None:
            on_point(m, means[-1])
    arr = np.asarray(per_task)
    stderr = arr.std(axis=1, ddof=1) / math.sqrt(num_tasks) if num_tasks > 1 else np.zeros(len(arr))
    return {"shots": list(shots), "mean": means, "stderr": [float(x) for x in stderr], "per_task": per_task,
            "before": float(episode_mean_returns(before).mean()), "num_tasks": num_tasks,
            "episodes_per_task": episodes_per_task, "seed": seed, "inner_lr": inner_lr,
            "tasks": [_jsonable(t) for t in tasks]}


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
