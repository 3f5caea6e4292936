"""The rollout worker against hand computations: episode draws, the row-wise
MLP's buffers, blocks of envs with an episode offset, float32 actions and
outputs, success flags and closing the env."""

from __future__ import annotations

import warnings

import numpy as np
import torch

import envs
from envs.base import register_family
from metarl.policies import GaussianMLPPolicy
from metarl.sampling.worker import PolicySpec, RolloutWorker, RowwiseMLP, Shard, episode_draws, sub_shards


class Nav3Env(envs.Navigation2DEnv):
    """Navigation2D stepped in blocks of at most 3 envs."""

    max_batch_envs = 3


def test_policy_spec_rebuilds_the_activation():
    policy = PolicySpec(3, 2, (4,), "relu").build()
    assert policy.activation == "relu" and PolicySpec.of(policy) == PolicySpec(3, 2, (4,), "relu")


def test_episode_draws_are_the_generator_of_seed_task_episode():
    for seed, task, ep in ((0, 0, 0), (7, 3, 11), (123456, 2, 5), (1, 9, 40)):
        rng = np.random.default_rng([seed, task, ep])
        expected_seed = int(rng.integers(2147483647))
        expected_noise = rng.standard_normal((6, 2), dtype=np.float32)
        reset_seed, noise = episode_draws(seed, task, ep, 6, 2)
        assert reset_seed == expected_seed and isinstance(reset_seed, int)
        assert noise.dtype == np.float32 and noise.shape == (6, 2)
        np.testing.assert_array_equal(noise, expected_noise)


def test_rowwise_mlp_preallocates_its_buffers_and_sums_a_single_input():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(1, 1, (1, 5), "tanh")  # widths of 1: the pairwise sum has nothing to add
    n, b = 3, 4
    p = {k: v.detach() + 0.3 * torch.randn(n, *v.shape) for k, v in policy.params().items()}
    names = policy.layer_names()
    mlp = RowwiseMLP([p[f"{k}.weight"] for k in names], [p[f"{k}.bias"] for k in names], "tanh", b)
    assert [tuple(buf.shape) for buf in mlp.bufs] == [(1, n, b, 1), (1, n, b, 5), (5, n, b, 1)]
    obs = torch.randn(n, b, 1)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error")  # a buffer of the wrong shape would be resized with a warning
        out = mlp(obs)
        torch.testing.assert_close(out, policy(obs, p)[0], rtol=1e-6, atol=1e-6)
        assert out.data_ptr() == mlp(obs).data_ptr()


def test_worker_policy_has_no_gradients():
    family = envs.make_family("Navigation2D", horizon=4)
    worker = RolloutWorker(family, PolicySpec(family.obs_dim, family.act_dim, (4,), "tanh"))
    assert not any(q.requires_grad for q in worker.policy.parameters())


def test_sub_shards_of_an_episode_range_that_does_not_start_at_zero():
    assert sub_shards(Shard((0, 1), 4, 8), 8) == [Shard((0, 1), 4, 8)]
    assert sub_shards(Shard((0, 1, 2), 4, 6), 4) == [Shard((0, 1), 4, 6), Shard((2,), 4, 6)]
    assert sub_shards(Shard((5,), 3, 10), 3) == [Shard((5,), 3, 6), Shard((5,), 6, 9), Shard((5,), 9, 10)]
    # each block keeps its tasks' draw ids
    assert sub_shards(Shard((0, 1, 2), 4, 6, (7, 8, 9)), 4) == [Shard((0, 1), 4, 6, (7, 8)), Shard((2,), 4, 6, (9,))]
    assert sub_shards(Shard((4, 5), 0, 4, (1, 2)), 3) == [Shard((4,), 0, 3, (1,)), Shard((4,), 3, 4, (1,)),
                                                         Shard((5,), 0, 3, (2,)), Shard((5,), 3, 4, (2,))]


def _recording(family, log):
    """``family.make_vector`` wrapped: records each env's size and close, adds a ``success`` flag."""
    make = family.make_vector

    class Recorded:
        def __init__(self, tasks):
            self.env = make(tasks)
            log.append(["made", len(tasks)])

        def reset(self, seeds):
            return self.env.reset(seeds)

        def step(self, actions):
            obs, rewards, terminated = self.env.step(actions)
            self.success = obs[:, 0] > 0  # a flag that changes from step to step
            return obs, rewards, terminated

        def close(self):
            log[-1].append("closed")

    return Recorded


def _params(family, n, dtype):
    torch.manual_seed(3)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (5,), "tanh", init_log_std=-0.5)
    g = torch.Generator().manual_seed(4)
    return policy, {k: (v.detach() + 0.2 * torch.randn((n, *v.shape), generator=g)).numpy().astype(dtype)
                    for k, v in policy.params().items()}


def test_blocks_with_an_episode_offset_match_one_block_and_close_their_envs(monkeypatch):
    register_family("Nav3W", Nav3Env, horizon=9)
    blocked, whole = envs.make_family("Nav3W"), envs.make_family("Navigation2D", horizon=9)
    tasks = whole.sample_tasks(3, np.random.default_rng(0))
    policy, params = _params(whole, 3, np.float32)
    spec = PolicySpec.of(policy)
    log: list[list] = []
    monkeypatch.setattr(blocked, "make_vector", _recording(blocked, log))
    shard = Shard((0, 2), 2, 6)  # 4 episodes per task: blocks of episode ranges [2, 5), [5, 6)
    a = RolloutWorker(blocked, spec).rollout(tasks, params, shard, 5)
    assert log == [["made", 3, "closed"], ["made", 1, "closed"], ["made", 3, "closed"], ["made", 1, "closed"]]
    b = RolloutWorker(whole, spec).rollout(tasks, params, shard, 5)
    log.clear()
    two = RolloutWorker(blocked, spec).rollout(tasks, params, Shard((0, 1), 0, 2), 5)  # two blocks of 2 envs
    assert log == [["made", 2, "closed"], ["made", 2, "closed"]]
    np.testing.assert_array_equal(two["obs"], RolloutWorker(whole, spec).rollout(tasks, params, Shard((0, 1), 0, 2),
                                                                                 5)["obs"])
    assert set(a) == {"obs", "actions", "rewards", "mask", "success"} and set(b) == set(a) - {"success"}
    for k, v in b.items():
        assert a[k].dtype == np.float32 and a[k].shape == v.shape, k
        np.testing.assert_array_equal(a[k], v, k)
    assert a["success"].dtype == np.float32 and a["success"].shape == (2, 9, 4)
    live = a["mask"] > 0
    assert not a["success"][~live].any()
    # success of step t is the flag after the step: the next observation's sign, on live steps
    nxt = a["obs"][:, 1:, :, 0] > 0
    np.testing.assert_array_equal(a["success"][:, :-1][live[:, 1:]], nxt[live[:, 1:]].astype(np.float32))


def test_actions_are_the_float32_mean_plus_the_float32_scaled_noise():
    family = envs.make_family("Navigation2D", horizon=7)
    tasks = family.sample_tasks(2, np.random.default_rng(1))
    policy, params = _params(family, 2, np.float64)  # float64 parameters are cast to float32 first
    out = RolloutWorker(family, PolicySpec.of(policy)).rollout(tasks, params, Shard((0, 1), 1, 4), 9)
    assert all(v.dtype == np.float32 for v in out.values())
    p32 = {k: torch.as_tensor(v.astype(np.float32)) for k, v in params.items()}
    names = policy.layer_names()
    obs = torch.as_tensor(out["obs"])  # (n, T, b, obs_dim)
    for t in range(7):
        mlp = RowwiseMLP([p32[f"{k}.weight"] for k in names], [p32[f"{k}.bias"] for k in names], "tanh", 3)
        with torch.inference_mode():
            mean = mlp(obs[:, t].contiguous()).clone()
        noise = torch.as_tensor(np.stack([np.stack([episode_draws(9, i, e, 7, family.act_dim)[1][t]
                                                    for e in (1, 2, 3)]) for i in (0, 1)]))
        expected = mean + torch.exp(p32["log_std"]).unsqueeze(1) * noise
        live = torch.as_tensor(out["mask"][:, t] > 0)
        assert torch.equal(torch.as_tensor(out["actions"][:, t])[live], expected[live]), t
