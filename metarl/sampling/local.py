"""Local parallel sampling: a persistent pool of worker processes.

Each worker process is started once, rebuilds the task family and the
policy from a cloudpickled ``(family, spec)``, sets ``torch.set_num_threads(1)``
and then serves sampling calls.  Workers are forked from multiprocessing's
fork server (``forkserver``, where the platform has it, else ``spawn``), which
imports :data:`PRELOAD` (torch, mujoco, the env and worker modules) once per
parent process: starting or replacing a worker then takes milliseconds
instead of a fresh interpreter's torch import (seconds).  The parent itself is
never forked, which would be unsafe once it runs torch threads; the fork
server only imports.  Per call the parent sends every busy worker one
message (parameters, tasks, shard, seed), the worker runs
:meth:`RolloutWorker.rollout` on its shard and sends the arrays back in one
message.  The parent blocks in :func:`multiprocessing.connection.wait` on the
pipes and the process sentinels, so it does not spin and notices at once when
a worker dies.

Faults:

* a worker process that dies (SIGKILL, segfault, OOM killer) is replaced and
  its shard re-run with the same seed, so the batch equals an undisturbed one;
  a warning is logged and ``stats()["worker_restarts"]`` counts it;
* an exception inside a worker becomes a :class:`RuntimeError` in the parent
  carrying the worker's traceback;
* ``close()`` (also run by ``with``, at interpreter exit and when the parent
  is interrupted mid-call) terminates and joins every worker; workers are
  daemon processes and exit on their own when the parent's pipe closes.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np

from envs.base import Task, TaskFamily
from metarl.sampling.base import Sampler
from metarl.sampling.worker import PolicySpec, Shard

FAULT_KINDS = ("kill", "segv", "raise", "hang")
"""Test aids for ``LocalSampler(fault=(worker, kind))``: on its first call the
first process of slot ``worker`` SIGKILLs itself, raises SIGSEGV, raises an
exception, or sleeps forever.  Replacement processes run normally."""


PRELOAD = ("numpy", "torch", "mujoco", "gymnasium", "cloudpickle", "envs", "metarl.sampling.worker")
"""Modules the fork server imports before it forks workers (missing ones are skipped)."""


def default_start_method() -> str:
    """``forkserver`` where the platform has it (Linux, macOS), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# -- the worker process -----------------------------------------------------------

def _worker_main(conn: multiprocessing.connection.Connection, payload: bytes, fault: str | None) -> None:
    """Serve ``("run", call_id, tasks, params, shard, seed)`` messages until ``None`` or EOF.

    Sends ``("ready", -1)`` once started, then replies to every job with
    ``("ok", call_id, arrays, busy_seconds)`` or ``("error", call_id, traceback_text)``.
    """
    # Ctrl-C reaches the whole foreground process group; the parent handles it
    # and shuts the workers down, so they ignore it instead of printing tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch

        torch.set_num_threads(1)
        from metarl.sampling.worker import RolloutWorker

        family, spec = cloudpickle.loads(payload)
        worker = RolloutWorker(family, spec)
    except BaseException:  # report start-up failures (bad pickle, import error) to the parent
        _send_quietly(conn, ("error", -1, traceback.format_exc()))
        return
    if not _send_quietly(conn, ("ready", -1)):
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent gone
            return
        if msg is None:
            return
        _, call_id, tasks, params, shard, seed = msg
        start = time.perf_counter()
        try:
            if fault is not None:
                _inject(fault)
                fault = None
            arrays = worker.rollout(tasks, params, shard, seed)
            reply: tuple[Any, ...] = ("ok", call_id, arrays, time.perf_counter() - start)
        except Exception:
            reply = ("error", call_id, traceback.format_exc())
        if not _send_quietly(conn, reply):
            return


def _inject(kind: str) -> None:
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segv":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "raise":
        raise ValueError("fault injected for testing: worker raised on its first call")
    elif kind == "hang":
        while True:
            time.sleep(3600)
    time.sleep(60)  # a signal may take a moment to arrive


def _send_quietly(conn: multiprocessing.connection.Connection, msg: Any) -> bool:
    try:
        conn.send(msg)
        return True
    except (BrokenPipeError, EOFError, OSError):
        return False


# -- the parent side --------------------------------------------------------------

@dataclass
class _Slot:
    """One worker position in the pool and the process currently filling it."""

    index: int
    process: Any = None
    conn: Any = None
    job: tuple[Any, ...] | None = None  # the message being worked on
    ready: bool = False  # the process has started and built its worker
    deadline: float | None = None  # monotonic time after which a pending job counts as hung
    deaths: int = 0  # deaths while running the current job
    started: list[int] = field(default_factory=list)  # pids, oldest first


class WorkerDied(Exception):
    """Internal: the process in a slot exited without replying."""


_LIVE: weakref.WeakSet[LocalSampler] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sampler in list(_LIVE):
        sampler.close()


class LocalSampler(Sampler):
    """Samples with a pool of ``workers`` processes (default: one per core).

    ``start_method``: ``"forkserver"`` (the default where available, with
    :data:`PRELOAD` imported once) or ``"spawn"`` (a fresh interpreter per
    worker); the family and spec travel with cloudpickle, so both work.
    ``timeout``: seconds a call may wait for one worker before the worker is
    declared hung, killed and replaced (``None``: wait as long as it takes; a
    dead process is noticed at once either way); a worker still starting up
    gets ``startup_timeout`` (120 s) more.  ``max_retries``: how often one shard may
    kill its worker within a call before the call fails.  ``fault``: a test
    aid, see :data:`FAULT_KINDS`.
    """

    def __init__(self, family: TaskFamily, spec: PolicySpec, workers: int | None = None,
                 start_method: str | None = None, timeout: float | None = None, max_retries: int = 3,
                 fault: tuple[int, str] | None = None):
        super().__init__(family, spec, default_workers() if not workers else int(workers), max_retries)
        if fault is not None and fault[1] not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {fault[1]!r}")
        self.timeout = timeout
        self.startup_timeout = 120.0
        self._ctx = multiprocessing.get_context(start_method or default_start_method())
        if self._ctx.get_start_method() == "forkserver":  # read when the process's server starts (first sampler)
            self._ctx.set_forkserver_preload(list(PRELOAD))
        self._payload = cloudpickle.dumps((family, spec))
        self._fault = fault
        self._slots = [_Slot(i) for i in range(self.num_workers)]
        self._calls = 0
        _LIVE.add(self)
        for slot in self._slots:
            self._start(slot)

    # -- process management -------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        fault = None
        if self._fault is not None and self._fault[0] == slot.index and not slot.started:
            fault = self._fault[1]
        proc = self._ctx.Process(target=_worker_main, args=(child_conn, self._payload, fault),
                                 name=f"metarl-sampler-{slot.index}", daemon=True)
        proc.start()
        child_conn.close()
        slot.process, slot.conn, slot.job, slot.ready = proc, parent_conn, None, False
        slot.started.append(proc.pid)

    def _stop(self, slot: _Slot, grace: float = 0.0) -> None:
        """Join the slot's process, waiting up to ``grace`` s before terminating it."""
        proc, conn = slot.process, slot.conn
        slot.process, slot.conn, slot.job = None, None, None
        if proc is None:
            return
        if grace > 0:
            proc.join(timeout=grace)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        proc.close()

    def pids(self) -> list[int | None]:
        """Process id of each slot's current worker (``None`` if not running)."""
        return [s.process.pid if s.process is not None else None for s in self._slots]

    # -- sampling -----------------------------------------------------------------
    def _dispatch(self, tasks: list[Task], params: dict[str, np.ndarray], shards: list[Shard],
                  seed: int) -> list[dict[str, np.ndarray]]:
        self._calls += 1
        call_id = self._calls
        for slot in self._slots:
            slot.deaths = 0
            if slot.process is None:  # stopped after an interrupted call
                self._start(slot)
        results: dict[int, dict[str, np.ndarray]] = {}
        try:
            for slot, shard in zip(self._slots[:len(shards)], shards, strict=True):
                self._submit(slot, ("run", call_id, tasks, params, shard, seed))
            self._collect(call_id, results)
        except BaseException:
            # Abandoned jobs leave workers busy with stale work: stop them; the next
            # call starts fresh ones (an interrupt leaves no half-used pool behind).
            for slot in self._slots:
                if slot.job is not None:
                    self._stop(slot)
            raise
        return [results[i] for i in range(len(shards))]

    def _submit(self, slot: _Slot, job: tuple[Any, ...]) -> None:
        slot.job = job
        while True:
            try:
                slot.conn.send(job)
                self._arm(slot)
                return
            except (BrokenPipeError, OSError):
                self._replace(slot, "the pipe broke while sending its job")

    def _arm(self, slot: _Slot) -> None:
        """Set the time by which the slot's pending job must be answered.

        Start-up (spawning, importing torch) gets :attr:`startup_timeout` on top.
        """
        if self.timeout is None or slot.job is None:
            slot.deadline = None
        else:
            slot.deadline = time.monotonic() + self.timeout + (0.0 if slot.ready else self.startup_timeout)

    def _replace(self, slot: _Slot, why: str) -> None:
        """The worker in ``slot`` is gone: start another and resend the slot's job."""
        job = slot.job
        proc = slot.process
        code = proc.exitcode if proc is not None else None
        if proc is not None and code is None:
            proc.join(timeout=1.0)
            code = proc.exitcode
        slot.deaths += 1
        self._count_restart(slot.index, slot.deaths,
                            f"pid {proc.pid if proc is not None else '?'}, {why}, exit code {code}")
        self._stop(slot)
        self._start(slot)
        if job is not None:
            self._submit(slot, job)

    def _collect(self, call_id: int, results: dict[int, dict[str, np.ndarray]]) -> None:
        while True:
            waiting = [s for s in self._slots if s.job is not None]
            if not waiting:
                return
            handles: dict[Any, _Slot] = {}
            for s in waiting:
                handles[s.conn] = s
                handles[s.process.sentinel] = s
            deadlines = [s.deadline for s in waiting if s.deadline is not None]
            wait_for = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready = multiprocessing.connection.wait(list(handles), timeout=wait_for)
            seen: set[int] = set()
            for h in ready:
                slot = handles[h]
                if slot.index not in seen and slot.job is not None:
                    seen.add(slot.index)
                    self._handle(slot, call_id, results)
            now = time.monotonic()
            for s in waiting:
                if s.job is not None and s.index not in seen and s.deadline is not None and now >= s.deadline:
                    s.process.kill()
                    s.process.join()
                    self._replace(s, f"no reply within {self.timeout} s; killed")

    def _handle(self, slot: _Slot, call_id: int, results: dict[int, dict[str, np.ndarray]]) -> None:
        """Read one reply from ``slot`` or, if its process is gone, replace it."""
        try:
            if not slot.conn.poll():
                if slot.process.is_alive():
                    return  # spurious wake-up
                raise WorkerDied("the process exited")
            reply = slot.conn.recv()
        except (EOFError, OSError, WorkerDied) as e:
            self._replace(slot, str(e) or type(e).__name__)
            return
        kind, reply_call = reply[0], reply[1]
        if kind == "ready":
            slot.ready = True
            self._arm(slot)
            return
        if kind == "error":
            slot.job = None
            where = "while starting" if reply_call == -1 else "while sampling"
            raise RuntimeError(f"sampler worker {slot.index} (pid {slot.process.pid}) raised {where}:\n"
                               f"{reply[2]}")
        if reply_call != call_id:
            return  # a stale reply cannot happen (stale workers are stopped); ignore defensively
        slot.job = None
        self._busy[slot.index] = reply[3]
        results[slot.index] = reply[2]

    def _release(self) -> None:
        """Stop and join every worker process."""
        for slot in self._slots:
            if slot.process is not None and slot.job is None:
                _send_quietly(slot.conn, None)  # ask idle workers to exit, in parallel
        for slot in self._slots:
            self._stop(slot, grace=2.0 if slot.job is None else 0.0)
        _LIVE.discard(self)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass
