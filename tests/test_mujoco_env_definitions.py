"""HalfCheetah and Ant families against their module docstrings: reset noise (qpos + U[-s, s],
qvel + s N(0, 1), from the env's generator), the documented coefficients and that every constructor
argument reaches the reward, the healthy check (finite state per env, torso z in a closed range),
and the task vectors and task distributions of AntDir2D and AntGoal."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
from gymnasium.utils import seeding

import envs
from envs.ant import AntDir2DEnv, AntDirEnv, AntGoalEnv, AntVelEnv
from envs.base import TaskError
from envs.half_cheetah import HalfCheetahDirEnv, HalfCheetahVelEnv

CHEETAHS = [HalfCheetahVelEnv, HalfCheetahDirEnv]
ANTS = [AntVelEnv, AntDirEnv, AntDir2DEnv, AntGoalEnv]


@pytest.mark.parametrize("cls", [HalfCheetahVelEnv, AntGoalEnv])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_reset_is_init_plus_uniform_qpos_and_scaled_gaussian_qvel_noise(cls, scale):
    env = cls(**({} if scale is None else {"reset_noise_scale": scale}))
    s = 0.1 if scale is None else scale
    assert env.reset_noise_scale == s and type(env.reset_noise_scale) is float
    for seed in (0, 17):
        env.reset(seed=seed)
        rng, _ = seeding.np_random(seed)  # the generator gymnasium seeds from reset(seed=...)
        want_qpos = env.init_qpos + rng.uniform(low=-s, high=s, size=env.model.nq)
        want_qvel = env.init_qvel + s * rng.standard_normal(env.model.nv)
        np.testing.assert_array_equal(env.data.qpos, want_qpos)
        np.testing.assert_array_equal(env.data.qvel, want_qvel)
    # and the distribution itself: bounded uniform offsets, unit-variance Gaussian velocities over the scale
    rng = np.random.default_rng(0)
    draws = [env.reset_noise(rng) for _ in range(400)]
    dq = np.array([q - env.init_qpos for q, _ in draws])
    dv = np.array([v - env.init_qvel for _, v in draws]) / s
    assert dq.shape == (400, env.model.nq) and dv.shape == (400, env.model.nv)
    assert np.all(np.abs(dq) <= s) and dq.min() < -0.95 * s and dq.max() > 0.95 * s
    assert abs(dq.mean()) < 0.05 * s and abs(dq.std() - s / math.sqrt(3)) < 0.05 * s
    assert abs(dv.mean()) < 0.05 and abs(dv.std() - 1.0) < 0.05


@pytest.mark.parametrize("cls", CHEETAHS)
def test_halfcheetah_documented_defaults(cls):
    env = cls()
    assert (env.ctrl_cost_weight, env.reset_noise_scale, env.frame_skip) == (0.05, 0.1, 5)
    assert env.dt == pytest.approx(0.05) and env.fullpath.endswith("half_cheetah.xml")
    assert (env.model.nq, env.model.nu) == (9, 6) and env.observation_space.shape == (20,)


@pytest.mark.parametrize("cls", ANTS)
def test_ant_documented_defaults(cls):
    env = cls()
    assert (env.ctrl_cost_weight, env.contact_cost_weight, env.healthy_reward) == (0.005, 5e-4, 0.05)
    assert env.healthy_z_range == (0.2, 1.0) and env.contact_force_range == (-1.0, 1.0)
    assert env.terminate_when_unhealthy is True and env.reset_noise_scale == 0.1 and env.frame_skip == 5
    assert env.dt == pytest.approx(0.05) and env.fullpath.endswith("ant.xml")
    assert (env.model.nq, env.model.nu) == (15, 8) and env.observation_space.shape == (119,)
    for v in (env.ctrl_cost_weight, env.contact_cost_weight, env.healthy_reward, *env.healthy_z_range,
              *env.contact_force_range, env.reset_noise_scale):
        assert type(v) is float


def test_halfcheetah_arguments_reach_the_reward_and_the_timestep():
    env = HalfCheetahVelEnv({"velocity": 0.5}, velocity_low=0.0, velocity_high=4.0, ctrl_cost_weight=0.3,
                            frame_skip=2)
    assert env.dt == pytest.approx(2 * env.model.opt.timestep) and env.velocity_high == 4.0
    env.reset(seed=0)
    a = np.random.default_rng(0).uniform(-1, 1, size=6)
    x0 = env.data.qpos[0]
    _, _, _, _, info = env.step(a)
    assert info["reward_ctrl"] == pytest.approx(-0.3 * float(a @ a), rel=1e-12)
    v_x = (env.data.qpos[0] - x0) / env.dt
    assert info["reward_forward"] == pytest.approx(-abs(v_x - 0.5), rel=1e-12)


def _ant_terms(env, task_vec_reward, qpos_before, applied, coef):
    """The Ant reward terms from MuJoCo state with the coefficients ``coef``, written out."""
    m, d = env.model, env.data
    mujoco.mj_rnePostConstraint(m, d)
    lo, hi = coef["contact_force_range"]
    cfrc = np.clip(d.cfrc_ext[1:], lo, hi)
    z_lo, z_hi = coef["healthy_z_range"]
    healthy = z_lo <= d.qpos[2] <= z_hi
    return {**task_vec_reward(d.qpos, qpos_before),
            "reward_ctrl": -coef["ctrl_cost_weight"] * float(applied @ applied),
            "reward_contact": -coef["contact_cost_weight"] * float(np.sum(cfrc**2)),
            "reward_survive": coef["healthy_reward"] if healthy else 0.0}, cfrc


@pytest.mark.parametrize("terminate", [True, False])
def test_ant_arguments_reach_the_reward_the_observation_and_the_termination(terminate):
    coef = {"ctrl_cost_weight": 0.02, "contact_cost_weight": 0.01, "healthy_reward": 1.5,
            "healthy_z_range": (0.3, 0.7), "contact_force_range": (-0.25, 0.5)}
    goal = (1.0, -2.0)
    env = AntGoalEnv({"goal": goal}, goal_bonus=2.5, terminate_when_unhealthy=terminate, **coef)
    assert env.goal_bonus == 2.5 and env.terminate_when_unhealthy is terminate

    def goal_reward(qpos, _):
        return {"reward_goal": 2.5 - (abs(qpos[0] - goal[0]) + abs(qpos[1] - goal[1]))}

    env.reset(seed=3)
    rng = np.random.default_rng(1)
    seen_healthy = seen_unhealthy = False
    for _ in range(60):
        a = rng.uniform(-1, 1, size=8)
        before = env.data.qpos.copy()
        obs, r, term, _, info = env.step(a)
        want, cfrc = _ant_terms(env, goal_reward, before, a, coef)
        got = {k: v for k, v in info.items() if k.startswith("reward_")}
        assert list(got) == list(want)
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k
        np.testing.assert_array_equal(obs[29:107], cfrc.ravel().astype(np.float32))
        healthy = want["reward_survive"] > 0
        seen_healthy |= healthy
        seen_unhealthy |= not healthy
        assert term == (terminate and not healthy)
        if term:
            break
    # the ant starts above z = 0.7 and falls below it: unhealthy first, healthy later
    assert seen_unhealthy and seen_healthy != terminate


def _synthetic_fields(n):
    rng = np.random.default_rng(0)
    qpos = rng.uniform(-0.1, 0.1, size=(n, 15))
    qpos[:, 2] = 0.5
    return {"qpos": qpos, "qvel": rng.normal(size=(n, 14)), "cfrc_ext": rng.uniform(-2, 2, size=(n, 13, 6)),
            "xmat": np.tile(np.eye(3).ravel(), (n, 1)), "com": qpos[:, :3].copy()}


def test_ant_health_is_per_env_finite_state_and_a_closed_z_range():
    env = AntDirEnv()
    f = _synthetic_fields(6)
    f["qpos"][0, 7] = np.nan  # a non-finite joint angle
    f["qvel"][1, 3] = np.inf  # a non-finite velocity
    f["qpos"][2, 2] = 0.2  # exactly on the lower bound
    f["qpos"][3, 2] = 1.0  # exactly on the upper bound
    f["qpos"][4, 2] = 1.0 + 1e-12  # just above
    task = np.ones((6, 1))
    applied = np.zeros((6, 8))
    terms, healthy = env.rewards(f, f["qpos"].copy(), applied, task)
    assert healthy.tolist() == [False, False, True, True, False, True]
    np.testing.assert_array_equal(terms["reward_survive"], 0.05 * healthy)
    contact = np.clip(f["cfrc_ext"].reshape(6, -1), -1, 1)
    np.testing.assert_allclose(terms["reward_contact"], -5e-4 * np.sum(contact**2, axis=1), rtol=1e-12)
    obs = env.observe(f)
    assert obs.shape == (6, 119)
    np.testing.assert_array_equal(obs[:, 29:107], contact)


def test_ant_dir2d_task_vector_and_distribution():
    env = AntDir2DEnv()
    for angle in (0.0, 1.0, 4.0, math.nextafter(2 * math.pi, 0)):
        vec = env.task_vector({"angle": angle})
        np.testing.assert_array_equal(vec, [angle, math.cos(angle), math.sin(angle)])
        env.set_task({"angle": angle})
        task = env.get_task()
        assert task == {"angle": angle} and type(task["angle"]) is float
    with pytest.raises(TaskError, match=r"^AntDir2D: angle must be in \[0, 2\*pi\), got 6.28318530717958"):
        env.task_vector({"angle": 2 * math.pi})
    with pytest.raises(TaskError, match=r"^AntDir2D: angle=-0.1 is outside \[0.0, 6.28318"):
        env.task_vector({"angle": -0.1})
    with pytest.raises(TaskError, match=r"^AntDir2D: task \{'direction': 1\} is missing field\(s\) \['angle'\]"):
        env.task_vector({"direction": 1})
    tasks = env.sample_tasks(200, np.random.default_rng(3))
    want = np.random.default_rng(3).uniform(0.0, 2 * np.pi, size=200)
    assert [t["angle"] for t in tasks] == want.tolist()
    assert all(list(t) == ["angle"] and type(t["angle"]) is float for t in tasks)
    # the batched env keeps the tasks as given
    batched = AntDir2DEnv.batched([{"angle": 0.5}, {"angle": 3.0}])
    assert batched.tasks == [{"angle": 0.5}, {"angle": 3.0}]


def test_ant_goal_task_vector_and_distribution():
    env = AntGoalEnv(goal_low=-2.0, goal_high=1.0)
    for goal in ((-2.0, 1.0), (1.0, -2.0), (0.25, 0.5)):
        vec = env.task_vector({"goal": goal})
        assert vec.dtype == np.float64 and vec.shape == (2,)
        np.testing.assert_array_equal(vec, goal)
    env.set_task({"goal": [np.float32(0.5), 0]})
    task = env.get_task()
    assert task == {"goal": (0.5, 0.0)} and all(type(x) is float for x in task["goal"])
    two = r"^AntGoal: goal must be two finite numbers, got "
    for bad in ((1.0,), (1.0, 2.0, 3.0), (math.nan, 0.0), (0.0, math.inf), "ab", None, ({}, 1.0)):
        with pytest.raises(TaskError, match=two):
            env.task_vector({"goal": bad})
    with pytest.raises(TaskError, match=r"^AntGoal: goal \(.*1\.5.*0\.0.*\) is outside \[-2\.0, 1\.0\]\^2$"):
        env.task_vector({"goal": (1.5, 0.0)})
    with pytest.raises(TaskError, match=r"is outside \[-2\.0, 1\.0\]\^2$"):
        env.task_vector({"goal": (0.0, -2.5)})
    with pytest.raises(TaskError, match=r"^AntGoal: task \{'target': 1\} is missing field\(s\) \['goal'\]"):
        env.task_vector({"target": 1})
    with pytest.raises(ValueError, match=r"^AntGoal: need goal_low <= goal_high, got 1.0, 0.0$"):
        AntGoalEnv(goal_low=1.0, goal_high=0.0)
    point = AntGoalEnv({"goal": (0.5, 0.5)}, goal_low=0.5, goal_high=0.5)  # a single goal is allowed
    assert point.get_task() == {"goal": (0.5, 0.5)}
    tasks = env.sample_tasks(100, np.random.default_rng(8))
    want = np.random.default_rng(8).uniform(-2.0, 1.0, size=(100, 2))
    assert [t["goal"] for t in tasks] == [tuple(g) for g in want.tolist()]
    assert all(list(t) == ["goal"] and all(type(x) is float for x in t["goal"]) for t in tasks)
    batched = AntGoalEnv.batched([{"goal": (0.5, -1.0)}], goal_low=-2.0, goal_high=1.0)
    assert batched.tasks == [{"goal": (0.5, -1.0)}]


def test_default_goal_range_and_bonus():
    env = AntGoalEnv()
    assert (env.goal_low, env.goal_high, env.goal_bonus) == (-3.0, 3.0, 4.0)
    assert all(type(v) is float for v in (env.goal_low, env.goal_high, env.goal_bonus))
    assert envs.make_family("AntGoal").make_env({"goal": (3.0, -3.0)}).get_task() == {"goal": (3.0, -3.0)}


@pytest.mark.parametrize("cls,low,high", [(HalfCheetahVelEnv, 0.0, 2.0), (AntVelEnv, 0.0, 3.0)])
def test_goal_velocities_are_uniform_on_the_documented_default_range(cls, low, high):
    env = cls()
    assert (env.velocity_low, env.velocity_high) == (low, high)
    tasks = env.sample_tasks(50, np.random.default_rng(2))
    assert [t["velocity"] for t in tasks] == np.random.default_rng(2).uniform(low, high, size=50).tolist()
    given = cls({"velocity": 1.25})  # the task given to the constructor is the env's task
    assert given.get_task() == {"velocity": 1.25}


def test_default_goals_are_uniform_on_the_documented_square():
    tasks = AntGoalEnv().sample_tasks(50, np.random.default_rng(4))
    want = np.random.default_rng(4).uniform(-3.0, 3.0, size=(50, 2))
    assert [t["goal"] for t in tasks] == [tuple(g) for g in want.tolist()]
