"""Ant families: goal velocity, direction (1D and 2D) and goal position.

Model: gymnasium's ``ant.xml`` (the one gymnasium's Ant-v5 loads; timestep
0.01), ``frame_skip`` 5, so ``dt = 0.05``.  Action: 8 torques; the applied control
is ``clip(action_scale * a, [-1, 1])`` (default scale 1, gymnasium's Ant; the
shipped configs use the reference 0.1) and the control cost uses it.

Observation (119, float32)::

    [0:15]    qpos                 (root x, y, z, root quaternion, 8 joint angles)
    [15:29]   qvel                 (14)
    [29:107]  clip(cfrc_ext[1:], -1, 1)   contact forces of the 13 non-world bodies (13 x 6)
    [107:116] torso orientation, ``data.xmat[torso]`` (3 x 3, row-major)
    [116:119] torso centre of mass, ``data.xipos[torso]``

Like gymnasium's Ant-v5 we drop the world body's row of ``cfrc_ext`` (it is
always zero), and use the same rows for the contact cost; contact forces are
read after ``mj_rnePostConstraint``.  Unlike v5 the root x, y are kept in
the observation (as in pytorch-maml-rl), since the goal families need them.

Reward terms (all in ``info``; the reward is their sum)::

    reward_forward   AntVel: -|v_x - v*|;  AntDir: d * v_x;  AntDir2D: v_xy . (cos t, sin t)
    reward_goal      AntGoal only (instead of reward_forward): 4.0 - ||xy - g||_1
    reward_ctrl      -0.005 * ||a||^2
    reward_contact   -0.0005 * ||clip(cfrc_ext[1:], -1, 1)||^2
    reward_survive   0.05 while healthy (as v5: 0 on the step that ends the episode)

``v_xy`` is the torso displacement ``(qpos[0:2] after - before) / dt`` and
``xy = qpos[0:2]`` after the step.  Healthy: finite state and torso z in
[0.2, 1.0]; otherwise the episode terminates.  Reset as gymnasium's Ant-v5:
``qpos = init + U[-0.1, 0.1]``, ``qvel = init + 0.1 * N(0, 1)``.
"""

from __future__ import annotations

import abc
from typing import Any

import mujoco
import numpy as np

from envs.base import Task, TaskError
from envs.mujoco_base import DirectionTasks, TargetVelocityTasks, VectorizedMujocoEnv, gym_asset


class _AntBase(VectorizedMujocoEnv):
    contact_forces = True

    def __init__(
        self,
        task: Task | None = None,
        *,
        ctrl_cost_weight: float = 0.005,
        contact_cost_weight: float = 5e-4,
        healthy_reward: float = 0.05,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        terminate_when_unhealthy: bool = True,
        reset_noise_scale: float = 0.1,
        frame_skip: int = 5,
        xml_file: str = "ant.xml",
        **kwargs: Any,
    ):
        """``kwargs``: ``action_scale``, ``render_mode`` (:class:`~envs.mujoco_base.VectorizedMujocoEnv`)."""
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.contact_cost_weight = float(contact_cost_weight)
        self.healthy_reward = float(healthy_reward)
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.contact_force_range = (float(contact_force_range[0]), float(contact_force_range[1]))
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.reset_noise_scale = float(reset_noise_scale)
        VectorizedMujocoEnv.__init__(self, gym_asset(xml_file), frame_skip, 119, task=task, **kwargs)

    def field_views(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        torso = self.body_id("torso")
        return {"cfrc_ext": data.cfrc_ext[1:], "xmat": data.xmat[torso], "com": data.xipos[torso]}

    def observe(self, f: dict[str, np.ndarray]) -> np.ndarray:
        n = f["qpos"].shape[0]
        lo, hi = self.contact_force_range
        contact = np.clip(f["cfrc_ext"].reshape(n, -1), lo, hi)
        return np.concatenate([f["qpos"], f["qvel"], contact, f["xmat"], f["com"]], axis=1)

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
        qvel = self.init_qvel + s * rng.standard_normal(self.model.nv)
        return qpos, qvel

    @abc.abstractmethod  # a hook every subclass provides
    def _progress(
        self, f: dict[str, np.ndarray], qpos_before: np.ndarray, task: np.ndarray
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def rewards(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, applied: np.ndarray,
                task: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = f["qpos"].shape[0]
        lo, hi = self.contact_force_range
        contact = np.clip(f["cfrc_ext"].reshape(n, -1), lo, hi)
        z_lo, z_hi = self.healthy_z_range
        z = f["qpos"][:, 2]
        finite = np.all(np.isfinite(f["qpos"]), axis=1) & np.all(np.isfinite(f["qvel"]), axis=1)
        healthy = finite & (z_lo <= z) & (z <= z_hi)
        terms = self._progress(f, qpos_before, task)
        terms["reward_ctrl"] = -(self.ctrl_cost_weight * np.sum(np.square(applied), axis=1))
        terms["reward_contact"] = -(self.contact_cost_weight * np.sum(np.square(contact), axis=1))
        terms["reward_survive"] = healthy * self.healthy_reward
        return terms, healthy

    def _xy_velocity(self, f: dict[str, np.ndarray], qpos_before: np.ndarray) -> np.ndarray:
        return (f["qpos"][:, 0:2] - qpos_before[:, 0:2]) / self.dt


class AntVelEnv(TargetVelocityTasks, _AntBase):
    """v* ~ U[0,3]; reward -|v_x - v*| + 0.05 - ctrl - contact; done if torso z not in [0.2,1]."""

    family = "AntVel"

    def __init__(self, task: Task | None = None, *, velocity_low: float = 0.0, velocity_high: float = 3.0,
                 **kwargs: Any):
        self._set_velocity_range(velocity_low, velocity_high)
        super().__init__(task, **kwargs)

    def _progress(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, task: np.ndarray) -> dict[str, np.ndarray]:
        v_x = self._xy_velocity(f, qpos_before)[:, 0]
        return {"reward_forward": -np.abs(v_x - task[:, 0])}


class AntDirEnv(DirectionTasks, _AntBase):
    """d in {-1,+1}; reward d*v_x + 0.05 - ctrl - contact; done if torso z not in [0.2,1]."""

    family = "AntDir"

    def _progress(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, task: np.ndarray) -> dict[str, np.ndarray]:
        v_x = self._xy_velocity(f, qpos_before)[:, 0]
        return {"reward_forward": task[:, 0] * v_x}


class AntDir2DEnv(_AntBase):
    """angle ~ U[0,2pi); reward v_xy.(cos,sin) + 0.05 - ctrl - contact; done if torso z not in [0.2,1]."""

    family = "AntDir2D"

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, size=n)]

    def task_vector(self, task: Task) -> np.ndarray:
        self._check_fields(task, ("angle",))
        angle = self._scalar_field(task, "angle", 0.0, 2 * np.pi)
        if angle == 2 * np.pi:
            raise TaskError(f"{self.family}: angle must be in [0, 2*pi), got {task['angle']!r}")
        return np.array([angle, np.cos(angle), np.sin(angle)])

    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        return {"angle": float(vec[0])}

    def _progress(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, task: np.ndarray) -> dict[str, np.ndarray]:
        v = self._xy_velocity(f, qpos_before)
        return {"reward_forward": v[:, 0] * task[:, 1] + v[:, 1] * task[:, 2]}


class AntGoalEnv(_AntBase):
    """goal ~ U[-3,3]^2; reward 4 - ||xy-g||_1 + 0.05 - ctrl - contact; done if torso z not in [0.2,1]."""

    family = "AntGoal"

    def __init__(self, task: Task | None = None, *, goal_low: float = -3.0, goal_high: float = 3.0,
                 goal_bonus: float = 4.0, **kwargs: Any):
        if not goal_low <= goal_high:
            raise ValueError(f"{self.family}: need goal_low <= goal_high, got {goal_low}, {goal_high}")
        self.goal_low, self.goal_high = float(goal_low), float(goal_high)
        self.goal_bonus = float(goal_bonus)
        super().__init__(task, **kwargs)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        goals = rng.uniform(self.goal_low, self.goal_high, size=(n, 2))
        return [{"goal": (float(x), float(y))} for x, y in goals]

    def task_vector(self, task: Task) -> np.ndarray:
        self._check_fields(task, ("goal",))
        try:
            goal = np.asarray(task["goal"], dtype=np.float64)
        except (TypeError, ValueError):
            goal = np.zeros(0)
        if goal.shape != (2,) or not np.all(np.isfinite(goal)):
            raise TaskError(f"{self.family}: goal must be two finite numbers, got {task['goal']!r}")
        if np.any(goal < self.goal_low) or np.any(goal > self.goal_high):
            raise TaskError(f"{self.family}: goal {tuple(goal)} is outside "
                            f"[{self.goal_low}, {self.goal_high}]^2")
        return goal

    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        return {"goal": (float(vec[0]), float(vec[1]))}

    def _progress(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, task: np.ndarray) -> dict[str, np.ndarray]:
        dist = np.sum(np.abs(f["qpos"][:, 0:2] - task[:, 0:2]), axis=1)
        return {"reward_goal": self.goal_bonus - dist}
