"""Sampler interface: distributes rollouts over workers and assembles batches."""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from envs.base import Task, TaskFamily
from metarl.episodes import EpisodeBatch
from metarl.policies import stack_params
from metarl.sampling.worker import PolicySpec, Shard


class Sampler(abc.ABC):
    """``sample(tasks, params, episodes_per_task, seed) -> EpisodeBatch``.

    ``params`` holds the policy's tensors, each either shared by all tasks
    (the policy's own shape) or per task ``(N, *shape)`` (adapted).  The
    result depends only on the seed, the tasks and the parameters, never on
    the backend or the number of workers.

    ``draw_ids`` (optional, one per task) names the id each task's episodes draw their randomness from (by
    default its position in ``tasks``): a call that repeats a task list for several parameter sets gives
    every repeat the same ids, and each set's episodes are those it would get in a call of its own.

    The base class does the shared work: checks the call, stacks the
    parameters, splits the (task, episode) grid into one shard per worker,
    assembles the shards' arrays, times the call, counts worker restarts,
    reports :meth:`stats` and refuses calls after :meth:`close`.  A backend
    implements :meth:`_dispatch` (run shard ``i`` on worker ``i``, replacing
    workers that die via :meth:`_count_restart`) and :meth:`_release`.
    """

    def __init__(self, family: TaskFamily, spec: PolicySpec, workers: int = 1, max_retries: int = 3):
        if int(workers) < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.family = family
        self.spec = spec
        self.num_workers = int(workers)
        self.max_retries = int(max_retries)
        self._shapes = {k: v.detach() for k, v in spec.build().params().items()}
        self._restarts = 0
        self._busy = [0.0] * self.num_workers  # seconds each worker spent rolling out in the last call
        self._last_wall = 0.0
        self._closed = False
        self._log = logging.getLogger(type(self).__module__)

    def sample(self, tasks: Sequence[Task], params: Mapping[str, Tensor], episodes_per_task: int,
               seed: int, draw_ids: Sequence[int] | None = None) -> EpisodeBatch:
        if not tasks:
            raise ValueError("sample needs at least one task")
        if draw_ids is not None and len(draw_ids) != len(tasks):
            raise ValueError(f"draw_ids has {len(draw_ids)} ids for {len(tasks)} tasks")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        tasks = list(tasks)
        # the workers' CPU copies, made once per call (the learner's tensors may live on another device)
        stacked = stack_params({k: v.detach().cpu() for k, v in params.items()}, self._shapes, len(tasks))
        arrays = {k: v.to(torch.float32).contiguous().numpy() for k, v in stacked.items()}
        shards = split_grid(len(tasks), episodes_per_task, self.num_workers)
        if draw_ids is not None:
            ids = [int(i) for i in draw_ids]
            shards = [dataclasses.replace(s, draws=tuple(ids[t] for t in s.task_ids)) for s in shards]
        start = time.perf_counter()
        self._busy = [0.0] * self.num_workers
        results = self._dispatch(tasks, arrays, shards, int(seed))
        self._last_wall = time.perf_counter() - start
        parts = assemble(shards, results, len(tasks), episodes_per_task)
        success = parts.get("success")
        return EpisodeBatch(*(torch.from_numpy(np.ascontiguousarray(parts[k]))
                              for k in ("obs", "actions", "rewards", "mask")),
                            success=None if success is None else torch.from_numpy(np.ascontiguousarray(success)))

    @abc.abstractmethod
    def _dispatch(self, tasks: list[Task], params: dict[str, np.ndarray], shards: list[Shard],
                  seed: int) -> list[dict[str, np.ndarray]]:
        """Run shard ``i`` on worker ``i``; return every shard's arrays ``(n_i, T, b_i, ...)`` in shard order.

        Records worker ``i``'s rollout seconds in ``self._busy[i]``.
        """

    def _count_restart(self, worker: int, deaths: int, why: str) -> None:
        """A worker died on its shard (the ``deaths``-th time): log and count it, or give up.

        Raises :class:`RuntimeError` once one shard has killed its worker
        more than ``max_retries`` times in a call.
        """
        self._restarts += 1
        self._log.warning("sampler worker %d died (%s); starting a replacement and re-running its shard "
                          "with the same seed", worker, why)
        if deaths > self.max_retries:
            raise RuntimeError(f"sampler worker {worker} died {deaths} times on the same shard ({why}); giving up")

    def stats(self) -> dict[str, float]:
        """Counters the trainer logs as ``sampler/<key>``: ``worker_restarts`` (cumulative),
        ``workers``, ``last_call_s`` and ``utilisation_w<i>``, the fraction of the
        last call's wall time worker ``i`` spent rolling out."""
        out = {"worker_restarts": float(self._restarts), "workers": float(self.num_workers),
               "last_call_s": self._last_wall}
        for i, busy in enumerate(self._busy):
            out[f"utilisation_w{i}"] = busy / self._last_wall if self._last_wall > 0 else 0.0
        return out

    def close(self) -> None:
        """Release the workers (idempotent); later calls raise."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """Stop the backend's workers (nothing to do in-process)."""
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
