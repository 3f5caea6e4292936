"""Task-family contract, registry and the default batched stepping path.

A *task* is a small picklable mapping with the family's field names, e.g.
``{"goal": (0.1, -0.3)}`` or ``{"velocity": 1.3}``.

A *task family* couples a :class:`TaskEnv` subclass with its constructor
arguments (reward coefficients, task ranges).  It can

* sample tasks: ``sample_tasks(n, rng)`` with a ``numpy.random.Generator``;
* build one gymnasium env: ``make_env(task)`` (full gymnasium API);
* build a batched env: ``make_vector(tasks)`` that steps one env per task in
  lockstep on numpy arrays.  Families that define a ``batched`` classmethod
  on their env class get a fast path; every other family gets
  :class:`LoopBatchedEnv`, which loops over single envs, so that a new family
  works from one small file.

``register_family(name, env_cls, horizon=...)`` adds a family to the registry
and registers the gymnasium id ``metarl/<name>-v0``.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium
import numpy as np

Task = Mapping[str, Any]


class TaskError(ValueError):
    """A task with missing, unknown or out-of-range fields."""


class TaskEnv(gymnasium.Env):
    """A gymnasium env whose dynamics or reward depend on a task.

    Subclasses implement the usual ``reset``/``step`` plus the three task
    methods below.  ``task`` is accepted by the constructor; ``None`` means
    "sample one with a fixed seed" so that ``gymnasium.make`` works without it.
    """

    @abc.abstractmethod  # a hook every subclass provides
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        raise NotImplementedError

    @abc.abstractmethod  # a hook every subclass provides
    def set_task(self, task: Task) -> None:
        raise NotImplementedError

    @abc.abstractmethod  # a hook every subclass provides
    def get_task(self) -> dict[str, Any]:
        raise NotImplementedError

    def default_task(self) -> dict[str, Any]:
        """The task of an env built without one: the first task of ``sample_tasks`` seeded with 0.

        Families with a natural centre (the unmodified model) override it.
        """
        return self.sample_tasks(1, np.random.default_rng(0))[0]


class BatchedEnv(Protocol):
    """Many envs of one family stepped in lockstep on arrays.

    ``reset(seeds)`` takes one integer seed per env and returns observations
    ``(n, obs_dim)`` float32; ``step(actions)`` takes ``(n, act_dim)`` and
    returns ``(obs (n, obs_dim) float32, rewards (n,) float64,
    terminated (n,) bool)``.  For the same seed and actions, env ``i`` follows
    exactly the trajectory of ``make_env(tasks[i])`` reset with that seed.
    Envs that terminated keep being stepped; callers mask what follows.

    Families whose envs report ``info["success"]`` expose it after each step
    as ``success``: ``(n,)`` bool (``None`` or absent otherwise).
    """

    num_envs: int
    obs_dim: int
    act_dim: int

    def reset(self, seeds: Sequence[int]) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def reset_some(self, indices: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        """Reset only envs ``indices`` (one seed each); their observations ``(len(indices), obs_dim)``.

        Optional: the gymnasium vector entry point (:mod:`envs.vector`) uses it
        for autoreset; the samplers reset all envs at once.
        """
        ...


class LoopBatchedEnv:
    """Default batched path: loops over one gymnasium env per task."""

    def __init__(self, envs: Sequence[gymnasium.Env]):
        if not envs:
            raise ValueError("LoopBatchedEnv needs at least one env")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.obs_dim = int(np.prod(self.envs[0].observation_space.shape))
        self.act_dim = int(np.prod(self.envs[0].action_space.shape))
        self.success: np.ndarray | None = None
        """After a step: ``info["success"]`` of every env, ``(n,)`` bool, when the envs report it."""

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        obs = [env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)]
        return np.asarray(obs, dtype=np.float32).reshape(self.num_envs, self.obs_dim)

    def reset_some(self, indices: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        obs = [self.envs[int(i)].reset(seed=int(s))[0] for i, s in zip(indices, seeds, strict=True)]
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        actions = check_actions(actions, self.num_envs, self.act_dim)
        obs = np.empty((self.num_envs, self.obs_dim), dtype=np.float32)
        rewards = np.empty(self.num_envs, dtype=np.float64)
        terminated = np.empty(self.num_envs, dtype=bool)
        success = np.zeros(self.num_envs, dtype=bool)
        reported = False
        for i, env in enumerate(self.envs):
            o, r, term, _trunc, info = env.step(actions[i])
            obs[i] = np.asarray(o, dtype=np.float32).reshape(-1)
            rewards[i] = r
            terminated[i] = term
            if "success" in info:
                reported = True
                success[i] = bool(info["success"])
        self.success = success if reported else None
        return obs, rewards, terminated


def check_actions(actions: Any, num_envs: int, act_dim: int) -> np.ndarray:
    """Return ``actions`` as a float64 ``(num_envs, act_dim)`` array or raise.

    NaN or infinite actions never reach the simulator.
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.shape != (num_envs, act_dim):
        raise ValueError(f"actions have shape {a.shape}, expected ({num_envs}, {act_dim})")
    if not np.all(np.isfinite(a)):
        raise ValueError("actions contain NaN or infinite values")
    return a


def check_action(action: Any, act_dim: int) -> np.ndarray:
    """Single-env version of :func:`check_actions`: a finite ``(act_dim,)`` array."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (act_dim,):
        raise ValueError(f"action has shape {a.shape}, expected ({act_dim},)")
    if not np.all(np.isfinite(a)):
        raise ValueError("action contains NaN or infinite values")
    return a


def check_task_fields(task: Any, required: Sequence[str], family: str) -> None:
    """Raise :class:`TaskError` unless ``task`` is a mapping with exactly ``required``."""
    if not isinstance(task, Mapping):
        raise TaskError(f"{family}: a task must be a mapping like {{{required[0]!r}: ...}}, got {task!r}")
    missing = [k for k in required if k not in task]
    unknown = [k for k in task if k not in required]
    if missing:
        raise TaskError(f"{family}: task {dict(task)!r} is missing field(s) {missing}")
    if unknown:
        raise TaskError(
            f"{family}: task {dict(task)!r} has unknown field(s) {unknown}; expected {list(required)}"
        )


@dataclass
class TaskFamily:
    """A registered family: env class, constructor kwargs and default horizon."""

    name: str
    env_cls: type[TaskEnv]
    horizon: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    _proto: TaskEnv | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_proto"] = None  # envs hold simulator state; rebuild lazily
        return state

    def _prototype(self) -> TaskEnv:
        if self._proto is None:
            self._proto = self.env_cls(**self.kwargs)
        return self._proto

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if n < 0:
            raise ValueError(f"cannot sample {n} tasks")
        return self._prototype().sample_tasks(n, rng)

    def make_env(self, task: Task | None = None) -> gymnasium.Env:
        return self.env_cls(task=task, **self.kwargs)

    def test_tasks(self) -> list[dict[str, Any]] | None:
        """The family's own held-out tasks (e.g. Meta-World's test goals), or None if it has none."""
        own = getattr(self._prototype(), "test_tasks", None)
        return own() if callable(own) else None

    @property
    def max_batch_envs(self) -> int | None:
        """At most this many envs stepped at once by a rollout worker (None: no limit)."""
        return getattr(self.env_cls, "max_batch_envs", None)

    def provenance(self) -> dict[str, Any] | None:
        """Versions and seeds the family's tasks depend on (a run's manifest records them), or None."""
        own = getattr(self.env_cls, "provenance", None)
        return own(**self.kwargs) if callable(own) else None

    def make_vector(self, tasks: Sequence[Task]) -> BatchedEnv:
        batched = getattr(self.env_cls, "batched", None)
        if batched is not None:
            return batched(list(tasks), **self.kwargs)
        return LoopBatchedEnv([self.env_cls(task=t, **self.kwargs) for t in tasks])

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self._prototype().observation_space.shape))

    @property
    def act_dim(self) -> int:
        return int(np.prod(self._prototype().action_space.shape))


_REGISTRY: dict[str, tuple[type[TaskEnv], int, str]] = {}


def register_family(name: str, env_cls: type[TaskEnv], horizon: int, description: str = "") -> None:
    """Register ``env_cls`` as family ``name`` and as gymnasium id ``metarl/<name>-v0``.

    ``description`` (task distribution, reward) is shown by ``metarl tasks``;
    it defaults to the first line of the class docstring.
    """
    if not description:
        description = (env_cls.__doc__ or "").strip().splitlines()[0] if env_cls.__doc__ else ""
    _REGISTRY[name] = (env_cls, int(horizon), description)
    env_id = f"metarl/{name}-v0"
    if env_id in gymnasium.registry:
        del gymnasium.registry[env_id]
    from envs.vector import vector_entry_point

    gymnasium.register(
        id=env_id,
        entry_point=f"{env_cls.__module__}:{env_cls.__qualname__}",
        vector_entry_point=vector_entry_point(name, make_family),
        max_episode_steps=int(horizon),
    )


def family_names() -> list[str]:
    return sorted(_REGISTRY)


def _env_classes(cls: type = TaskEnv) -> list[type]:
    """Every subclass of ``cls`` defined so far, depth first."""
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_env_classes(sub)]
    return out


def unknown_family_message(name: str) -> str:
    """Why ``name`` is not a registered family, with what to do about it (one line).

    Names the closest registered family (a typo), or an env class already
    imported that declares ``family = name`` but was never passed to
    :func:`register_family` (the line is missing from its module), or else
    says how a family from a file of one's own gets registered.
    """
    msg = f"unknown task family {name!r}"
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    registered = {entry[0] for entry in _REGISTRY.values()}
    orphans = [c for c in _env_classes() if c not in registered and getattr(c, "family", None) == name]
    if orphans:
        c = orphans[0]
        msg += (f"; {c.__qualname__} in {c.__module__} declares family {name!r} but is not registered: add "
                f"envs.register_family({name!r}, {c.__qualname__}, horizon=...) to that module")
    elif not close:
        msg += ("; a family defined in a file of your own is registered by that file calling "
                "envs.register_family(name, EnvClass, horizon=...) when imported: pass the file with --module PATH")
    return f"{msg}; registered: {', '.join(family_names())}"


def make_family(name: str, horizon: int | None = None, **kwargs: Any) -> TaskFamily:
    """Build the registered family ``name`` with constructor ``kwargs``."""
    if name not in _REGISTRY:
        raise KeyError(unknown_family_message(name))
    env_cls, default_horizon, _ = _REGISTRY[name]
    if horizon is not None and int(horizon) < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    limit = getattr(env_cls, "max_horizon", None)
    if limit is not None and int(horizon or default_horizon) > limit:
        raise ValueError(f"{name}: horizon {horizon} exceeds the longest episode the env allows ({limit})")
    family = TaskFamily(name, env_cls, int(horizon or default_horizon), dict(kwargs))
    try:
        family._prototype()  # fail now on bad kwargs, not in a worker
    except TypeError as e:
        raise ValueError(f"{name}: bad env kwargs {dict(kwargs)!r}: {e}") from None
    return family


def family_class(name: str) -> type[TaskEnv]:
    """The environment class registered as ``name`` (``KeyError`` if none is)."""
    return _REGISTRY[name][0]


def describe_families() -> list[tuple[str, int, str]]:
    """``(name, default horizon, description)`` for every registered family."""
    return [(n, _REGISTRY[n][1], _REGISTRY[n][2]) for n in family_names()]

