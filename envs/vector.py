"""gymnasium vector entry point: ``gymnasium.make_vec("metarl/<Family>-v0", num_envs=N, tasks=[...])``.

Every registered family gets a vector entry point, so

    gymnasium.make_vec("metarl/HalfCheetahVel-v0", num_envs=8, vectorization_mode="vector_entry_point",
                       tasks=[{"velocity": 0.5}] * 8)

returns a :class:`TaskVectorEnv`, a ``gymnasium.vector.VectorEnv`` stepping
the family's batched path (one ``MjData`` per env in a tight loop for the
MuJoCo families), not one process or wrapper per env.

Semantics:

* ``tasks``: one task per env (a single task is repeated; default: the
  family's ``sample_tasks(num_envs)`` with generator seed 0); other keyword
  arguments are the family's constructor arguments (``action_scale=0.1``).
* ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (a list gives one seed
  per env; no seed draws them from the vector env's own generator).  For
  the same seeds and actions, env ``i`` follows exactly the trajectory of
  ``family.make_vector(tasks)`` and of ``make_env(tasks[i])``.
* Episodes are truncated after the family's horizon (``max_episode_steps``,
  or the ``horizon`` keyword).
* Autoreset is gymnasium 1.x's ``NEXT_STEP`` mode: the step after an env
  terminates or is truncated resets that env only (from the next seed of the
  vector env's generator) and returns its first observation with reward 0
  and ``terminated = truncated = False``; the action given to it is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

Task = Mapping[str, Any]


class TaskVectorEnv(VectorEnv):
    """``num_envs`` envs of one task family on its batched path, with gymnasium's vector API.

    ``family``: a :class:`envs.base.TaskFamily` (``envs.make_family(name, ...)``).
    """

    def __init__(self, family: Any, num_envs: int, tasks: Sequence[Task] | Task | None = None):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.family = family
        if tasks is None:
            tasks = self.family.sample_tasks(self.num_envs, np.random.default_rng(0))
        elif isinstance(tasks, dict):
            tasks = [tasks] * self.num_envs
        self.tasks = list(tasks)
        if len(self.tasks) != self.num_envs:
            raise ValueError(f"got {len(self.tasks)} tasks for {self.num_envs} envs")
        proto = self.family.make_env(self.tasks[0])
        self.single_observation_space = proto.observation_space
        self.single_action_space = proto.action_space
        proto.close()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self.render_mode = None
        self.horizon = self.family.horizon
        self.batched = self.family.make_vector(self.tasks)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._np_random, _ = gymnasium.utils.seeding.np_random(None)

    def _seeds(self, n: int) -> list[int]:
        return [int(s) for s in self._np_random.integers(0, 2**31 - 1, size=n)]

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is None:
            seeds = self._seeds(self.num_envs)
        elif isinstance(seed, int | np.integer):
            self._np_random, _ = gymnasium.utils.seeding.np_random(int(seed))
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
            self._np_random, _ = gymnasium.utils.seeding.np_random(seeds[0])
        obs = self.batched.reset(seeds)
        self._elapsed[:] = 0
        self._needs_reset[:] = False
        return obs, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        resetting = np.flatnonzero(self._needs_reset)
        if len(resetting):  # their actions are ignored: they are reset after the step below
            actions = actions.copy()
            actions[resetting] = 0.0
        obs, rewards, terminated = self.batched.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64).copy()
        terminated = np.asarray(terminated, dtype=bool).copy()
        self._elapsed += 1
        truncated = (self._elapsed >= self.horizon) & ~terminated
        if len(resetting):
            obs = obs.copy()
            obs[resetting] = self.batched.reset_some(resetting, self._seeds(len(resetting)))
            rewards[resetting] = 0.0
            terminated[resetting] = False
            truncated[resetting] = False
            self._elapsed[resetting] = 0
        self._needs_reset = terminated | truncated
        return obs, rewards, terminated, truncated, {}


def vector_entry_point(name: str, make_family: Callable[..., Any]) -> Callable[..., TaskVectorEnv]:
    """The ``vector_entry_point`` registered for family ``name`` (gymnasium calls it with ``num_envs=...``).

    ``make_family(name, horizon=..., **kwargs)`` builds the family (passed in
    by :func:`envs.base.register_family`, so this module imports nothing of ``envs``).
    """

    def make(num_envs: int = 1, tasks: Sequence[Task] | Task | None = None, horizon: int | None = None,
             **kwargs: Any) -> TaskVectorEnv:
        kwargs.pop("render_mode", None)
        steps = kwargs.pop("max_episode_steps", None)  # gymnasium passes the registered time limit
        family = make_family(name, horizon=horizon if horizon is not None else steps, **kwargs)
        return TaskVectorEnv(family, num_envs, tasks)

    make.__name__ = f"make_{name}_vector"
    return make
