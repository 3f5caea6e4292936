"""Physical-parameter families: Hopper and Walker2d with randomised dynamics.

Observation, reward and termination are gymnasium's v5 Hopper / Walker2d
(models ``hopper.xml`` and ``walker2d_v5.xml``, timestep 0.002,
``frame_skip`` 4, ``dt = 0.008``)::

    obs            qpos[1:], clip(qvel, -10, 10)        (Hopper 11, Walker2d 17; float32)
    reward_forward 1.0 * v_x,  v_x = (qpos[0] after - before) / dt
    reward_ctrl    -0.001 * ||a||^2   (a = clip(action_scale * action, actuator range), as applied)
    reward_survive 1.0 while healthy (0 on the step that ends the episode)

Healthy (the episode terminates otherwise), as v5:
Hopper: every entry of ``[qpos, qvel][2:]`` in (-100, 100), z = qpos[1] > 0.7,
angle = qpos[2] in (-0.2, 0.2); Walker2d: z in (0.8, 2.0), angle in (-1, 1).
Reset: ``qpos, qvel = init + U[-0.005, 0.005]``.

Task: ``{"scales": {"body_mass": (nbody,), "body_inertia": (nbody, 3),
"dof_damping": (nv,), "geom_friction": (ngeom, 3)}}`` (numpy arrays; lists
are accepted), each element ``1.5 ** U[-3, 3]`` (``log_scale_limit`` 3.0).
``set_task`` writes ``default * scale`` into the model, where ``default`` is
the value the model had when the env was built, so tasks never compound and
the all-ones task restores the original model bit-exactly.  As in the
reference implementation (rand_param_envs), derived constants
(``body_subtreemass``, ``*_invweight0``) are not recomputed.  ``task=None``
builds the unmodified model (all scales 1).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np

from envs.base import Task, TaskError
from envs.mujoco_base import VectorizedMujocoEnv, gym_asset, load_model

PARAM_NAMES = ("body_mass", "body_inertia", "dof_damping", "geom_friction")


class _RandParamsBase(VectorizedMujocoEnv):
    per_task_model = True
    obs_clip_qvel = 10.0

    def __init__(
        self,
        task: Task | None,
        xml_file: str,
        *,
        log_scale_limit: float = 3.0,
        rand_params: Sequence[str] = PARAM_NAMES,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        reset_noise_scale: float = 5e-3,
        frame_skip: int = 4,
        **kwargs: Any,
    ):
        """``kwargs``: ``action_scale``, ``render_mode`` (:class:`~envs.mujoco_base.VectorizedMujocoEnv`)."""
        unknown = [p for p in rand_params if p not in PARAM_NAMES]
        if unknown or len(set(rand_params)) != len(rand_params):
            raise ValueError(f"{self.family}: rand_params must be distinct names from {PARAM_NAMES}, "
                             f"got {rand_params}")
        if not log_scale_limit >= 0:
            raise ValueError(f"{self.family}: log_scale_limit must be >= 0, got {log_scale_limit}")
        self.log_scale_limit = float(log_scale_limit)
        self.rand_params = tuple(rand_params)
        self.forward_reward_weight = float(forward_reward_weight)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.healthy_reward = float(healthy_reward)
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.reset_noise_scale = float(reset_noise_scale)
        model = load_model(gym_asset(xml_file))
        obs_dim = model.nq - 1 + model.nv
        self.default_params = {p: getattr(model, p).copy() for p in PARAM_NAMES}
        VectorizedMujocoEnv.__init__(self, gym_asset(xml_file), frame_skip, obs_dim, task=task, **kwargs)

    # -- tasks ---------------------------------------------------------------
    def default_task(self) -> dict[str, Any]:
        """All scales 1: the unmodified model."""
        return {"scales": {p: np.ones_like(self.default_params[p]) for p in self.rand_params}}

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        lim = self.log_scale_limit
        tasks = []
        for _ in range(n):
            shapes = {p: self.default_params[p].shape for p in self.rand_params}
            tasks.append({"scales": {p: 1.5 ** rng.uniform(-lim, lim, size=s) for p, s in shapes.items()}})
        return tasks

    def task_vector(self, task: Task) -> np.ndarray:
        self._check_fields(task, ("scales",))
        scales = task["scales"]
        if not isinstance(scales, Mapping):
            raise TaskError(f"{self.family}: scales must be a mapping of {list(self.rand_params)}, "
                            f"got {scales!r}")
        missing = [p for p in self.rand_params if p not in scales]
        unknown = [p for p in scales if p not in self.rand_params]
        if missing or unknown:
            raise TaskError(f"{self.family}: scales has missing {missing} / unknown {unknown} entries; "
                            f"expected {list(self.rand_params)}")
        lo = 1.5 ** -self.log_scale_limit * (1 - 1e-12)
        hi = 1.5 ** self.log_scale_limit * (1 + 1e-12)
        parts = []
        for p in self.rand_params:
            try:
                s = np.asarray(scales[p], dtype=np.float64)
            except (TypeError, ValueError):
                raise TaskError(f"{self.family}: scales[{p!r}] must be numbers") from None
            want = self.default_params[p].shape
            if s.shape != want:
                raise TaskError(f"{self.family}: scales[{p!r}] has shape {s.shape}, expected {want}")
            if not np.all(np.isfinite(s)) or np.any(s < lo) or np.any(s > hi):
                raise TaskError(f"{self.family}: scales[{p!r}] has values outside "
                                f"[1.5**-{self.log_scale_limit}, 1.5**{self.log_scale_limit}]")
            parts.append(s.reshape(-1))
        return np.concatenate(parts)

    def _split(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for p in self.rand_params:
            shape = self.default_params[p].shape
            size = int(np.prod(shape))
            out[p] = vec[i:i + size].reshape(shape).copy()
            i += size
        return out

    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        return {"scales": self._split(vec)}

    def apply_model_task(self, model: mujoco.MjModel, task_vec: np.ndarray) -> None:
        scales = self._split(task_vec)
        for p in PARAM_NAMES:
            default = self.default_params[p]
            getattr(model, p)[:] = default * scales[p] if p in scales else default

    # -- dynamics hooks ------------------------------------------------------
    def observe(self, f: dict[str, np.ndarray]) -> np.ndarray:
        c = self.obs_clip_qvel
        return np.concatenate([f["qpos"][:, 1:], np.clip(f["qvel"], -c, c)], axis=1)

    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
        qvel = self.init_qvel + rng.uniform(low=-s, high=s, size=self.model.nv)
        return qpos, qvel

    @abc.abstractmethod  # a hook every subclass provides
    def _healthy(self, f: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def rewards(self, f: dict[str, np.ndarray], qpos_before: np.ndarray, applied: np.ndarray,
                task: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        v_x = (f["qpos"][:, 0] - qpos_before[:, 0]) / self.dt
        healthy = self._healthy(f)
        terms = {
            "reward_forward": self.forward_reward_weight * v_x,
            "reward_ctrl": -(self.ctrl_cost_weight * np.sum(np.square(applied), axis=1)),
            "reward_survive": healthy * self.healthy_reward,
        }
        return terms, healthy


class HopperParamsEnv(_RandParamsBase):
    """mass/inertia/damping/friction scaled by 1.5^U[-3,3]; gymnasium Hopper-v5 reward and termination."""

    family = "HopperParams"

    def __init__(
        self,
        task: Task | None = None,
        *,
        healthy_state_range: tuple[float, float] = (-100.0, 100.0),
        healthy_z_range: tuple[float, float] = (0.7, float("inf")),
        healthy_angle_range: tuple[float, float] = (-0.2, 0.2),
        xml_file: str = "hopper.xml",
        **kwargs: Any,
    ):
        self.healthy_state_range = (float(healthy_state_range[0]), float(healthy_state_range[1]))
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.healthy_angle_range = (float(healthy_angle_range[0]), float(healthy_angle_range[1]))
        super().__init__(task, xml_file, **kwargs)

    def _healthy(self, f: dict[str, np.ndarray]) -> np.ndarray:
        state = np.concatenate([f["qpos"], f["qvel"]], axis=1)[:, 2:]
        s_lo, s_hi = self.healthy_state_range
        z_lo, z_hi = self.healthy_z_range
        a_lo, a_hi = self.healthy_angle_range
        z, angle = f["qpos"][:, 1], f["qpos"][:, 2]
        ok_state = np.all((s_lo < state) & (state < s_hi), axis=1)
        return ok_state & (z_lo < z) & (z < z_hi) & (a_lo < angle) & (angle < a_hi)


class Walker2dParamsEnv(_RandParamsBase):
    """mass/inertia/damping/friction scaled by 1.5^U[-3,3]; gymnasium Walker2d-v5 reward and termination."""

    family = "Walker2dParams"

    def __init__(
        self,
        task: Task | None = None,
        *,
        healthy_z_range: tuple[float, float] = (0.8, 2.0),
        healthy_angle_range: tuple[float, float] = (-1.0, 1.0),
        xml_file: str = "walker2d_v5.xml",
        **kwargs: Any,
    ):
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.healthy_angle_range = (float(healthy_angle_range[0]), float(healthy_angle_range[1]))
        super().__init__(task, xml_file, **kwargs)

    def _healthy(self, f: dict[str, np.ndarray]) -> np.ndarray:
        z_lo, z_hi = self.healthy_z_range
        a_lo, a_hi = self.healthy_angle_range
        z, angle = f["qpos"][:, 1], f["qpos"][:, 2]
        return (z_lo < z) & (z < z_hi) & (a_lo < angle) & (angle < a_hi)
