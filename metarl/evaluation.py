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
import torch

from envs.base import TaskFamily
from metarl import run
from metarl.adaptation import adapt
from metarl.algos import MetaLearner
from metarl.episodes import EpisodeBatch
from metarl.run import EVAL_ROLLOUTS, derive_seed, episode_mean_returns, held_out_tasks, jsonable, mean_stderr
from metarl.rundir import LoadedRun, load_run
from metarl.sampling import Sampler

EVAL_SHOTS = 6  # seed stream of the k-shot curve's adaptation and evaluation episodes


def adaptation_curve(
    learner: MetaLearner,
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

    ``inner_lr`` replaces the trained step rule (fixed, Meta-SGD's learned
    step sizes or the learned preconditioner) at test time with one scalar
    step size; without it every step uses the learner's own rule
    (:meth:`~metarl.algos.base.MetaLearner.adapt_further`)."""
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
    mean, stderr = mean_stderr(np.asarray(per_task), axis=1)
    return {
        "steps": list(range(steps + 1)),
        "mean": mean,
        "stderr": stderr,
        "per_task": per_task,
        "diverged": diverged(per_task),
        "tasks": jsonable(tasks),
        "num_tasks": num_tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
        "inner_lr": inner_lr,
    }


def diverged(per_task: list[list[float]]) -> list[int]:
    """For each point of a curve, the tasks whose return is not finite: their adapted parameters (or the
    family's observations) became NaN or infinite, so their episodes ended with a NaN reward."""
    return [int((~np.isfinite(np.asarray(row, dtype=float))).sum()) for row in per_task]


def divergence_warning(result: dict[str, Any], points: list[Any], what: str) -> str | None:
    """One line naming the first point (``what`` ``points[i]``) where tasks diverged, or None."""
    counts = result.get("diverged") or []
    first = next((i for i, n in enumerate(counts) if n), None)
    if first is None:
        return None
    lr = result.get("inner_lr")
    hint = f"--inner-lr {lr:g} is too large for this policy" if lr is not None else "the trained step diverges"
    return (f"metarl: warning: from {what} {points[first]}, adaptation diverged on {counts[first]} of "
            f"{len(result['per_task'][first])} tasks (non-finite parameters): their returns are NaN, and so is "
            f"the mean; {hint}")


def adapt_step(learner: MetaLearner, params: dict[str, torch.Tensor], batch: Any,
          inner_lr: float | None) -> dict[str, torch.Tensor]:
    """One more inner step on ``batch``: the trained step size, or ``inner_lr`` when given."""
    if inner_lr is None:
        return learner.adapt_further(params, batch, learner.advantages(batch))
    adapted = adapt(learner.policy, params, batch, learner.advantages(batch), float(inner_lr), 1, True,
                    learner.adapt_names)
    return {k: v.detach() for k, v in adapted.items()}


def shots_curve(
    learner: MetaLearner,
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
    _, stderr = mean_stderr(np.asarray(per_task), axis=1)
    return {"shots": list(shots), "mean": means, "stderr": stderr, "per_task": per_task,
            "diverged": diverged(per_task),
            "before": float(episode_mean_returns(before).mean()), "num_tasks": num_tasks,
            "episodes_per_task": episodes_per_task, "seed": seed, "inner_lr": inner_lr,
            "tasks": jsonable(tasks)}


def evaluate_run(run_dir: Path, num_tasks: int = 40, steps: int = 3, episodes_per_task: int | None = None,
                 seed: int = 0, on_step: Callable[[int, float], None] | None = None,
                 inner_lr: float | None = None, iteration: int | None = None,
                 loaded: LoadedRun | None = None) -> dict[str, Any]:
    """:func:`adaptation_curve` of ``run_dir``'s latest checkpoint (or the one at ``iteration``) with the
    run's own sampler.

    ``episodes_per_task`` defaults to the run's.  ``loaded`` is the run as
    :func:`metarl.rundir.load_run` already returned it (it is then not loaded
    again, and ``iteration`` is ignored).  The result also names ``run_dir``
    and the checkpoint's ``iteration``.
    """
    cfg, family, learner, iteration = loaded or load_run(run_dir, iteration)
    episodes = episodes_per_task or cfg.algo.episodes_per_task
    with run.build_sampler(cfg, family, learner.policy) as sampler:
        result = adaptation_curve(learner, family, sampler, num_tasks, steps, episodes, seed, on_step=on_step,
                                  inner_lr=inner_lr)
    result["run_dir"] = str(run_dir)
    result["iteration"] = iteration
    return result
