"""Meta-World ML1 and ML10 as task families, on the ``metaworld`` package.

A task is a small value: ``{"env_name": "reach-v3", "rand_vec": (floats...)}``.
``rand_vec`` is Meta-World's per-goal random vector (for most environments the
object's initial position followed by the goal position; reach-v3: 6 floats),
exactly as Meta-World stores it in a benchmark ``Task``.  :func:`to_metaworld_task`
turns the value into Meta-World's ``Task(env_name, data)``; :func:`from_metaworld_task`
goes back.  Goals are hidden from the observations (``partially_observable``),
as in Meta-World's ML benchmarks.

Train and test tasks are Meta-World's own: ``metaworld.ML1(env_name, seed)`` or
``metaworld.ML10(seed)`` built once per process with ``benchmark_seed`` (0 by
default) and cached (:func:`benchmark_tasks`; the shipped configs' lists at seed 0
are also stored in ``envs/metaworld_tasks.json`` for the metaworld version that
built them, and read from there when that version is installed); ML1 has 50 train and 50 disjoint
test goals, ML10 50 goals for each of 10 train and 5 test environments.
``sample_tasks`` draws train tasks (without replacement up to the list's
length); ``test_tasks()`` lists the test tasks.  Rollout workers receive task
values and build environments from them only; they never build a benchmark.

Behaviour of the wrapped environment (checked against metaworld 3.1.1):

* observations are 39 floats, cast from float64 to float32;
* actions are clipped to ``[-1, 1]^4`` (xyz displacement of the hand, gripper);
* ``reset(seed=)`` is ignored by Meta-World; a reset is deterministic for a
  task (the goal vector is frozen), and the seed also seeds Meta-World's own
  generator so that nothing it draws is left unseeded;
* an episode lasts at most :data:`MAX_PATH_LENGTH` = 500 steps (Meta-World's
  ``max_path_length``; stepping further raises inside Meta-World), so a family
  horizon above 500 is refused; the step at 500 returns ``truncated=True``;
* ``terminated`` is always false; ``info["success"]`` (0.0 or 1.0) says whether
  the goal is reached at this step; Meta-World's reward is one term,
  ``info["reward_task"]`` (its other ``info`` entries are diagnostics, not
  addends).

Constructing a Meta-World environment compiles its MuJoCo model (about 0.3 s
and 25 MB each), so the batched path borrows environments from a per-process
pool (:class:`MetaWorldBatchedEnv`) and steps at most :attr:`max_batch_envs`
of them at once; a reused environment is re-tasked and reset, which gives the
same trajectory as a fresh one.
"""

from __future__ import annotations

import abc
import functools
import json
import pickle
import weakref
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np

from envs.base import LoopBatchedEnv, Task, TaskEnv, TaskError, check_action, check_task_fields

MAX_PATH_LENGTH = 500
"""Meta-World's ``max_path_length``: the longest episode it allows."""

TASK_FIELDS = ("env_name", "rand_vec")
REWARD_FUNCTION_VERSIONS = ("v1", "v2")


def metaworld_version() -> str:
    return metadata.version("metaworld")


def _env_classes() -> dict[str, type]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return dict(ALL_V3_ENVIRONMENTS)


def ml10_env_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(train names, test names)`` of Meta-World's ML10 split."""
    from metaworld.env_dict import ML10_V3

    return tuple(ML10_V3["train"]), tuple(ML10_V3["test"])


def to_metaworld_task(task: Task) -> Any:
    """The value ``{"env_name", "rand_vec"}`` as Meta-World's ``Task(env_name, data)``."""
    from metaworld.types import Task as MWTask

    data = {"rand_vec": np.asarray(task["rand_vec"], dtype=np.float64), "env_cls": _env_classes()[task["env_name"]],
            "partially_observable": True}
    return MWTask(env_name=task["env_name"], data=pickle.dumps(data))


def from_metaworld_task(mw_task: Any) -> dict[str, Any]:
    """Meta-World's ``Task`` as the small value ``{"env_name": str, "rand_vec": tuple of floats}``."""
    data = pickle.loads(mw_task.data)
    extra = set(data) - {"rand_vec", "env_cls", "partially_observable"}
    if extra or not data.get("partially_observable", False):
        raise TaskError(f"Meta-World task {mw_task.env_name!r} carries data this family does not model: {sorted(data)}")
    return {"env_name": str(mw_task.env_name), "rand_vec": tuple(float(x) for x in data["rand_vec"])}


SHIPPED_TASKS = Path(__file__).with_name("metaworld_tasks.json")
"""Meta-World's own train and test task lists for :data:`SHIPPED` at benchmark seed 0, as built by
the metaworld version the file records (``python -c "import envs.metaworld as m;
m.write_shipped_tasks()"`` rewrites it).  Building ML10
takes Meta-World about 15 s per process; with a matching version the lists are read from here."""
SHIPPED = (("ML10", None), ("ML1", "reach-v3"), ("ML1", "push-v3"))  # the shipped configs' benchmarks


def _shipped_key(benchmark: str, env_name: str | None, seed: int) -> str:
    return f"{benchmark}/{env_name or '-'}/{seed}"


@functools.cache
def _shipped_tasks() -> dict[str, Any]:
    """The shipped lists if they were built by the installed metaworld, else ``{}``."""
    try:
        data = json.loads(SHIPPED_TASKS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("tasks", {}) if data.get("metaworld") == metaworld_version() else {}


def _as_tasks(rows: Sequence[Any]) -> tuple[dict, ...]:
    return tuple({"env_name": str(r["env_name"]), "rand_vec": tuple(float(x) for x in r["rand_vec"])} for r in rows)


@functools.cache
def benchmark_tasks(benchmark: str, env_name: str | None, seed: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """``(train tasks, test tasks)`` of ``metaworld.ML1(env_name, seed)`` or ``metaworld.ML10(seed)``.

    Read from :data:`SHIPPED_TASKS` when it holds them for the installed metaworld, else built by
    :func:`build_benchmark_tasks`; once per process and argument tuple.
    """
    hit = _shipped_tasks().get(_shipped_key(benchmark, env_name, seed))
    if hit is not None:
        return _as_tasks(hit["train"]), _as_tasks(hit["test"])
    return build_benchmark_tasks(benchmark, env_name, seed)


def build_benchmark_tasks(benchmark: str, env_name: str | None,
                          seed: int) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """Meta-World builds the benchmark (ML1 ≈ 3 s, ML10 ≈ 15 s here) and the task values are read off it.

    Meta-World seeds numpy's global generator for this and restores it after.
    """
    import metaworld

    if benchmark == "ML1":
        bench = metaworld.ML1(env_name, seed=seed)
    elif benchmark == "ML10":
        bench = metaworld.ML10(seed=seed)
    else:
        raise ValueError(f"unknown Meta-World benchmark {benchmark!r}")
    return (tuple(from_metaworld_task(t) for t in bench.train_tasks),
            tuple(from_metaworld_task(t) for t in bench.test_tasks))


def write_shipped_tasks(path: Path = SHIPPED_TASKS) -> Path:
    """Build every benchmark of :data:`SHIPPED` with the installed metaworld and write them to ``path``."""
    from metarl.fileio import atomic_write

    lists = {_shipped_key(b, n, 0): build_benchmark_tasks(b, n, 0) for b, n in SHIPPED}
    atomic_write(path, shipped_text(metaworld_version(), lists))
    return path


def shipped_text(version: str, lists: dict[str, tuple[Sequence[dict], Sequence[dict]]]) -> str:
    """The JSON of :data:`SHIPPED_TASKS`, one task per line: ``{"metaworld": version, "tasks": {key:
    {"train": [...], "test": [...]}}}``."""
    def rows(tasks: Sequence[dict]) -> str:
        return "[\n" + ",\n".join(json.dumps(t) for t in tasks) + "\n]"

    entries = [f'{json.dumps(key)}: {{\n"train": {rows(train)},\n"test": {rows(test)}\n}}'
               for key, (train, test) in lists.items()]
    return f'{{"metaworld": {json.dumps(version)}, "tasks": {{\n' + ",\n".join(entries) + "\n}}\n"


# -- a per-process pool of constructed Meta-World environments -------------------------

_FREE: dict[tuple[str, str], list[Any]] = {}


def _borrow(env_name: str, reward_function_version: str) -> Any:
    free = _FREE.get((env_name, reward_function_version))
    if free:
        return free.pop()
    return _env_classes()[env_name](reward_function_version=reward_function_version)


def _give_back(items: list[tuple[tuple[str, str], Any]], keep: int) -> None:
    for key, inner in items:
        free = _FREE.setdefault(key, [])
        if len(free) < keep:
            free.append(inner)
        else:
            inner.close()


class MetaWorldEnv(TaskEnv):
    """A Meta-World environment whose task is ``{"env_name", "rand_vec"}`` (base of the two families)."""

    metadata = {"render_modes": []}
    max_horizon: ClassVar[int | None] = MAX_PATH_LENGTH
    max_batch_envs: ClassVar[int | None] = 10
    evaluation_protocol: ClassVar[str] = "metaworld"
    """``metarl evaluate`` runs Meta-World's protocol (``metarl.protocols``) by default."""
    benchmark: ClassVar[str] = ""

    def __init__(self, task: Task | None = None, benchmark_seed: int = 0, reward_function_version: str = "v2",
                 _inner: Any = None):
        if reward_function_version not in REWARD_FUNCTION_VERSIONS:
            raise ValueError(f"{type(self).__name__}: reward_function_version must be one of "
                             f"{REWARD_FUNCTION_VERSIONS}, got {reward_function_version!r}")
        self.benchmark_seed = int(benchmark_seed)
        self.reward_function_version = str(reward_function_version)
        self._inner: Any = _inner
        self._inner_name: str | None = None if _inner is None else self._name_of(_inner)
        self._steps = 0
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        if task is None:
            task = self._train()[0]
        self.set_task(task)
        space = self._inner.sawyer_observation_space
        self.observation_space = gymnasium.spaces.Box(np.asarray(space.low, dtype=np.float32),
                                                      np.asarray(space.high, dtype=np.float32), dtype=np.float32)

    # -- the family's tasks --------------------------------------------------------------
    def _kwargs(self) -> dict[str, Any]:
        return {"benchmark_seed": self.benchmark_seed, "reward_function_version": self.reward_function_version}

    @abc.abstractmethod  # a hook every subclass provides
    def _benchmark(self) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        """The (train, test) task values of this family's benchmark, built once per process."""
        raise NotImplementedError

    def _train(self) -> tuple[dict, ...]:
        return self._benchmark()[0]

    @abc.abstractmethod  # a hook every subclass provides
    def env_names(self) -> tuple[str, ...]:
        """Environment names a task of this family may name."""
        raise NotImplementedError

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        """``n`` train tasks: distinct while ``n`` <= the number of train tasks, else with replacement."""
        train = self._train()
        idx = rng.choice(len(train), size=int(n), replace=int(n) > len(train))
        return [dict(train[int(i)]) for i in idx]

    def test_tasks(self) -> list[dict[str, Any]]:
        """Meta-World's held-out test tasks, in the benchmark's order."""
        return [dict(t) for t in self._benchmark()[1]]

    @classmethod
    def provenance(cls, **kwargs: Any) -> dict[str, Any]:
        """What a run records about the benchmark: package and reward-function versions, seed."""
        return {"metaworld": metaworld_version(), "benchmark": cls.benchmark,
                "reward_function_version": kwargs.get("reward_function_version", "v2"),
                "benchmark_seed": int(kwargs.get("benchmark_seed", 0)), **cls._extra_provenance(kwargs)}

    @classmethod
    def _extra_provenance(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {}

    # -- the task ------------------------------------------------------------------------
    @staticmethod
    def _name_of(inner: Any) -> str:
        return next(k for k, v in _env_classes().items() if type(inner) is v)

    def check_task(self, task: Any) -> dict[str, Any]:
        """``task`` as a clean value, or :class:`TaskError` (fields, env name, rand_vec length and bounds)."""
        family = type(self).__name__
        check_task_fields(task, TASK_FIELDS, family)
        name = task["env_name"]
        if name not in self.env_names():
            raise TaskError(f"{family}: env_name {name!r} is not one of {list(self.env_names())}")
        try:
            vec = np.asarray(task["rand_vec"], dtype=np.float64)
        except (TypeError, ValueError):
            raise TaskError(f"{family}: rand_vec must be a sequence of floats, got {task['rand_vec']!r}") from None
        if vec.ndim != 1 or not np.all(np.isfinite(vec)):
            raise TaskError(f"{family}: rand_vec must be a flat sequence of finite floats, got {task['rand_vec']!r}")
        return {"env_name": str(name), "rand_vec": tuple(float(x) for x in vec)}

    def set_task(self, task: Task) -> None:
        clean = self.check_task(task)
        if self._inner is None or self._inner_name != clean["env_name"]:
            if self._inner is not None:
                self._inner.close()
            self._inner = _env_classes()[clean["env_name"]](reward_function_version=self.reward_function_version)
            self._inner_name = clean["env_name"]
        space = self._inner._random_reset_space
        vec = np.asarray(clean["rand_vec"])
        if vec.shape != space.low.shape:
            raise TaskError(f"{type(self).__name__}: {clean['env_name']} needs a rand_vec of "
                            f"{space.low.size} floats, got {vec.size}")
        if np.any(vec < space.low - 1e-9) or np.any(vec > space.high + 1e-9):
            raise TaskError(f"{type(self).__name__}: rand_vec {clean['rand_vec']} is outside {clean['env_name']}'s "
                            f"range [{space.low.tolist()}, {space.high.tolist()}]")
        self._inner.set_task(to_metaworld_task(clean))
        self._task = clean
        self._steps = MAX_PATH_LENGTH  # a reset is due

    def get_task(self) -> dict[str, Any]:
        return dict(self._task)

    # -- gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._inner.seed(int(seed))
        obs, _ = self._inner.reset()
        self._steps = 0
        return np.asarray(obs, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(check_action(action, 4), -1.0, 1.0)
        if self._steps >= MAX_PATH_LENGTH:
            raise RuntimeError(f"{type(self).__name__}: the episode ended after {MAX_PATH_LENGTH} steps "
                               "(or reset() was not called); call reset()")
        obs, reward, _terminated, _truncated, mw_info = self._inner.step(a)
        self._steps += 1
        r = float(reward)
        info = {**mw_info, "success": float(mw_info["success"]), "reward_task": r}
        return np.asarray(obs, dtype=np.float32), r, False, self._steps >= MAX_PATH_LENGTH, info

    def close(self) -> None:
        self._inner = None

    def __getstate__(self) -> dict[str, Any]:
        return {"task": self._task, "kwargs": self._kwargs()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, task=state["task"], **state["kwargs"])

    # -- batched path --------------------------------------------------------------------
    @classmethod
    def batched(cls, tasks: Sequence[Task], **kwargs: Any) -> MetaWorldBatchedEnv:
        return MetaWorldBatchedEnv(cls, tasks, kwargs)


class MetaWorldBatchedEnv(LoopBatchedEnv):
    """The loop over single envs, on Meta-World environments borrowed from the process's pool.

    The borrowed environments go back to the pool when this object is closed
    or garbage-collected; at most ``env_cls.max_batch_envs`` idle ones are kept
    per environment name.  ``success`` after a step: ``(n,)`` bool.
    """

    def __init__(self, env_cls: type[MetaWorldEnv], tasks: Sequence[Task], kwargs: dict[str, Any]):
        rfv = str(kwargs.get("reward_function_version", "v2"))
        envs, lent = [], []
        for task in tasks:
            name = task.get("env_name") if isinstance(task, dict) else None
            inner = _borrow(name, rfv) if isinstance(name, str) and name in _env_classes() else None
            env = env_cls(task=task, _inner=inner, **kwargs)
            envs.append(env)
            lent.append(((env._inner_name, rfv), env._inner))
        super().__init__(envs)
        self._release = weakref.finalize(self, _give_back, lent, int(env_cls.max_batch_envs or len(lent)))

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self._release()


class MetaWorldML1Env(MetaWorldEnv):
    """ML1: one Meta-World environment, 50 train and 50 test goals; success rate on the test goals."""

    benchmark = "ML1"

    def __init__(self, task: Task | None = None, env_name: str = "reach-v3", benchmark_seed: int = 0,
                 reward_function_version: str = "v2", _inner: Any = None):
        if env_name not in _env_classes():
            raise ValueError(f"MetaWorldML1: unknown env_name {env_name!r}; Meta-World v3 has "
                             f"{', '.join(sorted(_env_classes()))}")
        self.env_name = env_name
        super().__init__(task, benchmark_seed, reward_function_version, _inner)

    def _kwargs(self) -> dict[str, Any]:
        return {"env_name": self.env_name, **super()._kwargs()}

    def _benchmark(self) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        return benchmark_tasks("ML1", self.env_name, self.benchmark_seed)

    def env_names(self) -> tuple[str, ...]:
        return (self.env_name,)

    @classmethod
    def _extra_provenance(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"env_name": kwargs.get("env_name", "reach-v3")}


class MetaWorldML10Env(MetaWorldEnv):
    """ML10: 10 train environments x 50 goals, 5 held-out test environments x 50 goals."""

    benchmark = "ML10"

    def _benchmark(self) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
        return benchmark_tasks("ML10", None, self.benchmark_seed)

    def env_names(self) -> tuple[str, ...]:
        train, test = ml10_env_names()
        return train + test

