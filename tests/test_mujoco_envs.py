"""MuJoCo task families: contract, physics-derived rewards, tasks, parameters, bad input."""

from __future__ import annotations

import pickle

import cloudpickle
import gymnasium
import mujoco
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.base import TaskFamily
from envs.check import rollout_batched, rollout_single, tasks_equal
from envs.half_cheetah import HalfCheetahVelEnv
from envs.mujoco_base import MujocoTaskEnv, quiet_settotalmass
from envs.rand_params import PARAM_NAMES

# the Meta-World families build Meta-World's benchmarks (ML10 ~15 s): tests/test_metaworld.py checks them
ALL = [n for n in envs.family_names() if not n.startswith("MetaWorld")]
MUJOCO = [n for n in ALL if issubclass(envs.family_class(n), MujocoTaskEnv)]
PARAMS = ["HopperParams", "Walker2dParams"]
ANT = ["AntVel", "AntDir", "AntDir2D", "AntGoal"]


def test_every_family_is_registered():
    expected = {"HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntDir2D", "AntGoal",
                "HopperParams", "Walker2dParams"}
    assert expected <= set(MUJOCO)
    for n in expected:
        assert f"metarl/{n}-v0" in gymnasium.registry


def _actions(family: TaskFamily, steps: int, n: int, seed: int = 0) -> np.ndarray:
    # reach 30% beyond the actuator range so clipping is exercised
    return np.random.default_rng(seed).uniform(-1.3, 1.3, size=(steps, n, family.act_dim))


# -- the whole contract, per family -------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_check_family(name):
    envs.check_family(name, n_tasks=2, steps=25)


@pytest.mark.parametrize("name", MUJOCO)
def test_single_vs_batched_bit_identical(name):
    family = envs.make_family(name)
    tasks = family.sample_tasks(3, np.random.default_rng(1))
    tasks = [tasks[0], tasks[1], tasks[0], tasks[2]]  # a repeated task shares a model in param families
    seeds = [7, 8, 9, 10]
    actions = _actions(family, 40, len(tasks), seed=3)
    batched = rollout_batched(family, tasks, seeds, actions)
    for i, (t, s) in enumerate(zip(tasks, seeds, strict=True)):
        obs, rew, term = rollout_single(family.make_env(t), s, actions[:, i], name)
        assert np.array_equal(obs, batched[0][:, i]), f"obs differ for env {i}"
        assert np.array_equal(rew, batched[1][:, i]), f"rewards differ for env {i}"
        assert np.array_equal(term, batched[2][:, i]), f"terminated differ for env {i}"
    assert batched[0].dtype == np.float32


def test_terminations_agree_when_they_happen():
    # the hopper falls within a few dozen random steps: the flag must agree on a True too
    family = envs.make_family("HopperParams")
    tasks = family.sample_tasks(4, np.random.default_rng(0))
    actions = _actions(family, 150, 4, seed=1)
    _, _, term = rollout_batched(family, tasks, [0, 1, 2, 3], actions)
    assert term.any(), "expected at least one termination to compare"
    for i in range(4):
        _, _, t_single = rollout_single(family.make_env(tasks[i]), i, actions[:, i])
        assert np.array_equal(t_single, term[:, i])


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntVel", "Walker2dParams"])
def test_batched_envs_reuse_simulator_data_without_leaking_state(name):
    family = envs.make_family(name)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    first = family.make_vector(tasks)
    first.reset([0, 1, 2])
    for a in _actions(family, 5, 3):
        first.step(a)  # leave the simulator data mid-episode
    datas = {id(d) for d in first.datas}
    del first
    others = family.sample_tasks(3, np.random.default_rng(1))
    actions = _actions(family, 10, 3, seed=2)
    second = family.make_vector(others)
    assert {id(d) for d in second.datas} == datas, "data should come back from the pool"
    del second
    batched = rollout_batched(family, others, [5, 6, 7], actions)
    for i in range(3):
        single = rollout_single(family.make_env(others[i]), 5 + i, actions[:, i])
        for x, y in zip(single, (batched[0][:, i], batched[1][:, i], batched[2][:, i]), strict=True):
            assert np.array_equal(x, y)


def test_batched_reset_matches_gymnasium_seeding():
    family = envs.make_family("AntGoal")
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    venv = family.make_vector(tasks)
    obs = venv.reset([123, 456])
    for i, s in enumerate([123, 456]):
        env = family.make_env(tasks[i])
        o, _ = env.reset(seed=s)
        assert np.array_equal(o, obs[i])
    # a different seed gives a different start
    assert not np.array_equal(venv.reset([124, 456])[0], obs[0])


@pytest.mark.parametrize("name", MUJOCO)
def test_same_seed_determinism_and_float32(name):
    family = envs.make_family(name)
    task = family.sample_tasks(1, np.random.default_rng(5))[0]
    actions = _actions(family, 20, 1)[:, 0]
    a = rollout_single(family.make_env(task), 11, actions)
    b = rollout_single(family.make_env(task), 11, actions)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    c = rollout_single(family.make_env(task), 12, actions)
    assert not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.float32 and a[0].shape[1:] == family.make_env(task).observation_space.shape


@pytest.mark.parametrize("name", MUJOCO)
@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads),
                                         (cloudpickle.dumps, cloudpickle.loads)])
def test_pickle_round_trip(name, dumps, loads):
    family = envs.make_family(name)
    tasks = family.sample_tasks(2, np.random.default_rng(2))
    env = family.make_env(tasks[0])
    env.set_task(tasks[1])  # the current task, not the constructor's, must survive
    copy = loads(dumps(env))
    assert type(copy) is type(env) and tasks_equal(copy.get_task(), tasks[1])
    actions = _actions(family, 10, 1)[:, 0]
    for x, y in zip(rollout_single(env, 3, actions), rollout_single(copy, 3, actions), strict=True):
        assert np.array_equal(x, y)
    venv = loads(dumps(family.make_vector(tasks)))
    assert venv.num_envs == 2 and all(tasks_equal(a, b) for a, b in zip(venv.tasks, tasks, strict=True))
    fam = loads(dumps(family))
    assert fam.name == name and fam.obs_dim == family.obs_dim


@pytest.mark.parametrize("name", MUJOCO)
def test_reward_is_sum_of_info_terms(name):
    env = envs.make_family(name).make_env()
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1.3, 1.3, size=(15, env.model.nu))
    for a in actions:
        _, r, _, _, info = env.step(a)
        terms = [v for k, v in info.items() if k.startswith("reward_")]
        assert len(terms) >= 2
        total = 0.0
        for v in terms:
            total += v
        assert total == r


# -- rewards recomputed from MuJoCo state -------------------------------------
def _independent_terms(name: str, env, task: dict, qpos_before: np.ndarray, action: np.ndarray,
                       scale: float = 1.0) -> dict:
    """The reward terms of DESIGN.md, from MuJoCo state, written out separately from the env code."""
    m, d = env.model, env.data
    applied = np.minimum(np.maximum(scale * np.asarray(action, dtype=np.float64), m.actuator_ctrlrange[:, 0]),
                         m.actuator_ctrlrange[:, 1])
    assert np.array_equal(d.ctrl, applied), "MuJoCo must receive clip(action_scale * a, ctrlrange)"
    x_before, x_after = qpos_before[0], d.qpos[0]
    v_x = (x_after - x_before) / env.dt
    assert env.dt == m.opt.timestep * env.frame_skip
    if name.startswith("HalfCheetah"):
        ctrl = -0.05 * float(np.dot(applied, applied))
        fwd = -abs(v_x - task["velocity"]) if name == "HalfCheetahVel" else task["direction"] * v_x
        return {"reward_forward": fwd, "reward_ctrl": ctrl}
    if name.startswith("Ant"):
        mujoco.mj_rnePostConstraint(m, d)  # recompute the contact forces ourselves
        cfrc = np.clip(d.cfrc_ext, -1.0, 1.0)
        assert np.all(cfrc[0] == 0), "the world body carries no external force"
        out = {}
        if name == "AntVel":
            out["reward_forward"] = -abs(v_x - task["velocity"])
        elif name == "AntDir":
            out["reward_forward"] = task["direction"] * v_x
        elif name == "AntDir2D":
            v_y = (d.qpos[1] - qpos_before[1]) / env.dt
            out["reward_forward"] = v_x * np.cos(task["angle"]) + v_y * np.sin(task["angle"])
        else:
            gx, gy = task["goal"]
            out["reward_goal"] = 4.0 - (abs(d.qpos[0] - gx) + abs(d.qpos[1] - gy))
        healthy = 0.2 <= d.qpos[2] <= 1.0
        out["reward_ctrl"] = -0.005 * float(np.dot(applied, applied))
        out["reward_contact"] = -0.0005 * float(np.sum(cfrc**2))
        out["reward_survive"] = 0.05 if healthy else 0.0
        return out
    # Hopper / Walker2d: gymnasium v5
    z, angle = d.qpos[1], d.qpos[2]
    if name == "HopperParams":
        state = np.concatenate([d.qpos, d.qvel])[2:]
        healthy = bool(np.all(np.abs(state) < 100) and z > 0.7 and -0.2 < angle < 0.2)
    else:
        healthy = bool(0.8 < z < 2.0 and -1.0 < angle < 1.0)
    return {"reward_forward": v_x, "reward_ctrl": -1e-3 * float(np.dot(applied, applied)),
            "reward_survive": 1.0 if healthy else 0.0}


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.37])
@pytest.mark.parametrize("name", MUJOCO)
def test_rewards_recomputed_from_mujoco_state(name, scale):
    family = envs.make_family(name, **({} if scale == 1.0 else {"action_scale": scale}))
    env = family.make_env()
    assert env.action_scale == scale
    tasks = family.sample_tasks(2, np.random.default_rng(4))
    rng = np.random.default_rng(9)
    terminating = name in PARAMS or name in ANT
    terminations = 0
    for task in tasks:  # set_task on a live env must change the reward as defined
        env.set_task(task)
        env.reset(seed=1)
        for _ in range(400 if terminating else 12):  # up to and including the terminating step
            a = rng.uniform(-1.4, 1.4, size=env.model.nu) / scale
            qpos_before = env.data.qpos.copy()
            _, r, term, _, info = env.step(a)
            want = _independent_terms(name, env, task, qpos_before, a, scale)
            got = {k: v for k, v in info.items() if k.startswith("reward_")}
            assert list(got) == list(want)
            for k in want:
                assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k
            if terminating:
                assert term == (want["reward_survive"] == 0.0)
            if term:
                terminations += 1
                break
    assert terminations == (len(tasks) if terminating else 0)


def test_task_changes_reward_but_not_dynamics():
    env = envs.make_family("HalfCheetahDir").make_env({"direction": 1})
    actions = np.random.default_rng(0).uniform(-1, 1, size=(10, 6))
    fwd = rollout_single(env, 0, actions)
    env.set_task({"direction": -1})
    back = rollout_single(env, 0, actions)
    assert np.array_equal(fwd[0], back[0])  # same physics
    ctrl = np.array([-0.05 * a @ a for a in np.clip(actions, -1, 1)])
    assert np.allclose(fwd[1] - ctrl, -(back[1] - ctrl), rtol=1e-12, atol=1e-12)


def test_halfcheetah_observation_layout():
    env = envs.make_family("HalfCheetahVel").make_env()
    env.reset(seed=0)
    obs, *_ = env.step(np.zeros(6))
    d = env.data
    torso = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    want = np.concatenate([d.qpos[1:], d.qvel, d.xipos[torso]]).astype(np.float32)
    assert obs.shape == (20,) and np.array_equal(obs, want)


def test_ant_observation_layout():
    env = envs.make_family("AntDir").make_env()
    env.reset(seed=0)
    for _ in range(15):  # lands after ~8 steps
        obs, *_ = env.step(np.full(8, 0.5))
    d = env.data
    torso = mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    mujoco.mj_rnePostConstraint(env.model, d)
    want = np.concatenate([d.qpos, d.qvel, np.clip(d.cfrc_ext[1:], -1, 1).ravel(),
                           d.xmat[torso], d.xipos[torso]]).astype(np.float32)
    assert obs.shape == (119,) and np.array_equal(obs, want)
    assert np.any(obs[29:107] != 0), "contact forces should be non-zero once the ant stands"


@pytest.mark.parametrize("name,gym_id", [("HopperParams", "Hopper-v5"), ("Walker2dParams", "Walker2d-v5")])
def test_param_families_match_gymnasium_v5_on_the_default_task(name, gym_id):
    ours = envs.make_family(name).make_env()  # task=None: unmodified model
    theirs = gymnasium.make(gym_id).unwrapped
    o1, _ = ours.reset(seed=4)
    o2, _ = theirs.reset(seed=4)
    assert np.array_equal(o1, o2.astype(np.float32))
    for a in np.random.default_rng(0).uniform(-1, 1, size=(30, ours.model.nu)):
        o1, r1, t1, _, i1 = ours.step(a)
        o2, r2, t2, _, i2 = theirs.step(a)
        assert np.array_equal(o1, o2.astype(np.float32)) and t1 == t2
        assert r1 == pytest.approx(r2, rel=1e-12, abs=1e-12)


def test_halfcheetah_physics_matches_gymnasium_v5():
    ours = envs.make_family("HalfCheetahVel").make_env()
    with quiet_settotalmass():
        theirs = gymnasium.make("HalfCheetah-v5").unwrapped
    ours.reset(seed=2)
    theirs.reset(seed=2)
    for a in np.random.default_rng(1).uniform(-1, 1, size=(20, 6)):
        ours.step(a)
        _, _, _, _, info = theirs.step(a)
        assert np.array_equal(ours.data.qpos, theirs.data.qpos)
    assert ours.dt == theirs.dt == 0.05


# -- task distributions -------------------------------------------------------
def _scalar(task):
    return next(iter(task.values()))


@pytest.mark.parametrize("name,low,high", [("HalfCheetahVel", 0.0, 2.0), ("AntVel", 0.0, 3.0),
                                           ("AntDir2D", 0.0, 2 * np.pi)])
def test_scalar_task_bounds(name, low, high):
    tasks = envs.make_family(name).sample_tasks(500, np.random.default_rng(0))
    v = np.array([_scalar(t) for t in tasks])
    assert np.all(v >= low) and np.all(v < high)
    assert v.min() < low + 0.1 * (high - low) and v.max() > high - 0.1 * (high - low)


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntDir"])
def test_direction_tasks(name):
    d = [t["direction"] for t in envs.make_family(name).sample_tasks(200, np.random.default_rng(0))]
    assert set(d) == {-1, 1} and all(type(x) is int for x in d)


def test_goal_tasks():
    g = np.array([t["goal"] for t in envs.make_family("AntGoal").sample_tasks(500, np.random.default_rng(0))])
    assert g.shape == (500, 2) and np.all(np.abs(g) <= 3.0) and np.abs(g).max() > 2.8


def test_task_ranges_are_constructor_arguments():
    tasks = envs.make_family("HalfCheetahVel", velocity_low=1.0, velocity_high=1.5).sample_tasks(
        100, np.random.default_rng(0))
    v = np.array([t["velocity"] for t in tasks])
    assert np.all((v >= 1.0) & (v <= 1.5))
    env = envs.make_family("AntGoal", goal_low=-1.0, goal_high=1.0).make_env()
    with pytest.raises(envs.TaskError, match="outside"):
        env.set_task({"goal": (2.0, 0.0)})
    fam = envs.make_family("HopperParams", log_scale_limit=1.0)
    for t in fam.sample_tasks(20, np.random.default_rng(0)):
        for s in t["scales"].values():
            assert np.all(s >= 1.5**-1 - 1e-12) and np.all(s <= 1.5**1 + 1e-12)
    with pytest.raises(ValueError, match="bad env kwargs"):
        envs.make_family("AntVel", no_such_coefficient=1.0)


@pytest.mark.parametrize("name", MUJOCO)
def test_task_seeding(name):
    family = envs.make_family(name)
    a = family.sample_tasks(5, np.random.default_rng(42))
    b = family.sample_tasks(5, np.random.default_rng(42))
    c = family.sample_tasks(5, np.random.default_rng(43))
    assert all(tasks_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(tasks_equal(x, y) for x, y in zip(a, c, strict=True))
    for t in a:
        pickle.loads(pickle.dumps(t))
        assert tasks_equal(family.make_env(t).get_task(), t)


@pytest.mark.parametrize("name", PARAMS)
def test_param_task_bounds_and_shapes(name):
    env = envs.make_family(name).make_env()
    tasks = env.sample_tasks(50, np.random.default_rng(0))
    allv = []
    for t in tasks:
        assert set(t["scales"]) == set(PARAM_NAMES)
        for p, s in t["scales"].items():
            assert s.shape == getattr(env.model, p).shape
            allv.append(s.ravel())
    v = np.concatenate(allv)
    assert v.min() >= 1.5**-3 and v.max() <= 1.5**3
    assert v.min() < 1.5**-2.8 and v.max() > 1.5**2.8


# -- physical-parameter families ----------------------------------------------
@pytest.mark.parametrize("name", PARAMS)
def test_set_task_scales_defaults_without_compounding(name):
    family = envs.make_family(name)
    env = family.make_env()
    original = {p: getattr(env.model, p).copy() for p in PARAM_NAMES}
    untouched = ("body_pos", "geom_size", "dof_armature", "actuator_gear")
    other = {k: getattr(env.model, k).copy() for k in untouched}
    t1, t2 = family.sample_tasks(2, np.random.default_rng(0))
    env.set_task(t1)
    for p in PARAM_NAMES:
        assert np.array_equal(getattr(env.model, p), original[p] * t1["scales"][p])
    env.set_task(t2)
    for p in PARAM_NAMES:
        assert np.array_equal(getattr(env.model, p), original[p] * t2["scales"][p]), f"{p} compounded"
    env.set_task({"scales": {p: np.ones_like(original[p]) for p in PARAM_NAMES}})
    for p in PARAM_NAMES:
        assert getattr(env.model, p).tobytes() == original[p].tobytes()
    for k, v in other.items():
        assert np.array_equal(getattr(env.model, k), v)
    assert tasks_equal(env.get_task(), env.default_task())


@pytest.mark.parametrize("name", PARAMS)
def test_param_task_changes_dynamics_and_batched_models(name):
    family = envs.make_family(name)
    t1, t2 = family.sample_tasks(2, np.random.default_rng(0))
    actions = _actions(family, 10, 1)[:, 0]
    a = rollout_single(family.make_env(t1), 0, actions)
    b = rollout_single(family.make_env(t2), 0, actions)
    assert not np.array_equal(a[0][1:], b[0][1:])
    venv = family.make_vector([t1, t2, t1])
    assert venv.models[0] is venv.models[2] and venv.models[0] is not venv.models[1]
    assert np.array_equal(venv.models[1].body_mass, family.make_env(t2).model.body_mass)


def test_rand_params_subset():
    env = envs.make_family("HopperParams", rand_params=["body_mass"]).make_env()
    t = env.sample_tasks(1, np.random.default_rng(0))[0]
    assert list(t["scales"]) == ["body_mass"]
    before = env.model.geom_friction.copy()
    env.set_task(t)
    assert np.array_equal(env.model.geom_friction, before)
    with pytest.raises(envs.TaskError, match="unknown"):
        env.set_task({"scales": {"body_mass": t["scales"]["body_mass"], "dof_damping": np.ones(6)}})


# -- bad input ----------------------------------------------------------------
def test_unknown_family_names_it():
    with pytest.raises(KeyError, match="HalfCheetahVelocity"):
        envs.make_family("HalfCheetahVelocity")


BAD_TASKS = [
    ("HalfCheetahVel", {}, "missing"),
    ("HalfCheetahVel", {"velocity": 1.0, "goal": 2}, "unknown"),
    ("HalfCheetahVel", {"velocity": 2.5}, "outside"),
    ("HalfCheetahVel", {"velocity": float("nan")}, "outside"),
    ("HalfCheetahVel", {"velocity": "fast"}, "number"),
    ("HalfCheetahVel", 1.0, "mapping"),
    ("HalfCheetahDir", {"direction": 0}, "-1 or \\+1"),
    ("AntVel", {"velocity": -0.1}, "outside"),
    ("AntDir", {"dir": 1}, "missing"),
    ("AntDir2D", {"angle": 2 * np.pi}, "angle"),
    ("AntDir2D", {"angle": -0.5}, "outside"),
    ("AntGoal", {"goal": (1.0,)}, "two finite"),
    ("AntGoal", {"goal": (3.5, 0.0)}, "outside"),
    ("HopperParams", {"scales": {"body_mass": [1.0]}}, "missing"),
    ("HopperParams", {"scales": 3}, "mapping"),
]


@pytest.mark.parametrize("name,task,match", BAD_TASKS)
def test_bad_tasks_raise_task_error(name, task, match):
    family = envs.make_family(name)
    with pytest.raises(envs.TaskError, match=match):
        family.make_env(task)
    env = family.make_env()
    before = env.get_task()
    with pytest.raises(envs.TaskError, match=match):
        env.set_task(task)
    assert tasks_equal(env.get_task(), before)  # a rejected task leaves the env unchanged
    with pytest.raises(envs.TaskError):
        family.make_vector([task])


@pytest.mark.parametrize("name", PARAMS)
def test_bad_param_scales(name):
    env = envs.make_family(name).make_env()
    good = env.sample_tasks(1, np.random.default_rng(0))[0]["scales"]
    wrong_shape = {**good, "body_mass": np.ones(3)}
    too_big = {**good, "dof_damping": np.full_like(good["dof_damping"], 1.5**3.5)}
    with pytest.raises(envs.TaskError, match="shape"):
        env.set_task({"scales": wrong_shape})
    with pytest.raises(envs.TaskError, match="dof_damping.*outside"):
        env.set_task({"scales": too_big})


@pytest.mark.parametrize("name", MUJOCO)
def test_bad_actions(name):
    family = envs.make_family(name)
    env = family.make_env()
    env.reset(seed=0)
    nu = env.model.nu
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(nu, np.nan))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(nu + 1))
    venv = family.make_vector(family.sample_tasks(2, np.random.default_rng(0)))
    venv.reset([0, 1])
    bad = np.zeros((2, nu))
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        venv.step(bad)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((3, nu)))
    with pytest.raises(ValueError, match="seeds"):
        venv.reset([0])


# -- the checker itself must fail on broken families --------------------------
class _RewardNotSum(HalfCheetahVelEnv):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r + 1.0, term, trunc, info


class _AcceptsNaN(HalfCheetahVelEnv):
    def step(self, action):
        return super().step(np.nan_to_num(np.asarray(action, dtype=np.float64)))


class _BatchedNoiseDiffers(HalfCheetahVelEnv):
    @classmethod
    def batched(cls, tasks, **kwargs):
        return HalfCheetahVelEnv.batched(tasks, reset_noise_scale=0.2, **kwargs)


@pytest.mark.parametrize("cls,match", [
    (_RewardNotSum, "sum of info reward terms"),
    (_BatchedNoiseDiffers, "single env vs batched"),
    (_AcceptsNaN, "NaN action"),
])
def test_check_family_catches_broken_families(cls, match):
    with pytest.raises(AssertionError, match=match):
        envs.check_family(TaskFamily("Broken", cls, 20), n_tasks=2, steps=10)


def test_check_family_uses_family_kwargs():
    envs.check_family(envs.make_family("HopperParams", rand_params=["body_mass"], log_scale_limit=1.0),
                      n_tasks=2, steps=5)
    envs.check_family(envs.make_family("AntGoal", goal_low=-1.0, goal_high=1.0), n_tasks=2, steps=5)


# -- action normalisation ----------------------------------------------------------
@pytest.mark.parametrize("name", MUJOCO)
def test_action_scale_single_vs_batched_bit_identical(name):
    family = envs.make_family(name, action_scale=0.1)
    tasks = family.sample_tasks(3, np.random.default_rng(2))
    seeds = [3, 4, 5]
    actions = _actions(family, 30, len(tasks), seed=5) * 10.0  # +-13: beyond the scaled range too
    batched = rollout_batched(family, tasks, seeds, actions)
    unscaled = rollout_batched(envs.make_family(name), tasks, seeds, actions)
    assert not np.array_equal(batched[1], unscaled[1]), "the scale must change what is applied"
    for i, (t, s) in enumerate(zip(tasks, seeds, strict=True)):
        obs, rew, term = rollout_single(family.make_env(t), s, actions[:, i], name)
        assert np.array_equal(obs, batched[0][:, i]) and np.array_equal(rew, batched[1][:, i])
        assert np.array_equal(term, batched[2][:, i])


@pytest.mark.parametrize("name", ["HalfCheetahDir", "AntVel", "HopperParams"])
def test_action_scale_equals_scaling_the_actions(name):
    # scale s on actions a is the unscaled env on s * a: the scale is a pure change of units
    fam = envs.make_family(name, action_scale=0.25)
    tasks = fam.sample_tasks(2, np.random.default_rng(0))
    actions = _actions(fam, 20, 2, seed=1) * 4.0
    a = rollout_batched(fam, tasks, [1, 2], actions)
    b = rollout_batched(envs.make_family(name), tasks, [1, 2], 0.25 * actions)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("name", MUJOCO)
def test_action_scale_default_is_gymnasium_and_space_is_scaled(name):
    env = envs.make_family(name).make_env()
    assert env.action_scale == 1.0
    lo, hi = env.model.actuator_ctrlrange[:, 0], env.model.actuator_ctrlrange[:, 1]
    assert np.array_equal(env.action_space.low, lo.astype(np.float32))
    scaled = envs.make_family(name, action_scale=0.1).make_env()
    assert np.allclose(scaled.action_space.low, lo / 0.1) and np.allclose(scaled.action_space.high, hi / 0.1)
    assert gymnasium.make(f"metarl/{name}-v0").unwrapped.action_scale == 1.0
    envs.check_family(envs.make_family(name, action_scale=0.1), n_tasks=2, steps=8)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), "abc"])
def test_bad_action_scale_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="action_scale"):
        envs.make_family("HalfCheetahVel", action_scale=bad).make_env()


# -- configs --------------------------------------------------------------------
CONFIGS = {"halfcheetah_vel": "HalfCheetahVel", "halfcheetah_dir": "HalfCheetahDir", "ant_vel": "AntVel",
           "ant_dir": "AntDir", "ant_dir2d": "AntDir2D", "ant_goal": "AntGoal",
           "hopper_params": "HopperParams", "walker2d_params": "Walker2dParams"}
@pytest.mark.parametrize("fname,family", sorted(CONFIGS.items()))
def test_family_configs(fname, family):
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs" / f"{fname}.yaml"
    text = path.read_text()
    cfg = yaml.safe_load(text)  # every key with a comment: tests/test_core_training.py checks all configs
    assert cfg["env"]["family"] == family
    assert cfg["env"]["horizon"] == (100 if family.startswith("HalfCheetah") else 200)
    assert cfg["algo"]["meta_batch_size"] == 40 and cfg["trpo"]["cg_damping"] == 1.0e-5
    assert cfg["env"]["kwargs"]["action_scale"] == 0.1  # the reference implementations' normalisation
    assert "normalization_scale" in text  # the comment names where 0.1 comes from
    fam = envs.make_family(family, horizon=cfg["env"]["horizon"], **cfg["env"]["kwargs"])
    assert fam.horizon == cfg["env"]["horizon"] and fam.make_env().action_scale == 0.1


# -- properties of task validation -----------------------------------------------
_VEL_ENV = None


def _vel_env():
    global _VEL_ENV
    if _VEL_ENV is None:
        _VEL_ENV = envs.make_family("AntVel").make_env()
    return _VEL_ENV


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_velocity_validation_property(v):
    env = _vel_env()
    if np.isfinite(v) and 0.0 <= v <= 3.0:
        env.set_task({"velocity": v})
        assert env.get_task() == {"velocity": v}
    else:
        with pytest.raises(envs.TaskError, match="velocity"):
            env.set_task({"velocity": v})


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4.0, 4.0), min_size=2, max_size=2))
def test_goal_validation_property(goal):
    env = envs.make_family("AntGoal").make_env()
    if all(-3.0 <= g <= 3.0 for g in goal):
        env.set_task({"goal": goal})
        assert env.get_task() == {"goal": tuple(goal)}
    else:
        with pytest.raises(envs.TaskError, match="outside"):
            env.set_task({"goal": goal})
