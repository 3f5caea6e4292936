"""HalfCheetah goal-velocity and goal-direction families (MAML paper, sec. 5.3).

Model: gymnasium's ``half_cheetah.xml`` (timestep 0.01), ``frame_skip`` 5,
so ``dt = 0.05``.  Action: 6 torques; the applied control is
``clip(action_scale * a, [-1, 1])`` and the control cost uses it.  The
default ``action_scale = 1`` is gymnasium's HalfCheetah; the shipped configs
use the reference implementations' 0.1.

Observation (20, float32)::

    [0:8]   qpos[1:]        (root z, root angle, 6 joint angles; root x excluded)
    [8:17]  qvel            (9)
    [17:20] torso centre of mass, ``data.xipos[torso]`` (world frame)

pytorch-maml-rl appends the torso body's position; we use the torso body's
own centre of mass (``xipos``), which also carries the x position the
``qpos[1:]`` slice leaves out.  Like every position-derived MuJoCo field read
after ``mj_step`` it belongs to the start of the last substep.

Reward (``v_x = (qpos[0] after - qpos[0] before) / dt``)::

    HalfCheetahVel: reward_forward = -|v_x - v*|,   reward_ctrl = -0.05 * ||a||^2
    HalfCheetahDir: reward_forward = d * v_x,       reward_ctrl = -0.05 * ||a||^2

Tasks: ``{"velocity": v*}`` with ``v* ~ U[velocity_low, velocity_high]``
(default [0, 2]); ``{"direction": d}`` with ``d`` uniform on {-1, +1}.
Reset: ``qpos = init + U[-0.1, 0.1]``, ``qvel = init + 0.1 * N(0, 1)``, as
gymnasium's HalfCheetah-v5.  Episodes never terminate (fixed horizon).
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from envs.base import Task
from envs.mujoco_base import DirectionTasks, TargetVelocityTasks, VectorizedMujocoEnv, gym_asset


class _HalfCheetahBase(VectorizedMujocoEnv):
    def __init__(
        self,
        task: Task | None = None,
        *,
        ctrl_cost_weight: float = 0.05,
        reset_noise_scale: float = 0.1,
        frame_skip: int = 5,
        xml_file: str = "half_cheetah.xml",
        **kwargs: Any,
    ):
        """``kwargs``: ``action_scale``, ``render_mode`` (:class:`~envs.mujoco_base.VectorizedMujocoEnv`)."""
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.reset_noise_scale = float(reset_noise_scale)
        VectorizedMujocoEnv.__init__(self, gym_asset(xml_file), frame_skip, 20, task=task, **kwargs)

    def field_views(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        return {"com": data.xipos[self.body_id("torso")]}

    def observe(self, f: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([f["qpos"][:, 1:], f["qvel"], f["com"]], axis=1)

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
        qvel = self.init_qvel + s * rng.standard_normal(self.model.nv)
        return qpos, qvel

    def _x_velocity(self, f: dict[str, np.ndarray], qpos_before: np.ndarray) -> np.ndarray:
        return (f["qpos"][:, 0] - qpos_before[:, 0]) / self.dt

    def _ctrl_cost(self, applied: np.ndarray) -> np.ndarray:
        return self.ctrl_cost_weight * np.sum(np.square(applied), axis=1)


class HalfCheetahVelEnv(TargetVelocityTasks, _HalfCheetahBase):
    """v* ~ U[0,2]; reward -|v_x - v*| - 0.05||a||^2."""

    family = "HalfCheetahVel"

    def __init__(
        self,
        task: Task | None = None,
        *,
        velocity_low: float = 0.0,
        velocity_high: float = 2.0,
        **kwargs: Any,
    ):
        self._set_velocity_range(velocity_low, velocity_high)
        super().__init__(task, **kwargs)

    def rewards(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, applied: np.ndarray,
                task: np.ndarray) -> tuple[dict[str, np.ndarray], None]:
        v_x = self._x_velocity(f, qpos_before)
        return {"reward_forward": -np.abs(v_x - task[:, 0]), "reward_ctrl": -self._ctrl_cost(applied)}, None


class HalfCheetahDirEnv(DirectionTasks, _HalfCheetahBase):
    """d in {-1,+1}; reward d*v_x - 0.05||a||^2."""

    family = "HalfCheetahDir"

    def rewards(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, applied: np.ndarray,
                task: np.ndarray) -> tuple[dict[str, np.ndarray], None]:
        v_x = self._x_velocity(f, qpos_before)
        return {"reward_forward": task[:, 0] * v_x, "reward_ctrl": -self._ctrl_cost(applied)}, None
