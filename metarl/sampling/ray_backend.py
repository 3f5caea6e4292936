"""Ray sampling: the same rollout worker as Ray actors, on one machine or a cluster.

``RaySampler(family, spec, workers, ray_address)`` joins the cluster at
``ray_address`` (``ray.init(address=...)``, e.g. ``"10.0.0.1:6379"``) or, if
it is ``None`` and Ray is not initialised yet, starts a private local Ray
instance bound to 127.0.0.1 with the dashboard off.  It creates ``workers``
actors (default: one per CPU in the cluster), each reserving one CPU and
spread over the nodes.  Per call the parameters go into the object store
once (``ray.put``); every actor rolls out its shard with
:meth:`RolloutWorker.rollout` and returns the arrays.

Faults: an actor that dies (node lost, process killed) is replaced and its
shard re-run with the same seed (logged, counted in
``stats()["worker_restarts"]``); an exception inside an actor becomes a
:class:`RuntimeError` carrying the remote traceback.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import cloudpickle
import numpy as np

from envs.base import Task, TaskFamily
from metarl.sampling.base import Sampler
from metarl.sampling.worker import PolicySpec, Shard

logger = logging.getLogger(__name__)


class RayRolloutActor:
    """Actor body: a :class:`RolloutWorker` in a process with one torch thread."""

    def __init__(self, payload: bytes):
        import torch

        from metarl.sampling.worker import RolloutWorker

        torch.set_num_threads(1)
        family, spec = cloudpickle.loads(payload)
        self.worker = RolloutWorker(family, spec)

    def rollout(self, tasks: list[Task], params: dict[str, np.ndarray], shard: Shard,
                seed: int) -> tuple[dict[str, np.ndarray] | None, float, str | None]:
        """``(arrays, busy seconds, None)``, or ``(None, 0, traceback text)`` if the rollout raised."""
        start = time.perf_counter()
        try:
            # arrays from the object store are read-only views; torch wants writable memory
            params = {k: np.array(v) for k, v in params.items()}
            arrays = self.worker.rollout(tasks, params, shard, seed)
        except Exception:
            return None, 0.0, traceback.format_exc()
        return arrays, time.perf_counter() - start, None

    def where(self) -> tuple[str, int]:
        """``(node id, pid)`` of this actor."""
        import os

        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()


class RaySampler(Sampler):
    """Samples with ``workers`` Ray actors (default: one per cluster CPU)."""

    def __init__(self, family: TaskFamily, spec: PolicySpec, workers: int | None = None,
                 ray_address: str | None = None, max_retries: int = 3):
        import ray

        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address, log_to_driver=False)
            else:
                ray.init(address="local", include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
                self._owns_ray = True
        if not workers:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        super().__init__(family, spec, int(workers), max_retries)
        self._payload = cloudpickle.dumps((family, spec))
        self._actor_cls = ray.remote(num_cpus=1, max_restarts=0)(RayRolloutActor)
        self._actors = [self._new_actor() for _ in range(self.num_workers)]

    def _new_actor(self) -> Any:
        return self._actor_cls.options(scheduling_strategy="SPREAD").remote(self._payload)

    def placement(self) -> list[tuple[str, int]]:
        """``(node id, pid)`` of every actor, in worker order."""
        return self._ray.get([a.where.remote() for a in self._actors])

    def _dispatch(self, tasks: list[Task], params: dict[str, np.ndarray], shards: list[Shard],
                  seed: int) -> list[dict[str, np.ndarray]]:
        ray = self._ray
        params_ref = ray.put(params)
        tasks_ref = ray.put(tasks)
        pending: dict[Any, int] = {}
        for i, shard in enumerate(shards):
            pending[self._actors[i].rollout.remote(tasks_ref, params_ref, shard, seed)] = i
        deaths = [0] * len(shards)
        results: dict[int, dict[str, np.ndarray]] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            i = pending.pop(ref)
            try:
                arrays, busy, error = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as e:
                deaths[i] += 1
                self._count_restart(i, deaths[i], f"ray actor: {type(e).__name__}")
                ray.kill(self._actors[i])
                self._actors[i] = self._new_actor()
                pending[self._actors[i].rollout.remote(tasks_ref, params_ref, shards[i], seed)] = i
                continue
            if error is not None:  # the other shards finish in their actors; their results are dropped
                raise RuntimeError(f"ray sampler worker {i} raised while sampling:\n{error}")
            results[i] = arrays
            self._busy[i] = busy
        return [results[i] for i in range(len(shards))]

    def _release(self) -> None:
        """Kill the actors; shut Ray down if this sampler started it."""
        ray = self._ray
        if ray.is_initialized():
            for actor in self._actors:
                try:
                    ray.kill(actor)
                except Exception as e:  # the actor or its node is already gone
                    logger.debug("could not kill ray actor: %s", e)
            if self._owns_ray:
                ray.shutdown()
        self._actors = []
