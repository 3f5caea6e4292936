"""A campaign's runs as Ray tasks: in parallel on this machine or spread over a cluster's nodes.

``reproduce.py SUBCOMMAND --parallel N`` starts a local Ray instance (loopback
only) and trains N runs at a time; ``--ray-address HOST:PORT`` joins a
running cluster and lets Ray place the runs on its nodes. Each run is one Ray
task (Ray's task and resource API) that trains through the same lifecycle as
a sequential campaign (``experiments.driver.train``: skip finished, resume
interrupted, extend a grown budget), so:

* a task reserves the CPUs its sampler uses (``sampler.workers``, 1 when
  unset) and a GPU when its config's ``device`` asks for CUDA;
* a task whose node dies is retried by Ray (``max_retries``) and resumes from
  its run's own checkpoint; a run still unfinished when the retries are spent
  is reported, and running the same command again continues it;
* run directories live on storage every node mounts (``--root``); a task
  whose node cannot reach its run's parent directory fails at once with one
  line naming the node and the directory.

The evaluations then run in the driver, as in a sequential campaign.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

RETRIES = 3
"""How often Ray runs a task again after its worker or node died (the run resumes from its checkpoint)."""


class RunUnreachableError(RuntimeError):
    """A task's node cannot reach its run directory (the message names both)."""


def resources(cfg: Any) -> dict[str, float]:
    """What one run's task reserves: its sampler's CPUs, and a GPU when ``device`` asks for CUDA."""
    cpus = float(cfg.sampler.workers or 1)
    gpus = 1.0 if str(getattr(cfg, "device", "cpu")).startswith("cuda") else 0.0
    return {"num_cpus": cpus, "num_gpus": gpus}


def train_task(train: Callable[..., None], cfg: Any, run_dir: str, latest_only: bool) -> dict[str, Any]:
    """The body of one run's task: check the run's directory is reachable here, then ``train`` it
    (:func:`experiments.driver.train`)."""
    import torch

    from metarl.rundir import RunDir

    torch.set_num_threads(1)
    where = Path(run_dir)
    if not where.parent.is_dir():
        raise RunUnreachableError(f"node {socket.gethostname()} cannot reach {where.parent}: --root must be on "
                                  "storage every node mounts")
    train(cfg, where, latest_only=latest_only, progress=False)
    return {"run": where.name, "done": RunDir(where).done_iterations(), "node": socket.gethostname()}


def train_jobs(train: Callable[..., None], jobs: list[tuple[Any, Path]], latest_only: bool, parallel: int = 1,
               ray_address: str | None = None, report: Callable[[str], None] = print) -> list[str]:
    """Train every job with ``train`` (:func:`experiments.driver.train`) as a Ray task (``parallel`` at a time
    locally, or on the cluster at ``ray_address``); returns the names of the runs that did not finish (each
    line of progress goes to ``report``)."""
    import ray

    from metarl.sampling.ray_backend import check_reachable, start_local_ray

    started = not ray.is_initialized()
    if ray_address:
        check_reachable(ray_address)
        ray.init(address=ray_address, log_to_driver=False)
    elif started:
        most = max(resources(cfg)["num_cpus"] for cfg, _ in jobs) if jobs else 1.0
        start_local_ray(num_cpus=int(max(1, parallel) * most), log_to_driver=False)
    remote = ray.remote(max_retries=RETRIES, retry_exceptions=False)(train_task)
    pending = {remote.options(**resources(cfg)).remote(train, cfg, str(run_dir.resolve()), latest_only): run_dir.name
               for cfg, run_dir in jobs}
    report(f"{len(pending)} runs as Ray tasks ({'cluster ' + ray_address if ray_address else f'{parallel} at a time'})")
    unfinished = []
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ref)
            try:
                out = ray.get(ref)
                report(f"  {name}: trained to iteration {out['done']} on {out['node']}")
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                msg = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                report(f"  {name}: failed: {msg}")
                unfinished.append(name)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.RayError) as e:
                report(f"  {name}: lost after {RETRIES} retries ({type(e).__name__}); the same command continues it")
                unfinished.append(name)
    finally:
        if started:
            ray.shutdown()
    return unfinished
