"""Shared code for MuJoCo task families (official ``mujoco`` bindings, gymnasium models).

Two layers:

* :class:`MujocoTaskEnv` -- a gymnasium ``MujocoEnv`` (keeps ``model``, ``data``,
  ``dt``) that is also a :class:`~envs.base.TaskEnv`: float32 observation space,
  pickling that keeps constructor arguments and the current task, helpers to
  validate task fields.  A subclass writes ``step``/``reset_model`` as in
  gymnasium and gets the default :class:`~envs.base.LoopBatchedEnv` path
  (see ``experiments/families/swimmer_vel.py``).
* :class:`VectorizedMujocoEnv` -- subclasses describe a family by pure,
  vectorised, public hooks (``observe``, ``rewards``, ``task_vector``,
  ``reset_noise``).  The single env runs them on a batch of one; the fast
  batched path (:class:`BatchedMujocoEnv`) runs the very same hooks on a
  batch of ``n``, so both give bit-identical trajectories for the same seeds
  and actions.

Timing of derived quantities: ``mj_step`` runs the forward pass *before*
integrating, so position-derived fields read after a step (``xipos``,
``xmat``, ``subtree_com``) and contact forces (``cfrc_ext``, computed by
``mj_rnePostConstraint`` after the step as gymnasium does) describe the
state at the start of the last substep, while ``qpos``/``qvel`` are the
integrated state.  This matches gymnasium's v5 envs.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
import pickle
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.utils import seeding

from envs.base import Task, TaskEnv, TaskError, check_action, check_actions, check_task_fields

GYM_ASSETS = os.path.join(os.path.dirname(gymnasium.envs.mujoco.mujoco_env.__file__), "assets")


def gym_asset(name: str) -> str:
    """Absolute path of one of gymnasium's MuJoCo model files, e.g. ``"ant.xml"``."""
    return os.path.join(GYM_ASSETS, name)


@contextlib.contextmanager
def quiet_settotalmass() -> Iterator[None]:
    """Silence MuJoCo's deprecation notice for gymnasium's ``settotalmass`` attribute.

    MuJoCo otherwise prints it and appends it to ``MUJOCO_LOG.TXT`` in the
    working directory each time ``half_cheetah.xml`` is compiled.  Other
    MuJoCo warnings become Python ``RuntimeWarning``s while the block runs.
    """

    def handler(msg: str) -> None:
        if "settotalmass" not in msg:
            warnings.warn(f"MuJoCo: {msg}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def load_model(path: str) -> mujoco.MjModel:
    """``MjModel.from_xml_path`` inside :func:`quiet_settotalmass`."""
    with quiet_settotalmass():
        return mujoco.MjModel.from_xml_path(path)


def _rebuild(cls: type, kwargs: dict[str, Any], task: dict[str, Any]) -> MujocoTaskEnv:
    return cls(task=task, **kwargs)


class MujocoTaskEnv(MujocoEnv, TaskEnv):
    """A gymnasium ``MujocoEnv`` whose reward or dynamics depend on a task.

    Subclass constructors take ``task`` first and everything else as keyword
    arguments, then call ``MujocoTaskEnv.__init__(self, xml_file, frame_skip,
    obs_dim)`` and finally ``self.set_task(...)``.  Pickling rebuilds the env
    from its constructor arguments and current task (physics state is not
    kept: reset after unpickling).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array", "depth_array"]}
    family: ClassVar[str] = "MujocoTask"

    def __new__(cls, *args: Any, **kwargs: Any) -> MujocoTaskEnv:
        obj = super().__new__(cls)
        if len(args) > 1:
            raise TypeError(f"{cls.__name__}: only `task` may be positional; pass other arguments by name")
        obj._ctor_kwargs = {k: v for k, v in kwargs.items() if k != "task"}
        return obj

    def __init__(self, xml_file: str, frame_skip: int, obs_dim: int, render_mode: str | None = None,
                 action_scale: float = 1.0):
        if int(frame_skip) < 1:
            raise ValueError(f"{self.family}: frame_skip must be >= 1, got {frame_skip}")
        try:
            scale = float(action_scale)
        except (TypeError, ValueError):
            scale = float("nan")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"{self.family}: action_scale must be a finite number > 0, got {action_scale!r}")
        MujocoEnv.__init__(self, xml_file, int(frame_skip), observation_space=None, render_mode=render_mode)
        self.metadata = {**type(self).metadata, "render_fps": int(np.round(1.0 / self.dt))}
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (int(obs_dim),), np.float32)
        self.ctrl_low = self.model.actuator_ctrlrange[:, 0].copy()
        self.ctrl_high = self.model.actuator_ctrlrange[:, 1].copy()
        self.action_scale = scale
        if scale != 1.0:  # the policy's actions that are not clipped: the actuator range over the scale
            self.action_space = gymnasium.spaces.Box((self.ctrl_low / scale).astype(np.float32),
                                                     (self.ctrl_high / scale).astype(np.float32), dtype=np.float32)

    def applied_action(self, actions: np.ndarray) -> np.ndarray:
        """The control MuJoCo receives for policy ``actions (..., nu)``: clip(action_scale * a, actuator range).

        With ``action_scale = 1`` this is gymnasium's clip to the actuator range;
        the reference implementations' 0.1 reads actions in units of a tenth of
        the range (rllab-style normalisation).  Control costs use this value.
        """
        return np.clip(self.action_scale * actions, self.ctrl_low, self.ctrl_high)

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = load_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), dict(self._ctor_kwargs), self.get_task()))

    def body_id(self, name: str) -> int:
        i = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name)
        if i < 0:
            raise ValueError(f"{self.family}: the model has no body named {name!r}")
        return int(i)

    # -- task validation helpers -------------------------------------------
    def _scalar_field(self, task: Task, key: str, low: float, high: float) -> float:
        """``task[key]`` as a finite float in ``[low, high]``, else :class:`TaskError`."""
        try:
            value = float(task[key])
        except (TypeError, ValueError):
            raise TaskError(f"{self.family}: {key} must be a number, got {task[key]!r}") from None
        if not np.isfinite(value) or not low <= value <= high:
            raise TaskError(f"{self.family}: {key}={task[key]!r} is outside [{low}, {high}]")
        return value

    def _check_fields(self, task: Task, fields: Sequence[str]) -> None:
        check_task_fields(task, tuple(fields), self.family)


class VectorizedMujocoEnv(MujocoTaskEnv):
    """A MuJoCo task env written as vectorised hooks, with a fast batched path.

    Subclasses define:

    * ``task_vector(task) -> (k,) float64``: the validated task as numbers
      (raises :class:`TaskError`); ``task_from_vector`` the inverse;
    * ``field_views(data) -> dict[name, view]``: MuJoCo arrays the hooks
      read (``qpos`` and ``qvel`` are always gathered);
    * ``observe(f) -> (n, obs_dim) float64`` from gathered fields ``f``
      (each ``(n, ...)``);
    * ``rewards(f, qpos_before (n, nq), applied (n, nu), task (n, k))
      -> (terms, healthy)``: an ordered dict of ``reward_*`` arrays ``(n,)``
      whose left-to-right sum is the reward, and ``healthy (n,) bool`` or None;
    * ``reset_noise(rng) -> (qpos, qvel)`` drawn from ``rng`` exactly as
      the gymnasium env draws from ``self.np_random``.

    ``contact_forces = True`` runs ``mj_rnePostConstraint`` after each step.
    ``terminate_when_unhealthy`` ends an episode when ``healthy`` is False.
    ``per_task_model = True`` (parameter families) makes the batched path
    build one ``MjModel`` per distinct task and ``apply_model_task`` write
    the task into it.

    These hooks are public: they are the contract between a family's env
    class and :class:`BatchedMujocoEnv`.  The constructor ends with
    ``set_task(task)``, or ``set_task(default_task())`` when ``task`` is None,
    so a subclass sets what its hooks read (task ranges, coefficients) first
    and passes ``task`` on.
    """

    contact_forces: ClassVar[bool] = False
    per_task_model: ClassVar[bool] = False
    terminate_when_unhealthy: bool = False

    def __init__(self, xml_file: str, frame_skip: int, obs_dim: int, render_mode: str | None = None,
                 action_scale: float = 1.0, task: Task | None = None):
        MujocoTaskEnv.__init__(self, xml_file, frame_skip, obs_dim, render_mode=render_mode,
                               action_scale=action_scale)
        self._views = self.all_views(self.data)
        self.set_task(task if task is not None else self.default_task())

    # -- hooks -------------------------------------------------------------
    @abc.abstractmethod  # a hook every subclass provides
    def task_vector(self, task: Task) -> np.ndarray:
        raise NotImplementedError

    @abc.abstractmethod  # a hook every subclass provides
    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def field_views(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        return {}

    @abc.abstractmethod  # a hook every subclass provides
    def observe(self, f: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @abc.abstractmethod  # a hook every subclass provides
    def rewards(
        self, f: dict[str, np.ndarray], qpos_before: np.ndarray, applied: np.ndarray, task: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        raise NotImplementedError

    @abc.abstractmethod  # a hook every subclass provides
    def reset_noise(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------
    def all_views(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        return {"qpos": data.qpos, "qvel": data.qvel, **self.field_views(data)}

    def apply_model_task(self, model: mujoco.MjModel, task_vec: np.ndarray) -> None:
        """Write task-dependent model parameters (parameter families only)."""

    def set_task(self, task: Task) -> None:
        vec = self.task_vector(task)
        self._task = vec
        self.apply_model_task(self.model, vec)

    def get_task(self) -> dict[str, Any]:
        return self.task_from_vector(self._task)

    def reset_model(self) -> np.ndarray:
        qpos, qvel = self.reset_noise(self.np_random)
        self.set_state(qpos, qvel)
        return self.observe(gather([self._views]))[0].astype(np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        applied = self.applied_action(check_action(action, self.model.nu))
        qpos_before = self.data.qpos.copy()[None]
        self.data.ctrl[:] = applied
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if self.contact_forces:
            mujoco.mj_rnePostConstraint(self.model, self.data)
        f = gather([self._views])
        obs = self.observe(f)[0].astype(np.float32)
        terms, healthy = self.rewards(f, qpos_before, applied[None], self._task[None])
        reward = sum_terms(terms)
        terminated = bool(self.terminate_when_unhealthy and healthy is not None and not healthy[0])
        info: dict[str, Any] = {k: float(v[0]) for k, v in terms.items()}
        info["x_position"] = float(f["qpos"][0, 0])
        info["x_velocity"] = float((f["qpos"][0, 0] - qpos_before[0, 0]) / self.dt)
        return obs, float(reward[0]), terminated, False, info

    @classmethod
    def batched(cls, tasks: Sequence[Task], **kwargs: Any) -> BatchedMujocoEnv:
        return BatchedMujocoEnv(cls, tasks, **kwargs)


def gather(views: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-env MuJoCo views into ``(n, ...)`` float64 arrays (copies)."""
    return {k: np.array([v[k] for v in views]) for k in views[0]}


def sum_terms(terms: dict[str, np.ndarray]) -> np.ndarray:
    """Left-to-right sum of the reward terms: equals summing ``info`` values in order."""
    it = iter(terms.values())
    total = next(it).copy()
    for t in it:
        total = total + t
    return total


_PROTOTYPES: dict[tuple[type, bytes], VectorizedMujocoEnv] = {}
_MAX_PROTOTYPES = 16
_MAX_SPARE_DATAS = 1024


def _prototype(env_cls: type[VectorizedMujocoEnv], kwargs: dict[str, Any]) -> VectorizedMujocoEnv:
    """A per-process env built with ``kwargs`` and the default task, reused by batched envs.

    It supplies the hooks, the shared ``MjModel`` of non-parameter families and
    a pool of spare ``MjData`` (building one costs ~0.7 ms, as much as ~30
    HalfCheetah steps).  Hooks are pure functions of their arguments, so
    sharing it does not couple batched envs.
    """
    try:
        key = (env_cls, pickle.dumps(sorted(kwargs.items())))
    except Exception:  # unpicklable kwargs: no caching
        proto = env_cls(**kwargs)
        proto._spare_datas = []
        return proto
    proto = _PROTOTYPES.get(key)
    if proto is None:
        proto = env_cls(**kwargs)
        proto._spare_datas = []
        if len(_PROTOTYPES) >= _MAX_PROTOTYPES:
            _PROTOTYPES.pop(next(iter(_PROTOTYPES)))
        _PROTOTYPES[key] = proto
    return proto


def _return_datas(spare: list[mujoco.MjData], datas: list[mujoco.MjData]) -> None:
    spare.extend(datas[: max(0, _MAX_SPARE_DATAS - len(spare))])


class BatchedMujocoEnv:
    """Steps one ``MjData`` per task in a tight loop; obs and rewards vectorised.

    Non-parameter families share one ``MjModel``; parameter families get one
    model per distinct task (envs with equal tasks share it).  No gymnasium
    wrapper runs in the hot loop.  ``MjData`` are taken from a per-process
    pool and returned when the batched env is garbage-collected; they are
    reset on arrival and by every ``reset``, so reuse cannot leak state.
    ``proto`` is the per-process prototype env shared by batched envs with
    the same constructor arguments: read it, do not modify it.
    Satisfies :class:`envs.base.BatchedEnv`.
    """

    def __init__(self, env_cls: type[VectorizedMujocoEnv], tasks: Sequence[Task], **kwargs: Any):
        tasks = list(tasks)
        if not tasks:
            raise ValueError(f"{env_cls.__name__}: a batched env needs at least one task")
        self.env_cls = env_cls
        self.kwargs = dict(kwargs)
        proto = _prototype(env_cls, self.kwargs)
        self.proto = proto
        vecs = [proto.task_vector(t) for t in tasks]
        self.tasks = [proto.task_from_vector(v) for v in vecs]
        self._task = np.array(vecs, dtype=np.float64).reshape(len(tasks), -1)
        self.num_envs = len(tasks)
        self.obs_dim = int(proto.observation_space.shape[0])
        self.act_dim = int(proto.model.nu)
        self.frame_skip = proto.frame_skip
        self.dt = proto.dt
        models: dict[bytes, mujoco.MjModel] = {}
        self.models: list[mujoco.MjModel] = []
        for vec in self._task:
            key = vec.tobytes() if proto.per_task_model else b""
            if key not in models:
                if proto.per_task_model:
                    m = copy.copy(proto.model)  # mj_copyModel; the task then overwrites every scaled field
                    proto.apply_model_task(m, vec)
                else:
                    m = proto.model
                models[key] = m
            self.models.append(models[key])
        spare = proto._spare_datas
        self.datas = [spare.pop() if spare else mujoco.MjData(proto.model) for _ in range(self.num_envs)]
        weakref.finalize(self, _return_datas, spare, self.datas)
        for m, d in zip(self.models, self.datas, strict=True):
            mujoco.mj_resetData(m, d)
            mujoco.mj_forward(m, d)
        self._views = [proto.all_views(d) for d in self.datas]
        self._ctrl = [d.ctrl for d in self.datas]
        self._qpos = gather(self._views)["qpos"]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_batched, (self.env_cls, self.tasks, self.kwargs))

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        return self.reset_some(range(self.num_envs), seeds)

    def reset_some(self, indices: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        """Reset envs ``indices``, each from its seed; returns their observations."""
        indices = [int(i) for i in indices]
        if len(indices) != len(seeds):
            raise ValueError(f"reset_some got {len(seeds)} seeds for {len(indices)} envs")
        proto = self.proto
        for i, s in zip(indices, seeds, strict=True):
            m, d = self.models[i], self.datas[i]
            rng, _ = seeding.np_random(int(s))
            mujoco.mj_resetData(m, d)
            qpos, qvel = proto.reset_noise(rng)
            d.qpos[:] = qpos
            d.qvel[:] = qvel
            mujoco.mj_forward(m, d)
        f = gather(self._views)
        self._qpos = f["qpos"]
        return proto.observe(f).astype(np.float32)[indices]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``actions (n, act_dim)`` -> ``obs (n, obs_dim) float32, rewards (n,), terminated (n,)``."""
        proto = self.proto
        applied = proto.applied_action(check_actions(actions, self.num_envs, self.act_dim))
        step, nstep = mujoco.mj_step, self.frame_skip
        for i, (m, d, ctrl) in enumerate(zip(self.models, self.datas, self._ctrl, strict=True)):
            ctrl[:] = applied[i]
            step(m, d, nstep=nstep)
        if proto.contact_forces:
            rne = mujoco.mj_rnePostConstraint
            for m, d in zip(self.models, self.datas, strict=True):
                rne(m, d)
        f = gather(self._views)
        obs = proto.observe(f).astype(np.float32)
        terms, healthy = proto.rewards(f, self._qpos, applied, self._task)
        self._qpos = f["qpos"]
        rewards = sum_terms(terms)
        if proto.terminate_when_unhealthy and healthy is not None:
            terminated = ~healthy
        else:
            terminated = np.zeros(self.num_envs, dtype=bool)
        return obs, rewards, terminated


def _rebuild_batched(env_cls: type[VectorizedMujocoEnv], tasks: list, kwargs: dict) -> BatchedMujocoEnv:
    return BatchedMujocoEnv(env_cls, tasks, **kwargs)


class TargetVelocityTasks:
    """Task plumbing of the goal-velocity families: ``{"velocity": v*}``, ``v* ~ U[low, high]``.

    Mix in before the env base class and call :meth:`_set_velocity_range`
    in ``__init__`` before ``super().__init__``.
    """

    family: str
    velocity_low: float
    velocity_high: float

    def _set_velocity_range(self, low: float, high: float) -> None:
        if not low <= high:
            raise ValueError(f"{self.family}: need velocity_low <= velocity_high, got {low}, {high}")
        self.velocity_low, self.velocity_high = float(low), float(high)

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"velocity": float(v)} for v in rng.uniform(self.velocity_low, self.velocity_high, size=n)]

    def task_vector(self, task: Task) -> np.ndarray:
        self._check_fields(task, ("velocity",))  # type: ignore[attr-defined]
        return np.array([self._scalar_field(task, "velocity", self.velocity_low,  # type: ignore[attr-defined]
                                            self.velocity_high)])

    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        return {"velocity": float(vec[0])}


def check_direction(family: str, task: Task) -> int:
    """``task["direction"]`` as the int -1 or +1, else :class:`TaskError`."""
    d = task["direction"]
    try:
        ok = float(d) in (-1.0, 1.0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TaskError(f"{family}: direction must be -1 or +1, got {d!r}")
    return int(float(d))


class DirectionTasks:
    """Task plumbing of the direction families: ``{"direction": d}``, ``d`` uniform on ``{-1, +1}``."""

    family: str

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"direction": int(d)} for d in rng.choice(np.array([-1, 1]), size=n)]

    def task_vector(self, task: Task) -> np.ndarray:
        self._check_fields(task, ("direction",))  # type: ignore[attr-defined]
        return np.array([float(check_direction(self.family, task))])

    def task_from_vector(self, vec: np.ndarray) -> dict[str, Any]:
        return {"direction": int(vec[0])}
