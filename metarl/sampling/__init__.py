"""Rollout sampling: one worker implementation, several backends.

``make_sampler(backend, family, spec, workers=..., ray_address=...)`` builds
the sampler named in the config (``serial`` here; parallel backends register
themselves in :data:`BACKENDS`).
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


BACKENDS: dict[str, Callable[..., Sampler]] = {"serial": _serial}


def make_sampler(backend: str, family: TaskFamily, spec: PolicySpec, workers: int = 1,
                 ray_address: str | None = None) -> Sampler:
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampler backend {backend!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[backend](family, spec, workers=workers, ray_address=ray_address)


__all__ = ["BACKENDS", "PolicySpec", "RolloutWorker", "Sampler", "SerialSampler", "Shard", "assemble",
           "make_sampler", "split_grid"]
