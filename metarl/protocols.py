"""Evaluation protocols: fixed recipes that score a trained meta-learner on a family's test tasks.

:data:`PROTOCOLS` maps a name to a runner ``(learner, family, sampler, seed, ...) -> result dict``;
``metarl evaluate RUN_DIR --protocol NAME`` runs one and :func:`write_protocol_outputs` writes
``RUN_DIR/eval/<name>.json`` and ``.csv`` (one row per test task) and logs the headline scalars
to the run's TensorBoard logs.

``metaworld`` — Meta-World's meta-RL protocol (its evaluation docs): for every test task,
``adaptation_episodes`` = 10 episodes with the meta-policy, one inner step on them, then
``evaluation_episodes`` = 3 episodes with the adapted policy.  An episode succeeds if the env
reported success at any step; the score is the fraction of successful evaluation episodes over
all test tasks (every task weighs the same, as every task has the same number of episodes), with
the standard error over tasks.  Returns before and after adaptation are reported beside it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import Task, TaskFamily
from metarl.algos import MetaLearner
from metarl.evaluation import adapt_step
from metarl.fileio import atomic_write
from metarl.run import derive_seed, episode_mean_returns
from metarl.sampling import Sampler
from metarl.success import mean_and_stderr, task_success_rates

EVAL_PROTOCOL = 8  # seed stream of protocol episodes (beside the trainer's 0..4, shots 6, videos 7)
TASKS_PER_CALL = 50  # test tasks sampled together (bounds memory: 50 x 10 x 500 steps)


def metaworld_protocol(
    learner: MetaLearner,
    family: TaskFamily,
    sampler: Sampler,
    seed: int = 0,
    tasks: Sequence[Task] | None = None,
    adaptation_episodes: int = 10,
    evaluation_episodes: int = 3,
    inner_lr: float | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Meta-World's protocol over ``tasks`` (default: every test task of ``family``).

    Returns ``{"success_rate", "success_stderr", "return_pre", "return_post", "per_task": [...],
    "by_env": {env_name: success rate}, ...}``; ``per_task`` rows hold each task's success rates
    and mean returns before (the adaptation episodes) and after adaptation.
    """
    if tasks is None:
        tasks = family.test_tasks()
        if tasks is None:
            raise ValueError(f"{family.name} has no test tasks of its own; the metaworld protocol needs them")
    tasks = list(tasks)
    if not tasks:
        raise ValueError("the metaworld protocol needs at least one test task")
    if adaptation_episodes < 1 or evaluation_episodes < 1:
        raise ValueError(f"need >= 1 adaptation and evaluation episodes, got {adaptation_episodes}, "
                         f"{evaluation_episodes}")
    meta = {k: v.detach() for k, v in learner.policy.params().items()}
    pre_s, post_s, pre_r, post_r = [], [], [], []
    for c, start in enumerate(range(0, len(tasks), TASKS_PER_CALL)):
        chunk = tasks[start:start + TASKS_PER_CALL]
        before = sampler.sample(chunk, meta, adaptation_episodes, derive_seed(seed, EVAL_PROTOCOL, 2 * c))
        params = adapt_step(learner, meta, before, inner_lr)
        after = sampler.sample(chunk, params, evaluation_episodes, derive_seed(seed, EVAL_PROTOCOL, 2 * c + 1))
        pre_s.append(task_success_rates(before))
        post_s.append(task_success_rates(after))
        pre_r.append(episode_mean_returns(before))
        post_r.append(episode_mean_returns(after))
        if on_chunk is not None:
            on_chunk(start + len(chunk), len(tasks))
    success_pre, success_post = np.concatenate(pre_s), np.concatenate(post_s)
    return_pre, return_post = np.concatenate(pre_r), np.concatenate(post_r)
    return protocol_result(tasks, family.name, success_pre, success_post, return_pre, return_post,
                           adaptation_episodes=adaptation_episodes, adaptation_steps=1,
                           evaluation_episodes=evaluation_episodes, seed=seed, inner_lr=inner_lr)


def protocol_result(tasks: list[dict[str, Any]], family_name: str, success_pre: np.ndarray,
                    success_post: np.ndarray, return_pre: np.ndarray, return_post: np.ndarray,
                    **fields: Any) -> dict[str, Any]:
    """The Meta-World protocol's result from per-task success rates and returns before and after adaptation
    (the gradient methods' inner step, or RL²'s adaptation episodes): the rates with their standard errors, by
    environment, per task, the tasks, then ``fields`` (how the episodes were spent, seed, inner lr)."""

    rate, stderr = mean_and_stderr(success_post)
    rate_pre, stderr_pre = mean_and_stderr(success_pre)
    names = [str(t.get("env_name", family_name)) for t in tasks]
    by_env = {n: float(np.mean([s for s, m in zip(success_post, names, strict=True) if m == n]))
              for n in dict.fromkeys(names)}
    return {
        "protocol": "metaworld",
        "success_rate": rate,
        "success_stderr": stderr,
        "success_rate_pre": rate_pre,
        "success_stderr_pre": stderr_pre,
        "return_pre": float(return_pre.mean()),
        "return_post": float(return_post.mean()),
        "return_post_stderr": mean_and_stderr(return_post)[1],
        "by_env": by_env,
        "num_tasks": len(tasks),
        **fields,
        "per_task": [{"task": i, "env_name": n, "success_pre": float(a), "success_post": float(b),
                      "return_pre": float(c), "return_post": float(d)}
                     for i, (n, a, b, c, d) in enumerate(zip(names, success_pre, success_post, return_pre,
                                                              return_post, strict=True))],
        "tasks": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in t.items()} for t in tasks],
    }


PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {"metaworld": metaworld_protocol}

CSV_FIELDS = ("task", "env_name", "success_pre", "success_post", "return_pre", "return_post")


def write_protocol_outputs(result: dict[str, Any], out: Path, run_dir: Path | None = None,
                           iteration: int = 0) -> dict[str, str]:
    """``out`` (JSON), ``out`` with suffix ``.csv`` (per task); TensorBoard scalars in ``run_dir`` if given.

    Scalars: ``eval/<protocol>_success`` and ``eval/<protocol>_success_stderr`` (and the post-adaptation
    return) at step ``iteration`` (the checkpoint's).
    """
    out = Path(out)
    atomic_write(out, json.dumps(result, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in result["per_task"]:
        writer.writerow({k: row[k] for k in CSV_FIELDS})
    csv_path = out.with_suffix(".csv")
    atomic_write(csv_path, buf.getvalue())
    files = {"json": str(out), "csv": str(csv_path)}
    if run_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        from metarl.tblog import described_scalar

        name = result["protocol"]
        tb = SummaryWriter(str(run_dir), filename_suffix=f".{name}")
        try:  # one event per tag, each with its description (metarl.tblog.TAGS)
            for tag, key in (("success", "success_rate"), ("success_stderr", "success_stderr"),
                             ("return_post", "return_post")):
                tb.file_writer.add_summary(described_scalar(f"eval/{name}_{tag}", result[key]), iteration)
        finally:
            tb.close()
        files["tensorboard"] = str(run_dir)
    return files
