"""In-process sampling, for debugging and tests."""

from __future__ import annotations

import time

import numpy as np

from envs.base import Task, TaskFamily
from metarl.sampling.base import Sampler
from metarl.sampling.worker import PolicySpec, RolloutWorker, Shard


class SerialSampler(Sampler):
    """Runs the rollout worker in the calling process.

    ``shards`` > 1 splits the grid as a parallel backend would (results are
    identical; useful to test that claim).
    """

    def __init__(self, family: TaskFamily, spec: PolicySpec, shards: int = 1):
        super().__init__(family, spec, workers=shards)
        self.worker = RolloutWorker(family, spec)

    def _dispatch(self, tasks: list[Task], params: dict[str, np.ndarray], shards: list[Shard],
                  seed: int) -> list[dict[str, np.ndarray]]:
        results = []
        for i, shard in enumerate(shards):
            start = time.perf_counter()
            results.append(self.worker.rollout(tasks, params, shard, seed))
            self._busy[i] = time.perf_counter() - start
        return results
