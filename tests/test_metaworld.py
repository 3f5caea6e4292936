"""Meta-World ML1/ML10 families on the real ``metaworld`` package, success flags and the Meta-World protocol."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path
from typing import Any

import cloudpickle
import gymnasium
import metaworld
import numpy as np
import pytest
import torch

import envs
import envs.metaworld as mw
from envs.base import TaskEnv, TaskError, check_action, register_family
from metarl.cli import main
from metarl.config import ConfigError, load_config
from metarl.protocols import metaworld_protocol, write_protocol_outputs
from metarl.run import build_learner
from metarl.sampling import PolicySpec, SerialSampler
from metarl.sampling.worker import RolloutWorker, Shard, sub_shards

ROOT = Path(__file__).resolve().parents[1]
REACH_CONFIG = str(ROOT / "experiments" / "configs" / "metaworld_ml1_reach.yaml")


@pytest.fixture(scope="module")
def reach() -> envs.TaskFamily:
    return envs.make_family("MetaWorldML1", env_name="reach-v3")


def rollout(env: gymnasium.Env, actions: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = [env.reset(seed=seed)[0]]
    rewards, success = [], []
    for a in actions:
        o, r, _term, _trunc, info = env.step(a)
        obs.append(o)
        rewards.append(r)
        success.append(info["success"])
    return np.asarray(obs), np.asarray(rewards), np.asarray(success)


# -- tasks ---------------------------------------------------------------------------------------

def test_task_value_round_trips_through_a_metaworld_task(reach):
    bench = metaworld.ML1("reach-v3", seed=0)
    train, test = mw.benchmark_tasks("ML1", "reach-v3", 0)
    assert len(train) == len(test) == 50
    assert not {t["rand_vec"] for t in train} & {t["rand_vec"] for t in test}  # disjoint goals
    for mw_task, value in zip(bench.train_tasks, train, strict=True):
        assert value == mw.from_metaworld_task(mw_task)
        assert np.array_equal(np.asarray(value["rand_vec"]), pickle.loads(mw_task.data)["rand_vec"])
        again = mw.from_metaworld_task(mw.to_metaworld_task(value))
        assert again == value
    # the env's goal is the task's: reach-v3's goal is the last 3 floats of rand_vec
    env = reach.make_env(dict(test[3]))
    env.reset(seed=0)
    assert np.array_equal(env._inner._target_pos, np.asarray(test[3]["rand_vec"][3:]))
    assert env.get_task() == test[3]
    assert reach.test_tasks() == [dict(t) for t in test]


@pytest.fixture()
def fresh_task_caches():
    """The process's task-list caches emptied before and after (other tests see the real lists)."""
    mw.benchmark_tasks.cache_clear()
    mw._shipped_tasks.cache_clear()
    yield
    mw.benchmark_tasks.cache_clear()
    mw._shipped_tasks.cache_clear()


def test_shipped_task_lists_are_read_without_building_a_benchmark(fresh_task_caches, monkeypatch):
    def refuse(*args: Any) -> None:
        raise AssertionError(f"built {args}")

    monkeypatch.setattr(mw, "build_benchmark_tasks", refuse)
    train, test = mw.benchmark_tasks("ML10", None, 0)
    names_train, names_test = mw.ml10_env_names()
    assert len(train) == 500 and len(test) == 250
    assert [t["env_name"] for t in train] == [n for n in names_train for _ in range(50)]
    assert {t["env_name"] for t in test} == set(names_test)
    assert all(isinstance(t["rand_vec"], tuple) and all(type(x) is float for x in t["rand_vec"]) for t in train)
    reach_train, reach_test = mw.benchmark_tasks("ML1", "reach-v3", 0)
    assert len(reach_train) == len(reach_test) == 50
    with pytest.raises(AssertionError, match="built"):  # not shipped: built
        mw.benchmark_tasks("ML1", "reach-v3", 1)


def test_shipped_task_lists_of_another_metaworld_version_are_not_used(fresh_task_caches, monkeypatch):
    built = []
    monkeypatch.setattr(mw, "metaworld_version", lambda: "0.0.1")
    monkeypatch.setattr(mw, "build_benchmark_tasks", lambda *a: built.append(a) or ((), ()))
    assert mw.benchmark_tasks("ML10", None, 0) == ((), ())
    assert built == [("ML10", None, 0)]


@pytest.mark.slow
def test_shipped_task_lists_equal_what_the_installed_metaworld_builds(tmp_path):
    out = mw.write_shipped_tasks(tmp_path / "tasks.json")
    assert out.read_text() == mw.SHIPPED_TASKS.read_text(), \
        'stale: python -c "import envs.metaworld as m; m.write_shipped_tasks()"'


def test_sample_tasks_draws_distinct_train_tasks(reach):
    tasks = reach.sample_tasks(20, np.random.default_rng(0))
    train = mw.benchmark_tasks("ML1", "reach-v3", 0)[0]
    assert len({t["rand_vec"] for t in tasks}) == 20
    assert all(t in train for t in tasks)
    assert tasks == reach.sample_tasks(20, np.random.default_rng(0))
    assert len(reach.sample_tasks(60, np.random.default_rng(0))) == 60  # with replacement beyond 50


@pytest.mark.parametrize("task,message", [
    ({"rand_vec": (0.0,) * 6}, "missing field"),
    ({"env_name": "reach-v3", "rand_vec": (0.0,) * 6, "goal": 1}, "unknown field"),
    ({"env_name": "push-v3", "rand_vec": (0.0,) * 6}, "env_name 'push-v3' is not one of"),
    ({"env_name": "reach-v3", "rand_vec": (0.0,) * 5}, "needs a rand_vec of 6 floats"),
    ({"env_name": "reach-v3", "rand_vec": (9.0,) * 6}, "outside"),
    ({"env_name": "reach-v3", "rand_vec": (float("nan"),) * 6}, "finite"),
    ("reach-v3", "must be a mapping"),
])
def test_bad_tasks_raise_task_error(reach, task, message):
    with pytest.raises(TaskError, match=message):
        reach.make_env(task)


def test_bad_family_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown env_name 'reach-v2'"):
        envs.make_family("MetaWorldML1", env_name="reach-v2")
    with pytest.raises(ValueError, match="reward_function_version"):
        envs.make_family("MetaWorldML1", reward_function_version="v3")
    with pytest.raises(ValueError, match="exceeds the longest episode"):
        envs.make_family("MetaWorldML1", horizon=501)
    with pytest.raises(ConfigError, match="env.horizon: must be <= 500"):
        load_config(REACH_CONFIG, ["env.horizon=600"])


# -- envs ----------------------------------------------------------------------------------------

def test_two_envs_from_one_task_value_step_identically(reach):
    task = reach.test_tasks()[7]
    a = reach.make_env(task)
    b = reach.make_env(pickle.loads(pickle.dumps(task)))
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (40, 4)).astype(np.float32)
    ra, rb = rollout(a, actions, seed=3), rollout(b, actions, seed=11)  # Meta-World ignores the reset seed
    for x, y in zip(ra, rb, strict=True):
        assert np.array_equal(x, y)
    assert ra[0].dtype == np.float32 and ra[0].shape == (41, 39)
    # a pooled env re-tasked after another task follows the same trajectory as a fresh one
    other = reach.test_tasks()[8]
    venv = reach.make_vector([other])
    venv.reset([0])
    venv.step(np.ones((1, 4)))
    used = venv.envs[0]._inner
    venv.close()
    pooled = reach.make_vector([task])
    assert pooled.envs[0]._inner is used  # taken back from the pool
    obs = [pooled.reset([0])[0]]
    for act in actions:
        o, r, _ = pooled.step(act[None])
        obs.append(o[0])
    assert np.array_equal(np.asarray(obs), ra[0])


def test_horizon_is_respected_without_exceptions(reach):
    env = reach.make_env(reach.test_tasks()[0])
    env.reset(seed=0)
    for t in range(mw.MAX_PATH_LENGTH):
        _o, _r, term, trunc, _info = env.step(np.zeros(4, dtype=np.float32))
        assert not term and trunc == (t == mw.MAX_PATH_LENGTH - 1)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(4, dtype=np.float32))
    env.reset(seed=0)
    env.step(np.zeros(4, dtype=np.float32))  # usable again after reset

    # a worker runs the family's full horizon (500) twice on the same pooled envs
    policy = build_learner(load_config(REACH_CONFIG, ["policy.hidden_sizes=[4]"]), reach).policy
    worker = RolloutWorker(reach, PolicySpec.of(policy))
    params = {k: v.detach()[None].numpy() for k, v in policy.params().items()}
    for seed in (0, 1):
        out = worker.rollout(reach.test_tasks()[:1], params, Shard((0,), 0, 1), seed)
        assert out["mask"].shape == (1, 500, 1) and out["mask"].all()
        assert out["success"].shape == (1, 500, 1)


def test_check_family_ml1(reach):
    envs.check_family(reach, n_tasks=2, steps=10)


PUSH_TASK = {"env_name": "push-v3", "rand_vec": (-0.0124825577474615, 0.689177300078208, 0.02, -0.023311696234844456,
                                                 0.8791725038082665, 0.015288949197529045)}
"""The first train goal of metaworld.ML1("push-v3", seed=0)."""


@pytest.fixture()
def small_ml10(monkeypatch):
    """ML10 with one train goal of reach-v3 and push-v3 each (the real benchmark takes ~15 s to build)."""
    train_names, _ = mw.ml10_env_names()
    reach_train, reach_test = mw.benchmark_tasks("ML1", "reach-v3", 0)
    assert "reach-v3" in train_names and "push-v3" in train_names
    fake = ((reach_train[0], PUSH_TASK), (reach_test[0], PUSH_TASK))
    real = mw.benchmark_tasks
    monkeypatch.setattr(mw, "benchmark_tasks", lambda b, n, s: fake if b == "ML10" else real(b, n, s))
    return envs.make_family("MetaWorldML10")


def test_check_family_ml10_mixes_environments(small_ml10):
    envs.check_family(small_ml10, n_tasks=2, steps=10)
    names = {t["env_name"] for t in small_ml10.sample_tasks(2, np.random.default_rng(0))}
    assert names == {"reach-v3", "push-v3"}
    env = small_ml10.make_env(small_ml10.test_tasks()[0])
    with pytest.raises(TaskError, match="not one of"):
        env.set_task({"env_name": "hammer-v3", "rand_vec": (0.0,) * 6})


@pytest.mark.slow
def test_real_ml10_benchmark():
    family = envs.make_family("MetaWorldML10")
    train_names, test_names = mw.ml10_env_names()
    train, test = mw.benchmark_tasks("ML10", None, 0)
    assert len(train) == 500 and len(test) == 250
    assert {t["env_name"] for t in train} == set(train_names)
    assert {t["env_name"] for t in test} == set(test_names)
    envs.check_family(family, n_tasks=3, steps=10)


def test_workers_build_envs_from_task_values_only(reach, monkeypatch):
    """A worker gets the family by pickle and the tasks as values; it never builds a benchmark."""
    tasks = reach.sample_tasks(3, np.random.default_rng(1))
    family = cloudpickle.loads(cloudpickle.dumps(envs.make_family("MetaWorldML1", horizon=20)))

    def refuse(*_: Any) -> None:
        raise AssertionError("a worker built a benchmark")

    monkeypatch.setattr(mw, "benchmark_tasks", refuse)
    policy = build_learner(load_config(REACH_CONFIG, ["policy.hidden_sizes=[4]"]), reach).policy
    worker = RolloutWorker(family, PolicySpec.of(policy))
    params = {k: v.detach().expand(3, *v.shape).numpy() for k, v in policy.params().items()}
    out = worker.rollout(tasks, params, Shard((0, 1, 2), 0, 4), 0)  # 12 envs: two blocks of at most 10
    assert out["obs"].shape == (3, 20, 4, 39)


# -- blocks of envs and success flags ---------------------------------------------------------------

def test_sub_shards_cover_the_shard_once():
    for shard, limit in ((Shard((0, 1, 2, 3), 0, 5), 10), (Shard((2, 5), 3, 30), 10), (Shard((1,), 0, 4), None),
                         (Shard((0, 1, 2), 0, 7), 7)):
        blocks = sub_shards(shard, limit)
        cells = [(t, e) for b in blocks for t in b.task_ids for e in range(b.ep_start, b.ep_stop)]
        assert sorted(cells) == [(t, e) for t in shard.task_ids for e in range(shard.ep_start, shard.ep_stop)]
        assert limit is None or all(len(b.task_ids) * (b.ep_stop - b.ep_start) <= limit for b in blocks)


class Nav3Env(envs.Navigation2DEnv):
    """Navigation2D stepped in blocks of at most 3 envs."""

    max_batch_envs = 3


def test_blocks_of_envs_give_the_same_batch_as_one_block():
    register_family("Nav3", Nav3Env, horizon=15)
    blocked, whole = envs.make_family("Nav3"), envs.make_family("Navigation2D", horizon=15)
    tasks = whole.sample_tasks(4, np.random.default_rng(0))
    policy = build_learner(load_config(None, ["policy.hidden_sizes=[6]"]), whole).policy
    spec = PolicySpec.of(policy)
    a = SerialSampler(blocked, spec).sample(tasks, policy.params(), 5, 7)
    b = SerialSampler(whole, spec).sample(tasks, policy.params(), 5, 7)
    for k in ("obs", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert a.success is None and a.episode_success() is None


class StubSuccessEnv(TaskEnv):
    """Always (or never) successful: ``info["success"]`` is the constructor's ``succeed``."""

    metadata = {"render_modes": []}
    evaluation_protocol = "metaworld"

    def __init__(self, task: Any = None, succeed: bool = True):
        self.succeed = bool(succeed)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.set_task(task if task is not None else {"k": 0.0})

    def sample_tasks(self, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        return [{"k": float(x)} for x in rng.uniform(size=n)]

    def test_tasks(self) -> list[dict[str, Any]]:
        return [{"k": float(i)} for i in range(7)]

    def set_task(self, task: Any) -> None:
        envs.base.check_task_fields(task, ("k",), "StubSuccess")
        self.k = float(task["k"])

    def get_task(self) -> dict[str, Any]:
        return {"k": self.k}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = np.zeros(2, dtype=np.float32)
        return self.x.copy(), {}

    def step(self, action):
        a = check_action(action, 1)
        self.x = self.x + np.float32(a[0])
        r = -abs(float(self.x[0]) - self.k)
        return self.x.copy(), r, False, False, {"success": float(self.succeed), "reward_dist": r}


@pytest.mark.parametrize("succeed,rate", [(True, 1.0), (False, 0.0)])
def test_protocol_gives_one_for_always_and_zero_for_never_successful(tmp_path, succeed, rate):
    register_family("StubSuccess", StubSuccessEnv, horizon=6)
    family = envs.make_family("StubSuccess", succeed=succeed)
    cfg = load_config(None, ["env.family=StubSuccess", "policy.hidden_sizes=[4]"])
    learner = build_learner(cfg, family)
    with SerialSampler(family, PolicySpec.of(learner.policy)) as sampler:
        result = metaworld_protocol(learner, family, sampler, seed=0)
    assert result["success_rate"] == rate and result["success_rate_pre"] == rate
    assert result["success_stderr"] == 0.0
    assert result["num_tasks"] == 7 and len(result["per_task"]) == 7
    assert (result["adaptation_episodes"], result["adaptation_steps"], result["evaluation_episodes"]) == (10, 1, 3)
    assert np.isfinite(result["return_pre"]) and np.isfinite(result["return_post"])
    files = write_protocol_outputs(result, tmp_path / "eval" / "metaworld.json")
    assert json.loads(Path(files["json"]).read_text())["success_rate"] == rate
    rows = list(csv.DictReader(Path(files["csv"]).open()))
    assert len(rows) == 7 and {float(r["success_post"]) for r in rows} == {rate}


def test_success_is_any_step_of_a_live_episode():
    from metarl.episodes import EpisodeBatch

    n, t, b = 1, 4, 3
    success = torch.zeros(n, t, b)
    success[0, 2, 0] = 1.0  # episode 0 succeeds at step 2
    success[0, 3, 1] = 1.0  # episode 1 only after it ended
    mask = torch.ones(n, t, b)
    mask[0, 2:, 1] = 0.0
    batch = EpisodeBatch(torch.zeros(n, t, b, 1), torch.zeros(n, t, b, 1), torch.zeros(n, t, b), mask, success)
    assert batch.episode_success().tolist() == [[1.0, 0.0, 0.0]]
    assert batch.tasks(0, 1).success is not None and batch.tasks(0, 1).success.shape[0] == 1


# -- through the command line -------------------------------------------------------------------------

TINY = ["--set", "iterations=2", "--set", "env.horizon=20", "--set", "algo.meta_batch_size=2",
        "--set", "algo.episodes_per_task=2", "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial"]


@pytest.mark.integration
def test_ml1_reach_trains_two_iterations_and_evaluates_with_the_protocol(tmp_path, capsys, monkeypatch):
    from metarl.cli import main  # the command line, in this process (the benchmark's tasks are cached here)

    run = tmp_path / "run"
    assert main(["train", REACH_CONFIG, *TINY, "--run-dir", str(run), "--no-progress"]) == 0
    rows = list(csv.DictReader((run / "scalars.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= float(row["returns/success_pre"]) <= 1.0
        assert 0.0 <= float(row["returns/success_post"]) <= 1.0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["versions"]["metaworld"] == metaworld_version_installed()
    assert manifest["family"] == {"name": "MetaWorldML1", "metaworld": metaworld_version_installed(),
                                  "benchmark": "ML1", "reward_function_version": "v1", "benchmark_seed": 0,
                                  "env_name": "reach-v3"}
    capsys.readouterr()
    assert main(["evaluate", str(run), "--tasks", "51"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "metarl: error: --tasks 51: MetaWorldML1 has 50 test tasks"
    # the family's protocol (Meta-World's) by default; every test task unless --tasks picks N evenly spaced ones
    assert main(["evaluate", str(run), "--tasks", "10"]) == 0
    assert "success rate" in capsys.readouterr().out
    result = json.loads((run / "eval" / "metaworld.json").read_text())
    assert result["num_tasks"] == 10 and result["iteration"] == 2
    test_tasks = envs.make_family("MetaWorldML1", env_name="reach-v3").test_tasks()
    assert [tuple(t["rand_vec"]) for t in result["tasks"]] == [tuple(t["rand_vec"]) for t in test_tasks[::5]]
    assert 0.0 <= result["success_rate"] <= 1.0 and result["success_stderr"] >= 0.0
    assert len(list(csv.DictReader((run / "eval" / "metaworld.csv").open()))) == 10
    # without --tasks the protocol gets every test task (recorded here instead of rolled out)
    import metarl.protocols

    seen = []

    def record(learner, family, sampler, *, tasks, **kw):
        seen.append(list(tasks))
        return metaworld_protocol(learner, family, sampler, tasks=tasks[:2], **kw)

    monkeypatch.setitem(metarl.protocols.PROTOCOLS, "metaworld", record)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "all.json")]) == 0
    assert seen == [test_tasks]


def metaworld_version_installed() -> str:
    from importlib import metadata

    return metadata.version("metaworld")


def test_protocol_needs_a_family_with_test_tasks(tmp_path, capsys):
    run = tmp_path / "nav"
    nav = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
    sets = ["--set", "iterations=1", "--set", "env.horizon=5", "--set", "algo.meta_batch_size=2",
            "--set", "algo.episodes_per_task=2", "--set", "policy.hidden_sizes=[4]", "--set", "sampler.backend=serial"]
    assert main(["train", nav, *sets, "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "metaworld"]) == 2
    assert "has no test tasks of its own" in capsys.readouterr().err
    assert not (run / "eval" / "metaworld.json").exists()
