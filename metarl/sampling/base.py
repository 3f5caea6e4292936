"""Sampler interface: distributes rollouts over workers and assembles batches."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from envs.base import Task, TaskFamily
from metarl.episodes import EpisodeBatch
from metarl.policies import full_stack
from metarl.sampling.worker import PolicySpec, Shard


class Sampler(abc.ABC):
    """``sample(tasks, params, episodes_per_task, seed) -> EpisodeBatch``.

    ``params`` holds the policy's tensors, each either shared by all tasks
    (the policy's own shape) or per task ``(N, *shape)`` (adapted).  The
    result depends only on the seed, the tasks and the parameters, never on
    the backend or the number of workers.
    """

    def __init__(self, family: TaskFamily, spec: PolicySpec):
        self.family = family
        self.spec = spec
        self._shapes = {k: v.detach() for k, v in spec.build().params().items()}

    def sample(self, tasks: Sequence[Task], params: Mapping[str, Tensor], episodes_per_task: int,
               seed: int) -> EpisodeBatch:
        if not tasks:
            raise ValueError("sample needs at least one task")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        stacked = full_stack({k: v.detach() for k, v in params.items()}, self._shapes, len(tasks))
        arrays = {k: v.to(torch.float32).contiguous().numpy() for k, v in stacked.items()}
        parts = self._run(list(tasks), arrays, episodes_per_task, int(seed))
        success = parts.get("success")
        return EpisodeBatch(*(torch.from_numpy(np.ascontiguousarray(parts[k]))
                              for k in ("obs", "actions", "rewards", "mask")),
                            success=None if success is None else torch.from_numpy(np.ascontiguousarray(success)))

    @abc.abstractmethod
    def _run(self, tasks: list[Task], params: dict[str, np.ndarray], episodes_per_task: int,
             seed: int) -> dict[str, np.ndarray]:
        """Return full ``(N, T, B, ...)`` arrays for the grid."""

    def stats(self) -> dict[str, float]:
        """Counters the trainer logs as ``sampler/<key>`` (e.g. ``worker_restarts``)."""
        return {}

    def close(self) -> None:
        """Release workers (no-op for in-process sampling)."""
        return None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_grid(num_tasks: int, episodes_per_task: int, parts: int) -> list[Shard]:
    """Split the (task, episode) grid into at most ``parts`` shards of near-equal size.

    Whole tasks are dealt out when there are at least as many tasks as parts;
    otherwise the parts are shared out over the tasks (task ``t`` gets
    ``parts // num_tasks`` of them, one more for the first ``parts % num_tasks``)
    and each task's episodes are split into that many ranges.
    """
    parts = max(1, int(parts))
    if num_tasks >= parts:
        bounds = np.linspace(0, num_tasks, parts + 1).round().astype(int)
        return [Shard(tuple(range(a, b)), 0, episodes_per_task)
                for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True) if b > a]
    shards = []
    for t in range(num_tasks):
        k = parts // num_tasks + (1 if t < parts % num_tasks else 0)
        bounds = np.linspace(0, episodes_per_task, k + 1).round().astype(int).tolist()
        shards += [Shard((t,), a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    return shards


def assemble(shards: Sequence[Shard], results: Sequence[dict[str, np.ndarray]], num_tasks: int,
             episodes_per_task: int) -> dict[str, np.ndarray]:
    """Place every shard's arrays into full ``(N, T, B, ...)`` arrays."""
    out: dict[str, np.ndarray] = {}
    for shard, res in zip(shards, results, strict=True):
        for k, v in res.items():
            if k not in out:
                out[k] = np.zeros((num_tasks, v.shape[1], episodes_per_task, *v.shape[3:]), dtype=v.dtype)
            out[k][list(shard.task_ids), :, shard.ep_start:shard.ep_stop] = v
    return out
