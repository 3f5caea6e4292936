"""The oracle wrapper family: the task's parameters appended to every observation.

The MAML paper's "oracle" baseline sees the task (goal, velocity, direction)
and needs no adaptation.  ``OracleFamily.wrap(family)`` wraps any task
family (``env.oracle: true`` in a config does it in
:func:`metarl.run.build_family`); its single and batched envs end every
observation with ``task_features`` of the task, which flattens the task's
numeric values in sorted key order (nested mappings and sequences
included), so every family gets an oracle without extra code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np

from envs.base import BatchedEnv, Task, TaskFamily


def task_features(task: Task) -> np.ndarray:
    """Numeric values of ``task`` flattened in sorted key order: float32 ``(k,)``."""
    out: list[float] = []

    def walk(x: Any) -> None:
        if isinstance(x, Mapping):
            for key in sorted(x):
                walk(x[key])
        elif isinstance(x, str):
            raise TypeError(f"oracle observations need numeric task fields, got {x!r}")
        elif isinstance(x, Sequence | np.ndarray):
            for v in np.asarray(x, dtype=np.float64).reshape(-1):
                out.append(float(v))
        else:
            out.append(float(x))

    walk(task)
    return np.asarray(out, dtype=np.float32)


class OracleEnv(gymnasium.ObservationWrapper):
    """A single env whose observations end with :func:`task_features` of its task."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        extra = task_features(env.unwrapped.get_task()).shape[0]
        base = env.observation_space
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (base.shape[0] + extra,), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        feats = task_features(self.env.unwrapped.get_task())
        return np.concatenate([np.asarray(observation, dtype=np.float32), feats])

    def set_task(self, task: Task) -> None:
        self.env.unwrapped.set_task(task)

    def get_task(self) -> dict[str, Any]:
        return self.env.unwrapped.get_task()


class OracleBatchedEnv:
    """A batched env whose observations end with each env's task features."""

    def __init__(self, env: BatchedEnv, tasks: Sequence[Task]):
        self.env = env
        self.features = np.stack([task_features(t) for t in tasks])
        self.num_envs = env.num_envs
        self.obs_dim = env.obs_dim + self.features.shape[1]
        self.act_dim = env.act_dim

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        return np.concatenate([self.env.reset(seeds), self.features], axis=1)

    def reset_some(self, indices: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        idx = [int(i) for i in indices]
        return np.concatenate([self.env.reset_some(idx, seeds), self.features[idx]], axis=1)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminated = self.env.step(actions)
        return np.concatenate([obs, self.features], axis=1), rewards, terminated


class OracleFamily(TaskFamily):
    """A task family whose envs' observations end with :func:`task_features` of their task.

    Same name, env class, kwargs, horizon, tasks and actions as the family it
    wraps; ``obs_dim`` grows by the number of task features.
    """

    @classmethod
    def wrap(cls, family: TaskFamily) -> OracleFamily:
        return cls(family.name, family.env_cls, family.horizon, dict(family.kwargs))

    def make_env(self, task: Task | None = None) -> gymnasium.Env:
        return OracleEnv(super().make_env(task))

    def make_vector(self, tasks: Sequence[Task]) -> BatchedEnv:
        return OracleBatchedEnv(super().make_vector(tasks), tasks)

    @property
    def obs_dim(self) -> int:
        return super().obs_dim + task_features(self._prototype().get_task()).shape[0]
