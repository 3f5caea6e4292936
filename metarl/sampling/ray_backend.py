"""Ray sampling: the same rollout worker as Ray actors, on one machine or a cluster.

``RaySampler(family, spec, workers, ray_address)`` joins the cluster at
``ray_address`` (``ray.init(address=...)``, e.g. ``"10.0.0.1:6379"``; a
``HOST:PORT`` that does not accept a TCP connection within
:data:`CONNECT_TIMEOUT_S` raises :class:`RayUnreachableError` at once instead of
Ray's long retries) or, if it is ``None`` and Ray is not initialised yet,
starts a private local Ray instance on the loopback interface
(:func:`start_local_ray`): every process of it (GCS, raylet, workers, the
dashboard process and the dashboard and runtime-env agents, which Ray starts
even without the dashboard UI) listens on 127.0.0.1 only.  It creates ``workers``
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

import contextlib
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np

from envs.base import Task, TaskFamily
from metarl.sampling.base import Sampler
from metarl.sampling.worker import PolicySpec, Shard

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayUnreachableError(ConnectionError):
    """The configured Ray cluster does not answer (the message names the address)."""


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RayUnreachableError` unless ``HOST:PORT`` accepts a TCP connection within ``timeout`` s.

    Other address forms (``auto``, ``ray://...``) are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise RayUnreachableError(f"cannot reach the Ray cluster at {address} within {timeout:g} s: "
                              f"{e.strerror or type(e).__name__}") from None


def start_local_ray(**kwargs: Any) -> None:
    """``ray.init`` a local instance whose processes listen on the loopback interface only.

    Ray rewrites a loopback ``_node_ip_address`` to the machine's external
    address on Linux; with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's own
    single-machine mode, the default on macOS and Windows) the node address
    is 127.0.0.1 and its servers bind there.  The setting is applied for the
    start-up (the processes started inherit it) and restored afterwards.
    Raises :class:`RuntimeError` if the node still has a non-loopback address.
    """
    import ray
    import ray._private.ray_constants as constants
    import ray._private.services as services

    saved_env, saved_flag = os.environ.get(_CLUSTER_ENV), constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_ENV] = "0"
    constants.ENABLE_RAY_CLUSTER = False
    popen = services.ConsolePopen
    services.ConsolePopen = _own_session(popen)
    try:
        ray.init(address="local", include_dashboard=False, **kwargs)
    finally:
        services.ConsolePopen = popen
        constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = saved_env
    ip = ray.util.get_node_ip_address()
    if ip not in LOOPBACK:
        ray.shutdown()
        raise RuntimeError(f"the local Ray instance came up on {ip}, not on the loopback interface")


def _own_session(popen: type) -> type:
    """``popen`` starting each Ray process in a session of its own: a SIGTERM or Ctrl-C sent to the driver's
    process group (a scheduler's, a terminal's) reaches the driver only, which checkpoints and then shuts its
    Ray instance down; otherwise the raylet would die first and the driver's core worker abort (-6).  Ray's
    processes still die with the driver (Ray's own fate sharing, ``PR_SET_PDEATHSIG``)."""

    class OwnSession(popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            if sys.platform != "win32":
                kwargs.setdefault("start_new_session", True)
            super().__init__(*args, **kwargs)

    return OwnSession


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler of its own (``sys.exit(15)``: no interrupt checkpoint, the run
    marked failed); put metarl's back (:mod:`metarl.signals`) once Ray is up."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


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
            with _keep_signal_handlers():
                if ray_address:
                    check_reachable(ray_address)
                    ray.init(address=ray_address, log_to_driver=False)
                else:
                    start_local_ray(log_to_driver=False)
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
