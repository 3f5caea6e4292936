"""2D navigation: a point moves towards a goal in the plane (MAML paper, sec. 5.2).

State and observation: the position ``s`` (2,), starting at the origin.
Action: a displacement ``action_scale * a``, clipped to ``[-max_action,
max_action]`` per axis.  ``action_scale = 0.1`` reads policy actions in units
of the clip range, as rllab's ``normalize`` wrapper did for the MAML paper's
point environment; the default 1.0 takes them as displacements.
Reward after the move: ``-||s - g||_2``.  Terminates when
``max(|s - g|) < goal_tolerance``.  Tasks: ``{"goal": (x, y)}`` with the goal
uniform on ``[low, high]^2``, or with ``exclude > 0`` on the part of it outside
``[-exclude, exclude]^2`` (``low=-1, high=1, exclude=0.5``: the outer ring
around the default square, for transfer tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np

from envs.base import Task, TaskEnv, TaskError, check_action, check_actions, check_task_fields


class Navigation2DEnv(TaskEnv):
    """goal ~ U[low, high]^2; reward -||s - g||_2; actions clipped to +-max_action."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: Task | None = None,
        low: float = -0.5,
        high: float = 0.5,
        max_action: float = 0.1,
        goal_tolerance: float = 0.01,
        action_scale: float = 1.0,
        exclude: float = 0.0,
    ):
        if not low < high:
            raise ValueError(f"Navigation2D: need low < high, got low={low}, high={high}")
        if not 0 <= exclude < max(abs(low), abs(high)):
            raise ValueError(f"Navigation2D: need 0 <= exclude < max(|low|, |high|), got exclude={exclude}")
        self.low, self.high = float(low), float(high)
        self.exclude = float(exclude)
        if not (max_action > 0 and action_scale > 0):
            raise ValueError(f"Navigation2D: max_action and action_scale must be > 0, got {max_action}, {action_scale}")
        self.max_action = float(max_action)
        self.goal_tolerance = float(goal_tolerance)
        self.action_scale = float(action_scale)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        bound = self.max_action / self.action_scale  # the actions that are not clipped
        self.action_space = gymnasium.spaces.Box(-bound, bound, (2,), np.float32)
        self._state = np.zeros(2)
        self.set_task(task if task is not None else self.default_task())

    # -- tasks ---------------------------------------------------------------
    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` goals uniform on ``[low, high]^2``; with ``exclude > 0``, uniform on the part outside
        ``[-exclude, exclude]^2`` (an outer ring, by redrawing the goals inside)."""
        goals = rng.uniform(self.low, self.high, size=(n, 2))
        inside = np.abs(goals).max(1) < self.exclude
        while inside.any():
            goals[inside] = rng.uniform(self.low, self.high, size=(int(inside.sum()), 2))
            inside = np.abs(goals).max(1) < self.exclude
        return [{"goal": (float(x), float(y))} for x, y in goals]

    def _check_task(self, task: Task) -> np.ndarray:
        check_task_fields(task, ("goal",), "Navigation2D")
        try:
            goal = np.asarray(task["goal"], dtype=np.float64)
        except (TypeError, ValueError):  # not numbers at all
            goal = None
        if goal is None or goal.shape != (2,) or not np.all(np.isfinite(goal)):
            raise TaskError(f"Navigation2D: goal must be two finite numbers, got {task['goal']!r}")
        if np.any(goal < self.low) or np.any(goal > self.high):
            x, y = (float(v) for v in goal)
            raise TaskError(f"Navigation2D: goal ({x}, {y}) is outside [{self.low}, {self.high}]^2")
        if np.abs(goal).max() < self.exclude:
            x, y = (float(v) for v in goal)
            raise TaskError(f"Navigation2D: goal ({x}, {y}) is inside the excluded [-{self.exclude}, "
                            f"{self.exclude}]^2")
        return goal

    def set_task(self, task: Task) -> None:
        self._goal = self._check_task(task)

    def get_task(self) -> dict[str, Any]:
        return {"goal": (float(self._goal[0]), float(self._goal[1]))}

    # -- gymnasium API -------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = np.zeros(2)
        return self._state.astype(np.float32), {}

    def step(self, action):
        a = np.clip(self.action_scale * check_action(action, 2), -self.max_action, self.max_action)
        self._state = self._state + a
        dist = self._state - self._goal
        reward_dist = -float(np.sqrt(dist[0] ** 2 + dist[1] ** 2))
        terminated = bool(np.max(np.abs(dist)) < self.goal_tolerance)
        info = {"reward_dist": reward_dist}
        return self._state.astype(np.float32), reward_dist, terminated, False, info

    @classmethod
    def batched(cls, tasks: Sequence[Task], **kwargs: Any) -> BatchedNavigation2D:
        return BatchedNavigation2D(tasks, **kwargs)


class BatchedNavigation2D:
    """Vectorised Navigation2D: all envs in one numpy array."""

    obs_dim = 2
    act_dim = 2

    def __init__(self, tasks: Sequence[Task], **kwargs: Any):
        proto = Navigation2DEnv(task=tasks[0] if tasks else None, **kwargs)
        self.max_action = proto.max_action
        self.goal_tolerance = proto.goal_tolerance
        self.action_scale = proto.action_scale
        self.goals = np.array([proto._check_task(t) for t in tasks], dtype=np.float64).reshape(-1, 2)
        self.num_envs = len(tasks)
        self.state = np.zeros((self.num_envs, 2))

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        self.state = np.zeros((self.num_envs, 2))
        return self.state.astype(np.float32)

    def reset_some(self, indices: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) != len(seeds):
            raise ValueError(f"reset_some got {len(seeds)} seeds for {len(idx)} envs")
        self.state[idx] = 0.0
        return self.state[idx].astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.clip(self.action_scale * check_actions(actions, self.num_envs, 2), -self.max_action, self.max_action)
        self.state = self.state + a
        dist = self.state - self.goals
        rewards = -np.sqrt(dist[:, 0] ** 2 + dist[:, 1] ** 2)
        terminated = np.max(np.abs(dist), axis=1) < self.goal_tolerance
        return self.state.astype(np.float32), rewards, terminated
