"""SwimmerVel: swim at a target forward velocity (an example task family in one file).

Task {"velocity": v*}, v* ~ U[0, 0.4]; reward -|v_x - v*| - 1e-4 ||a||^2, with
v_x = (qpos[0] after - before) / dt.  gymnasium's swimmer.xml, frame_skip 4;
obs qpos[2:], qvel (8, float32).  Batched stepping: the default envs.LoopBatchedEnv.
"""

from typing import Any

import mujoco
import numpy as np

from envs import register_family
from envs.base import check_action
from envs.mujoco_base import MujocoTaskEnv, gym_asset


class SwimmerVelEnv(MujocoTaskEnv):
    """v* ~ U[0,0.4]; reward -|v_x - v*| - 1e-4||a||^2."""

    family = "SwimmerVel"

    def __init__(self, task=None, *, velocity_low=0.0, velocity_high=0.4, ctrl_cost_weight=1e-4,
                 reset_noise_scale=0.1, frame_skip=4, action_scale=1.0, render_mode=None):
        self.velocity_low, self.velocity_high = velocity_low, velocity_high
        self.ctrl_cost_weight, self.reset_noise_scale = ctrl_cost_weight, reset_noise_scale
        super().__init__(gym_asset("swimmer.xml"), frame_skip, 8, render_mode, action_scale)
        self.set_task(task if task is not None else self.default_task())

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": float(v)} for v in rng.uniform(self.velocity_low, self.velocity_high, n)]

    def set_task(self, task) -> None:
        self._check_fields(task, ["velocity"])  # TaskError on missing/unknown fields
        self.velocity = self._scalar_field(task, "velocity", self.velocity_low, self.velocity_high)

    def get_task(self) -> dict[str, Any]:
        return {"velocity": self.velocity}

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos[2:], self.data.qvel]).astype(np.float32)

    def reset_model(self) -> np.ndarray:
        s = self.reset_noise_scale  # draw from self.np_random so reset(seed=...) is reproducible
        self.set_state(self.init_qpos + self.np_random.uniform(-s, s, self.model.nq),
                       self.init_qvel + self.np_random.uniform(-s, s, self.model.nv))
        return self._obs()

    def step(self, action):
        a = self.applied_action(check_action(action, self.model.nu))  # clip(action_scale * a, ctrlrange)
        x_before = self.data.qpos[0]
        self.data.ctrl[:] = a
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        v_x = (self.data.qpos[0] - x_before) / self.dt
        info = {"reward_forward": -abs(float(v_x) - self.velocity),  # every term, named reward_*
                "reward_ctrl": -self.ctrl_cost_weight * float(a @ a)}
        return self._obs(), info["reward_forward"] + info["reward_ctrl"], False, False, info


register_family("SwimmerVel", SwimmerVelEnv, horizon=200)
