"""Navigation2D against its documented definition: goals uniform on [low, high]^2, a clipped and scaled
displacement per step, reward -||s - g||_2, termination when max |s - g| < goal_tolerance, and the
batched env step for step the same as single envs."""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import pytest

from envs.base import TaskError
from envs.navigation import BatchedNavigation2D, Navigation2DEnv


def test_constructor_checks_its_arguments_with_messages_that_name_them():
    with pytest.raises(ValueError, match=r"^Navigation2D: need low < high, got low=0.5, high=0.5$"):
        Navigation2DEnv(low=0.5, high=0.5)
    with pytest.raises(ValueError, match=r"^Navigation2D: max_action and action_scale must be > 0, got 0.0, 1.0$"):
        Navigation2DEnv(max_action=0.0)
    with pytest.raises(ValueError, match=r"^Navigation2D: max_action and action_scale must be > 0, got 0.1, 0.0$"):
        Navigation2DEnv(action_scale=0.0)
    with pytest.raises(ValueError, match="must be > 0"):
        Navigation2DEnv(max_action=0.1, action_scale=-1.0)
    Navigation2DEnv(low=-0.5, high=-0.49, task={"goal": (-0.495, -0.495)})  # low just below high is fine


def test_defaults_and_spaces():
    env = Navigation2DEnv()
    assert (env.low, env.high, env.max_action, env.goal_tolerance, env.action_scale) == (-0.5, 0.5, 0.1, 0.01, 1.0)
    for v in (env.low, env.high, env.max_action, env.goal_tolerance, env.action_scale):
        assert type(v) is float
    obs = env.observation_space
    assert isinstance(obs, gymnasium.spaces.Box) and obs.shape == (2,) and obs.dtype == np.float32
    assert np.all(obs.low == -np.inf) and np.all(obs.high == np.inf)
    # the action space is the range that is not clipped: max_action / action_scale
    scaled = Navigation2DEnv(max_action=0.2, action_scale=0.1)
    act = scaled.action_space
    assert act.shape == (2,) and act.dtype == np.float32
    np.testing.assert_allclose(act.low, [-2.0, -2.0], rtol=1e-6)
    np.testing.assert_allclose(act.high, [2.0, 2.0], rtol=1e-6)
    # integer arguments are stored as floats
    ints = Navigation2DEnv(low=-1, high=1, max_action=1, goal_tolerance=0, action_scale=2, task={"goal": (0, 0)})
    for v in (ints.low, ints.high, ints.max_action, ints.goal_tolerance, ints.action_scale):
        assert type(v) is float


def test_sample_tasks_are_the_generators_uniform_draws_on_the_square():
    env = Navigation2DEnv(low=-2.0, high=3.0, task={"goal": (0.0, 0.0)})
    tasks = env.sample_tasks(50, np.random.default_rng(7))
    expected = np.random.default_rng(7).uniform(-2.0, 3.0, size=(50, 2))
    assert [tuple(t) for t in tasks] == [("goal",)] * 50
    got = np.array([t["goal"] for t in tasks])
    np.testing.assert_array_equal(got, expected)
    assert all(type(x) is float for t in tasks for x in t["goal"])
    assert got.min() >= -2.0 and got.max() <= 3.0 and got.min() < -1.5 and got.max() > 2.5


def test_default_task_is_the_first_task_sampled_with_seed_0():
    env = Navigation2DEnv()
    assert env.get_task() == env.sample_tasks(1, np.random.default_rng(0))[0]


def test_tasks_are_checked_against_the_square_and_returned_as_float_pairs():
    env = Navigation2DEnv(task={"goal": (0.5, -0.5)})  # both corners of the square are allowed
    assert env.get_task() == {"goal": (0.5, -0.5)}
    env.set_task({"goal": [np.float32(0.25), 0]})
    task = env.get_task()
    assert task == {"goal": (0.25, 0.0)} and all(type(x) is float for x in task["goal"])
    with pytest.raises(TaskError, match=r"^Navigation2D: goal \(0\.6, 0\.0\) is outside \[-0\.5, 0\.5\]\^2$"):
        env.set_task({"goal": (0.6, 0.0)})
    with pytest.raises(TaskError, match=r"goal \(0\.0, -0\.6\) is outside"):
        env.set_task({"goal": (0.0, -0.6)})
    with pytest.raises(TaskError, match="goal must be two finite numbers"):
        env.set_task({"goal": (0.1, 0.1, 0.1)})
    with pytest.raises(TaskError, match="goal must be two finite numbers"):
        env.set_task({"goal": (math.nan, 0.1)})
    with pytest.raises(TaskError, match=r"^Navigation2D: goal must be two finite numbers, got \('a', 0\.1\)$"):
        env.set_task({"goal": ("a", 0.1)})
    missing = r"^Navigation2D: task \{'target': \(0.1, 0.1\)\} is missing field\(s\) \['goal'\]$"
    with pytest.raises(TaskError, match=missing):
        env.set_task({"target": (0.1, 0.1)})
    assert env.get_task() == {"goal": (0.25, 0.0)}  # a rejected task leaves the old one


def _expected_step(state, goal, action, scale, max_action, tol):
    move = [min(max(scale * a, -max_action), max_action) for a in action]
    s = [state[0] + move[0], state[1] + move[1]]
    dx, dy = s[0] - goal[0], s[1] - goal[1]
    return s, -math.hypot(dx, dy), max(abs(dx), abs(dy)) < tol


@pytest.mark.parametrize("scale,max_action", [(1.0, 0.1), (0.1, 0.2), (2.5, 0.05)])
def test_step_moves_by_the_clipped_scaled_action_and_rewards_minus_the_distance(scale, max_action):
    goal = (0.3, -0.2)
    env = Navigation2DEnv(task={"goal": goal}, max_action=max_action, action_scale=scale, goal_tolerance=0.05)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.tolist() == [0.0, 0.0] and info == {}
    rng = np.random.default_rng(1)
    state = [0.0, 0.0]
    for _ in range(12):
        a = rng.uniform(-3, 3, size=2) * max_action / scale
        state, reward, done = _expected_step(state, goal, a.tolist(), scale, max_action, 0.05)
        obs, r, terminated, truncated, info = env.step(a)
        assert obs.dtype == np.float32
        np.testing.assert_allclose(obs, state, rtol=0, atol=1e-7)
        assert r == pytest.approx(reward, rel=1e-12, abs=1e-15) and type(r) is float
        assert info == {"reward_dist": r}
        assert terminated is done and truncated is False
    # reset goes back to the origin
    obs, _ = env.reset()
    assert obs.tolist() == [0.0, 0.0]
    obs, r, *_ = env.step(np.zeros(2))
    assert obs.tolist() == [0.0, 0.0] and r == pytest.approx(-math.hypot(*goal), rel=1e-12)


def test_termination_is_strictly_inside_the_tolerance_in_the_max_norm():
    env = Navigation2DEnv(task={"goal": (0.25, 0.0)}, goal_tolerance=0.125, max_action=1.0)
    env.reset()
    # |dx| = 0.125 exactly (binary fractions): on the boundary, not terminated
    _, r, terminated, _, _ = env.step(np.array([0.125, 0.0]))
    assert not terminated and r == -0.125
    _, r, terminated, _, _ = env.step(np.array([0.0625, 0.0625]))  # |dx| = |dy| = 0.0625 < 0.125
    assert terminated and r == pytest.approx(-math.hypot(0.0625, 0.0625), rel=1e-15)
    # only the largest coordinate counts: dx = 0, |dy| = 0.125 is on the boundary
    env.reset()
    _, _, terminated, _, _ = env.step(np.array([0.25, 0.125]))
    assert not terminated
    # the batched env: the same boundary
    batched = BatchedNavigation2D([{"goal": (0.25, 0.0)}] * 3, goal_tolerance=0.125, max_action=1.0)
    batched.reset([0, 1, 2])
    _, rewards, terminated = batched.step(np.array([[0.125, 0.0], [0.25, 0.125], [0.25, 0.0625]]))
    assert terminated.tolist() == [False, False, True]
    np.testing.assert_array_equal(rewards, [-0.125, -0.125, -0.0625])


def test_bad_actions_are_rejected():
    env = Navigation2DEnv()
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([math.nan, 0.0]))


def test_batched_envs_follow_single_envs_step_for_step():
    kwargs = {"max_action": 0.2, "action_scale": 0.5, "goal_tolerance": 0.1, "low": -1.0, "high": 1.0}
    tasks = [{"goal": (0.3, 0.3)}, {"goal": (-0.9, 0.1)}, {"goal": (1.0, -1.0)}]
    batched = Navigation2DEnv.batched(tasks, **kwargs)
    assert isinstance(batched, BatchedNavigation2D)
    assert (batched.obs_dim, batched.act_dim, batched.num_envs) == (2, 2, 3)
    assert (batched.max_action, batched.goal_tolerance, batched.action_scale) == (0.2, 0.1, 0.5)
    np.testing.assert_array_equal(batched.goals, [t["goal"] for t in tasks])
    singles = [Navigation2DEnv(task=t, **kwargs) for t in tasks]
    obs = batched.reset([4, 5, 6])
    assert obs.dtype == np.float32 and obs.shape == (3, 2) and not obs.any()
    for env in singles:
        env.reset(seed=0)
    rng = np.random.default_rng(2)
    for _ in range(15):
        a = rng.uniform(-1.0, 1.0, size=(3, 2))
        obs, rewards, terminated = batched.step(a)
        assert obs.dtype == np.float32 and rewards.dtype == np.float64 and terminated.dtype == bool
        for i, env in enumerate(singles):
            o, r, term, _, _ = env.step(a[i])
            np.testing.assert_array_equal(obs[i], o)
            assert rewards[i] == r and terminated[i] == term


def test_batched_reset_some_resets_only_the_given_envs():
    tasks = [{"goal": (0.4, 0.4)}] * 3
    batched = BatchedNavigation2D(tasks)
    batched.reset([0, 1, 2])
    batched.step(np.array([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1]]))
    out = batched.reset_some([0, 2], [7, 8])
    assert out.dtype == np.float32 and out.shape == (2, 2) and not out.any()
    np.testing.assert_array_equal(batched.state, [[0.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    obs, rewards, _ = batched.step(np.array([[0.1, 0.0], [0.0, 0.1], [0.0, 0.0]]))
    np.testing.assert_allclose(obs, [[0.1, 0.0], [0.0, 0.2], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(rewards, [-math.hypot(0.3, 0.4), -math.hypot(0.4, 0.2), -math.hypot(0.4, 0.4)],
                               rtol=1e-12)


def test_batched_arguments_are_checked():
    batched = BatchedNavigation2D([{"goal": (0.1, 0.1)}] * 2)
    with pytest.raises(ValueError, match=r"^reset got 3 seeds for 2 envs$"):
        batched.reset([0, 1, 2])
    with pytest.raises(ValueError, match=r"^reset_some got 1 seeds for 2 envs$"):
        batched.reset_some([0, 1], [5])
    with pytest.raises(ValueError, match="shape"):
        batched.step(np.zeros((3, 2)))
    with pytest.raises(TaskError, match="outside"):
        BatchedNavigation2D([{"goal": (0.1, 0.1)}, {"goal": (0.1, 0.7)}])
    with pytest.raises(TaskError, match="outside"):  # the range kwargs reach the goal check
        BatchedNavigation2D([{"goal": (0.1, 0.1)}, {"goal": (0.1, 0.3)}], low=-0.2, high=0.2)
    empty = BatchedNavigation2D([])
    assert empty.num_envs == 0 and empty.goals.shape == (0, 2) and empty.state.shape == (0, 2)


def test_a_new_env_starts_at_the_origin_and_reset_seeds_the_generator_as_gymnasium_does():
    env = Navigation2DEnv(task={"goal": (0.4, 0.4)})
    obs, r, *_ = env.step(np.array([0.05, -0.025]))  # without a reset: from the origin
    np.testing.assert_allclose(obs, [0.05, -0.025], rtol=1e-7)
    assert r == pytest.approx(-math.hypot(0.35, 0.425), rel=1e-12)
    env.reset(seed=5)
    expected, _ = gymnasium.utils.seeding.np_random(5)
    assert env.np_random.random() == expected.random()


def test_a_non_numeric_goal_is_rejected():
    with pytest.raises(TaskError, match="goal must be two finite numbers"):  # a ValueError, as the family's others
        Navigation2DEnv(task={"goal": ("a", "b")})


def test_batched_env_of_one_task_and_resetting_no_env():
    batched = BatchedNavigation2D([{"goal": (-0.2, 0.1)}], action_scale=0.5)
    np.testing.assert_array_equal(batched.goals, [[-0.2, 0.1]])
    obs, _, _ = batched.step(np.array([[0.1, 0.1]]))  # without a reset: from the origin
    np.testing.assert_allclose(obs, [[0.05, 0.05]], atol=1e-8)
    batched.reset([0])
    obs, rewards, _ = batched.step(np.array([[0.1, 0.1]]))
    np.testing.assert_allclose(obs, [[0.05, 0.05]], atol=1e-8)
    assert rewards[0] == pytest.approx(-math.hypot(0.25, 0.05), rel=1e-12)
    out = batched.reset_some([], [])
    assert out.shape == (0, 2) and out.dtype == np.float32
    np.testing.assert_allclose(batched.state, [[0.05, 0.05]])  # nothing was reset


def test_excluded_square_makes_an_outer_ring_of_goals():
    import numpy as np
    import pytest

    from envs.base import TaskError
    from envs.navigation import Navigation2DEnv

    env = Navigation2DEnv(low=-1.0, high=1.0, exclude=0.5)
    goals = np.array([t["goal"] for t in env.sample_tasks(500, np.random.default_rng(0))])
    assert np.all(np.abs(goals).max(1) >= 0.5) and np.all(np.abs(goals) <= 1.0)
    assert goals[:, 0].min() < -0.9 and goals[:, 0].max() > 0.9  # the whole ring, both sides
    with pytest.raises(TaskError, match="inside the excluded"):
        env.set_task({"goal": (0.1, -0.2)})
    with pytest.raises(ValueError, match="exclude"):
        Navigation2DEnv(low=-0.5, high=0.5, exclude=0.5)
    same = Navigation2DEnv().sample_tasks(5, np.random.default_rng(3))
    assert same == Navigation2DEnv(exclude=0.0).sample_tasks(5, np.random.default_rng(3))  # default unchanged
