"""gymnasium.make_vec on every family: the batched path behind gymnasium's vector API, NEXT_STEP autoreset."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorEnv

import envs
from envs.vector import TaskVectorEnv

# the shipped families (tests register their own too); Meta-World's take seconds to build and are checked
# in tests/test_metaworld.py
FAMILIES = [n for n in envs.family_names()
            if not n.startswith("MetaWorld") and envs.make_family(n).env_cls.__module__.startswith("envs.")]


def _make(name: str, n: int, **kw) -> TaskVectorEnv:
    return gymnasium.make_vec(f"metarl/{name}-v0", num_envs=n, vectorization_mode="vector_entry_point", **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_make_vec_follows_the_batched_path_exactly(name):
    family = envs.make_family(name)
    tasks = family.sample_tasks(3, np.random.default_rng(5))
    v = _make(name, 3, tasks=tasks)
    assert isinstance(v, VectorEnv) and v.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert v.observation_space.shape == (3, family.obs_dim) and v.action_space.shape == (3, family.act_dim)
    obs, info = v.reset(seed=10)
    assert obs.dtype == np.float32 and v.observation_space.contains(obs) and info == {}
    ref = family.make_vector(tasks)
    ref_obs = ref.reset([10, 11, 12])
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    alive = np.ones(3, dtype=bool)
    for _ in range(15):
        a = rng.uniform(-1, 1, size=(3, family.act_dim))
        o, r, term, trunc, _ = v.step(a)
        ro, rr, rterm = ref.step(a)
        np.testing.assert_array_equal(o[alive], ro[alive])
        np.testing.assert_array_equal(r[alive], rr[alive])
        np.testing.assert_array_equal(term[alive], rterm[alive])
        assert not trunc.any()
        alive &= ~term  # after a termination the vector env autoresets that env
        if not alive.any():
            break


def test_autoreset_next_step_resets_only_the_finished_env():
    goals = [{"goal": (0.05, 0.0)}, {"goal": (0.4, 0.4)}]
    v = _make("Navigation2D", 2, tasks=goals)
    v.reset(seed=0)
    a = np.array([[0.05, 0.0], [0.01, 0.0]])
    o, r, term, trunc, _ = v.step(a)
    assert term.tolist() == [True, False] and not trunc.any()
    np.testing.assert_allclose(o[0], [0.05, 0.0], atol=1e-7)
    o, r, term, trunc, _ = v.step(a)  # env 0 autoresets and ignores its action, env 1 steps
    np.testing.assert_array_equal(o[0], [0.0, 0.0])
    assert r[0] == 0.0 and not term[0] and not trunc[0]
    np.testing.assert_allclose(o[1], [0.02, 0.0], atol=1e-7)
    o, r, term, _, _ = v.step(a)  # env 0 runs again from the reset state
    assert term[0] and r[0] > -1e-6


def test_truncation_at_the_horizon_then_reset():
    v = _make("HalfCheetahDir", 2, tasks={"direction": 1}, horizon=5, action_scale=0.1)
    v.reset(seed=3)
    zero = np.zeros((2, 6))
    for t in range(5):
        _, _, term, trunc, _ = v.step(zero)
        assert trunc.all() == (t == 4) and not term.any()
    o, r, term, trunc, _ = v.step(zero)  # after truncation the next step resets every env
    assert (r == 0).all() and not trunc.any() and not term.any()
    _, r, _, trunc, _ = v.step(zero)
    assert (r != 0).all() and not trunc.any()  # and the new episodes run
    assert v.single_action_space.high[0] == pytest.approx(10.0)  # action_scale reaches the family


def test_bad_arguments():
    with pytest.raises(ValueError, match="tasks"):
        _make("Navigation2D", 3, tasks=[{"goal": (0.1, 0.1)}] * 2)
    with pytest.raises(envs.TaskError):
        _make("Navigation2D", 1, tasks=[{"goal": (9.0, 0.0)}])
