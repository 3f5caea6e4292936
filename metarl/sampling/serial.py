"""In-process sampling, for debugging and tests."""

from __future__ import annotations

import numpy as np

from envs.base import Task, TaskFamily
from metarl.sampling.base import Sampler, assemble, split_grid
from metarl.sampling.worker import PolicySpec, RolloutWorker


class SerialSampler(Sampler):
    """Runs the rollout worker in the calling process.

    ``shards`` > 1 splits the grid as a parallel backend would (results are
    identical; useful to test that claim).
    """

    def __init__(self, family: TaskFamily, spec: PolicySpec, shards: int = 1):
        super().__init__(family, spec)
        self.worker = RolloutWorker(family, spec)
        self.shards = shards

    def _run(self, tasks: list[Task], params: dict[str, np.ndarray], episodes_per_task: int,
             seed: int) -> dict[str, np.ndarray]:
        shards = split_grid(len(tasks), episodes_per_task, self.shards)
        results = [self.worker.rollout(tasks, params, s, seed) for s in shards]
        return assemble(shards, results, len(tasks), episodes_per_task)
