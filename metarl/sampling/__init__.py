"""Rollout sampling: one worker implementation, several backends.

``make_sampler(backend, family, spec, workers=..., ray_address=...)`` builds
the sampler named in the config: ``local`` (worker processes, the default in
configs), ``ray`` (the same workers as Ray actors) or ``serial`` (in-process).
Backends live in :data:`BACKENDS`; ``ray`` is imported only when used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envs.base import TaskFamily
from metarl.sampling.base import Sampler, assemble, split_grid
from metarl.sampling.serial import SerialSampler
from metarl.sampling.worker import PolicySpec, RolloutWorker, Shard


def _serial(family: TaskFamily, spec: PolicySpec, **_: Any) -> Sampler:
    return SerialSampler(family, spec)


def _local(family: TaskFamily, spec: PolicySpec, workers: int | None = None, hang_timeout: float | None = None,
           **_: Any) -> Sampler:
    from metarl.sampling.local import LocalSampler

    return LocalSampler(family, spec, workers=workers, timeout=hang_timeout)


def _ray(family: TaskFamily, spec: PolicySpec, workers: int | None = None, ray_address: str | None = None,
         **_: Any) -> Sampler:
    from metarl.sampling.ray_backend import RaySampler  # imports ray only when this backend is used

    return RaySampler(family, spec, workers=workers, ray_address=ray_address)


BACKENDS: dict[str, Callable[..., Sampler]] = {"serial": _serial, "local": _local, "ray": _ray}


def make_sampler(backend: str, family: TaskFamily, spec: PolicySpec, workers: int | None = None,
                 ray_address: str | None = None, hang_timeout: float | None = None) -> Sampler:
    """Build a sampler.  ``workers``: ``None`` or 0 means the backend's default
    (one per core for ``local``, one per cluster CPU for ``ray``).  ``hang_timeout``:
    seconds a ready worker may take for its shard before it is killed and
    replaced (``local``; ``None``: no limit)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampler backend {backend!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[backend](family, spec, workers=workers, ray_address=ray_address, hang_timeout=hang_timeout)


__all__ = ["BACKENDS", "PolicySpec", "RolloutWorker", "Sampler", "SerialSampler", "Shard", "assemble",
           "make_sampler", "split_grid"]
