"""``check_family``: the checks every task family must pass.

Run it on a new family before training with it::

    import envs
    envs.check_family("HalfCheetahVel")

It raises ``AssertionError`` (or the ``ValueError``/``TaskError`` the family
raised) with a message naming the family and the failing check: the
declared and actual observation shape and dtype, the step and task of a
NaN reward, and so on.  ``passed`` (e.g. ``print``) hears the name of each
check as it passes (``metarl check-family NAME -v``).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle
import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env

from envs.base import TaskFamily, make_family

_INF_BOUNDS = r".*Box observation space (minimum|maximum) value is.*infinity"

Trajectory = tuple[np.ndarray, np.ndarray, np.ndarray]


def tasks_equal(a: Any, b: Any) -> bool:
    """Structural equality for tasks: mappings by key, numbers/arrays by value."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or set(a) != set(b):
            return False
        return all(tasks_equal(a[k], b[k]) for k in a)
    try:
        return bool(np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))
    except (TypeError, ValueError):
        return a == b


def _fail(name: str, msg: str) -> AssertionError:
    return AssertionError(f"{name}: {msg}")


def _actions(env: gymnasium.Env, steps: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform actions ``(steps, n, act_dim)`` reaching 20% beyond the bounds (to exercise clipping)."""
    low = np.asarray(env.action_space.low, dtype=np.float64)
    high = np.asarray(env.action_space.high, dtype=np.float64)
    mid, half = (low + high) / 2, (high - low) / 2 * 1.2
    return rng.uniform(mid - half, mid + half, size=(steps, n, low.size)).astype(np.float32)


def _describe(obs: Any) -> str:
    arr = np.asarray(obs)
    return f"shape {arr.shape} and dtype {arr.dtype}"


def check_observation(env: gymnasium.Env, obs: Any, where: str, name: str = "") -> None:
    """``obs`` is a float32 array of the shape ``env.observation_space`` declares; else name both."""
    space = env.observation_space
    arr = np.asarray(obs)
    if arr.shape != space.shape or arr.dtype != np.float32 or space.dtype != np.float32:
        raise _fail(name, f"{where} returned an observation of {_describe(obs)}; the observation space "
                          f"declares shape {space.shape} and dtype {space.dtype} (both must match, and "
                          f"observations are float32: .astype(np.float32))")


def _task_of(env: gymnasium.Env) -> Any:
    try:
        return env.unwrapped.get_task()
    except Exception:  # noqa: BLE001 - only used to name the task in a message
        return "?"


def rollout_single(env: gymnasium.Env, seed: int, actions: np.ndarray, name: str = "") -> Trajectory:
    """Reset ``env`` with ``seed`` and apply ``actions (T, act_dim)``.

    Checks on the way that observations are float32 of the declared shape and
    that each reward equals the sum of the ``reward_*`` entries of ``info``.
    Returns ``obs (T+1, obs_dim), rewards (T,), terminated (T,)``.
    """
    obs0, _ = env.reset(seed=seed)
    check_observation(env, obs0, "reset()", name)
    obs, rewards, terms = [obs0], [], []
    for t, a in enumerate(actions):
        o, r, term, trunc, info = env.step(a)
        check_observation(env, o, f"step {t}", name)
        if not np.isfinite(r):
            what = "NaN" if np.isnan(r) else repr(r)
            raise _fail(name, f"reward is {what} at step {t} for task {_task_of(env)!r}")
        if not np.all(np.isfinite(o)):
            raise _fail(name, f"observation has non-finite entries at step {t} for task {_task_of(env)!r}: {o!r}")
        parts = [v for k, v in info.items() if k.startswith("reward_")]
        if not parts:
            raise _fail(name, f"step info has no reward_* terms: {sorted(info)}")
        total = 0.0
        for v in parts:
            total = total + v
        if total != r:
            raise _fail(name, f"step {t}: reward {r!r} != sum of info reward terms {total!r} ({info})")
        obs.append(o)
        rewards.append(r)
        terms.append(term)
    return np.asarray(obs), np.asarray(rewards, dtype=np.float64), np.asarray(terms, dtype=bool)


def rollout_batched(
    family: TaskFamily, tasks: Sequence[Any], seeds: Sequence[int], actions: np.ndarray
) -> Trajectory:
    """The batched path on ``actions (T, n, act_dim)``.

    Returns ``obs (T+1, n, d), rewards (T, n), terminated (T, n)``.
    """
    venv = family.make_vector(tasks)
    obs = [venv.reset(seeds)]
    rewards, terms = [], []
    for a in actions:
        o, r, d = venv.step(a)
        obs.append(o)
        rewards.append(r)
        terms.append(d)
    return np.asarray(obs), np.asarray(rewards), np.asarray(terms)


def _same(name: str, what: str, a: Trajectory, b: Trajectory) -> None:
    for label, x, y in zip(("observations", "rewards", "terminated"), a, b, strict=True):
        if x.shape != y.shape:
            raise _fail(name, f"{what}: {label} shapes differ {x.shape} vs {y.shape}")
        if not np.array_equal(x, y):
            bad = np.argwhere(x != y)[0]
            idx = tuple(bad)
            raise _fail(name, f"{what}: {label} differ first at index {idx}: {x[idx]!r} vs {y[idx]!r}")


def check_family(name_or_family: str | TaskFamily, n_tasks: int = 3, steps: int = 50, seed: int = 0,
                 passed: Callable[[str], None] | None = None) -> None:
    """Check a task family end to end; raise on the first failure.

    * task sampling is seeded (same generator seed -> same tasks), tasks
      pickle, and ``make_env(task).get_task()`` returns the task;
    * observations from ``reset`` and ``step`` are float32 arrays of the
      declared shape (the message gives both shapes and dtypes);
    * rewards and observations are finite (a NaN reward is named with its
      step and task), and each reward equals the sum of the ``reward_*``
      terms in ``info``;
    * gymnasium's ``check_env`` passes on ``make_env(task)``, and
      ``gymnasium.make("metarl/<name>-v0", task=task)`` builds the same task;
    * two envs reset with the same seed follow identical trajectories;
    * the batched path (``make_vector``) reproduces the single envs
      bit-for-bit (reset seeds ``seed + i``);
    * NaN and wrongly shaped actions raise ``ValueError``;
    * envs and the family survive ``pickle`` and ``cloudpickle`` round trips.

    ``passed(description)`` is called after each check that passed.
    """
    family = make_family(name_or_family) if isinstance(name_or_family, str) else name_or_family
    name = family.name
    if n_tasks < 1 or steps < 1:
        raise ValueError(f"check_family needs n_tasks >= 1 and steps >= 1, got {n_tasks}, {steps}")
    ok = passed if passed is not None else (lambda _: None)

    tasks = family.sample_tasks(n_tasks, np.random.default_rng(seed))
    again = family.sample_tasks(n_tasks, np.random.default_rng(seed))
    if len(tasks) != n_tasks:
        raise _fail(name, f"sample_tasks({n_tasks}) returned {len(tasks)} tasks")
    if not all(tasks_equal(a, b) for a, b in zip(tasks, again, strict=True)):
        raise _fail(name, "sample_tasks is not deterministic for the same generator seed")
    for t in tasks:
        pickle.loads(pickle.dumps(t))
    ok(f"sample_tasks({n_tasks}) is deterministic for one generator seed and its tasks pickle")

    envs = [family.make_env(t) for t in tasks]
    for t, env in zip(tasks, envs, strict=True):
        if not tasks_equal(env.get_task(), t):
            raise _fail(name, f"get_task() returned {env.get_task()!r} after set_task({t!r})")
    ok("make_env(task).get_task() returns the task")

    actions = _actions(envs[0], steps, n_tasks, np.random.default_rng(seed + 1))
    seeds = [seed + i for i in range(n_tasks)]
    singles = [rollout_single(env, seeds[i], actions[:, i], name) for i, env in enumerate(envs)]
    space = envs[0].observation_space
    ok(f"observations are float32 of the declared shape {space.shape}")
    ok(f"rewards are finite and equal the sum of the info reward_* terms ({n_tasks} tasks x {steps} steps)")

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_INF_BOUNDS)
        check_env(family.make_env(tasks[0]), skip_render_check=True)
        ok("gymnasium's check_env passes")
        env_id = f"metarl/{name}-v0"
        if env_id in gymnasium.registry:
            made = gymnasium.make(env_id, task=tasks[0], **family.kwargs)
            if not tasks_equal(made.unwrapped.get_task(), tasks[0]):
                raise _fail(name, f"gymnasium.make({env_id!r}, task=...) did not set the task")
            made.close()
            ok(f"gymnasium.make({env_id!r}, task=...) builds the task")

    twin = family.make_env(tasks[0])
    _same(name, "same-seed determinism", singles[0], rollout_single(twin, seeds[0], actions[:, 0], name))
    ok("two envs reset with one seed follow identical trajectories")

    batched = rollout_batched(family, tasks, seeds, actions)
    stacked = tuple(np.stack([s[k] for s in singles], axis=1) for k in range(3))
    _same(name, "single env vs batched path", stacked, batched)
    ok("the batched path (make_vector) reproduces the single envs bit for bit")

    env = envs[0]
    env.reset(seed=seed)
    act_dim = int(np.prod(env.action_space.shape))
    bad_actions = ((np.full(act_dim, np.nan), "a NaN action"),
                   (np.zeros(act_dim + 1), "a wrongly shaped action"))
    for bad, why in bad_actions:
        try:
            env.step(bad)
        except ValueError:
            pass
        else:
            raise _fail(name, f"step accepted {why}; it must raise ValueError")
    ok("NaN and wrongly shaped actions raise ValueError")

    for dumps, loads, label in ((pickle.dumps, pickle.loads, "pickle"),
                                (cloudpickle.dumps, cloudpickle.loads, "cloudpickle")):
        copy = loads(dumps(envs[-1]))
        if not tasks_equal(copy.get_task(), tasks[-1]):
            raise _fail(name, f"{label} round trip changed the task to {copy.get_task()!r}")
        _same(name, f"{label} round trip", singles[-1], rollout_single(copy, seeds[-1], actions[:, -1], name))
        fam = loads(dumps(family))
        if fam.name != name or fam.horizon != family.horizon:
            raise _fail(name, f"{label} round trip of the family changed it")
    ok("envs and the family survive pickle and cloudpickle round trips")
    for env in envs:
        env.close()
