"""Rollout sampling: one worker implementation, several backends.

``make_sampler(backend, family, spec, workers=..., ray_address=...)`` builds
the sampler named in the config: ``local`` (worker processes, the default in
configs), ``ray`` (the same workers as Ray actors) or ``serial`` (in-process).
Backends live in :data:`BACKENDS`; ``ray`` is imported only when used.

A backend is a factory ``(family, spec, workers=..., ray_address=...,
hang_timeout=..., **_) -> Sampler``. One with settings of its own gives the
factory a ``Settings`` dataclass attribute (and optionally ``section``, its
config section, else the backend's name): :func:`make_sampler` then passes the
config's section as ``settings=``. ``register_backend("name", factory)`` adds
one (from a ``--module`` file too).
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


def register_backend(name: str, factory: Callable[..., Sampler]) -> None:
    """Add the sampler backend ``factory`` under ``name`` (what ``sampler.backend`` selects)."""
    if not callable(factory):
        raise TypeError(f"sampler backend {name!r} must be a callable factory, got {factory!r}")
    BACKENDS[name] = factory


def make_sampler(backend: str, family: TaskFamily, spec: PolicySpec, workers: int | None = None,
                 ray_address: str | None = None, hang_timeout: float | None = None, settings: Any = None) -> Sampler:
    """Build a sampler.  ``workers``: ``None`` or 0 means the backend's default
    (one per core for ``local``, one per cluster CPU for ``ray``).  ``hang_timeout``:
    seconds a ready worker may take for its shard before it is killed and
    replaced (``local``; ``None``: no limit).  ``settings``: the backend's own
    config section, for a backend that declares ``Settings``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampler backend {backend!r}; available: {sorted(BACKENDS)}")
    factory = BACKENDS[backend]
    own = {"settings": settings} if getattr(factory, "Settings", None) is not None else {}
    return factory(family, spec, workers=workers, ray_address=ray_address, hang_timeout=hang_timeout, **own)


__all__ = ["BACKENDS", "PolicySpec", "RolloutWorker", "Sampler", "SerialSampler", "Shard", "assemble",
           "make_sampler", "register_backend", "split_grid"]
