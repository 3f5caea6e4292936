"""Sampled episodes replayed on single gymnasium envs.

Every (task, episode) of a batch is replayed on ``family.make_env(task)``,
reset with the episode's reset seed (from :func:`episode_draws`, the
worker's own helper) and stepped with the recorded actions.  The replay must
give the recorded observations and rewards, and the mask must be 1 up to and
including the step on which the single env terminates and 0 after it.  The
actions must be the policy mean plus the episode's noise, and that noise
must differ between tasks, between episodes and between the train and valid
streams of an iteration.

This is a reference outside the rollout worker: the serial and local
samplers run the same worker, so comparing them with each other cannot find
a bug inside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch

import envs
from envs.oracle import OracleFamily
from metarl.config import load_config
from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianMLPPolicy, stack_params
from metarl.sampling import PolicySpec, Sampler, SerialSampler
from metarl.sampling.local import LocalSampler
from metarl.sampling.worker import episode_draws
from metarl.trainer import Trainer

SHIPPED = [n for n in envs.family_names() if envs.make_family(n).env_cls.__module__.startswith("envs.")]
TERMINATING = {"AntDir", "AntDir2D", "AntGoal", "AntVel", "HopperParams", "Walker2dParams", "Navigation2D"}
KWARGS = {"Navigation2D": {"goal_tolerance": 0.3}}  # some goals are reached within the horizon
# the families that never terminate run a short horizon; the others run until they terminate (default horizon).
# Meta-World's 500-step limit itself is tested in test_metaworld.py.
HORIZON = {"HalfCheetahDir": 25, "HalfCheetahVel": 25, "MetaWorldML1": 30, "MetaWorldML10": 30}
LOCAL_IN_CI = {"HopperParams"}  # the other families' local runs are slow-marked (the same worker code)


def family_for(name: str, oracle: bool = False) -> envs.TaskFamily:
    family = envs.make_family(name, horizon=HORIZON.get(name), **KWARGS.get(name, {}))
    return OracleFamily.wrap(family) if oracle else family


def policy_for(family: envs.TaskFamily, seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (8,), "tanh", init_log_std=-0.2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name != "log_std":
                p.add_(0.2 * torch.randn_like(p))
    return policy


def per_task_params(policy: GaussianMLPPolicy, n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Distinct parameters for each of ``n`` tasks (as after adaptation)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v.detach() + 0.1 * torch.randn((n, *v.shape), generator=g) for k, v in policy.params().items()}


def replay(family: envs.TaskFamily, tasks: Sequence[Mapping], batch: EpisodeBatch, seed: int) -> int:
    """Replay every episode of ``batch`` on single envs; returns how many terminated."""
    n, horizon, b = batch.rewards.shape
    assert horizon == family.horizon
    obs, actions = batch.obs.numpy(), batch.actions.numpy()
    rewards, mask = batch.rewards.numpy(), batch.mask.numpy()
    terminated_episodes = 0
    for i in range(n):
        for e in range(b):
            reset_seed, _ = episode_draws(seed, i, e, horizon, family.act_dim)
            env = family.make_env(tasks[i])
            o, _ = env.reset(seed=reset_seed)
            where = f"task {i} episode {e}"
            np.testing.assert_array_equal(obs[i, 0, e], np.asarray(o, dtype=np.float32).reshape(-1), where)
            end = horizon
            for t in range(horizon):
                assert mask[i, t, e] == 1.0, f"{where}: step {t} happened but is masked"
                o, r, term, _, _ = env.step(actions[i, t, e])
                assert rewards[i, t, e] == np.float32(r), f"{where}, step {t}"
                if term:
                    end = t + 1
                    terminated_episodes += 1
                    break
                if t + 1 < horizon:
                    np.testing.assert_array_equal(obs[i, t + 1, e], np.asarray(o, dtype=np.float32).reshape(-1),
                                                  f"{where}, step {t + 1}")
            assert np.all(mask[i, end:, e] == 0.0), f"{where}: steps after termination at {end - 1} are unmasked"
            assert np.all(rewards[i, end:, e] == 0.0), where
    return terminated_episodes


def recovered_noise(policy: GaussianMLPPolicy, params: Mapping[str, torch.Tensor], batch: EpisodeBatch) -> np.ndarray:
    """``(a - mu(s)) / sigma`` on every step: ``(N, T, B, act_dim)``."""
    n = batch.num_tasks
    stacked = stack_params(params, policy.params(), n)
    with torch.no_grad():
        mean, log_std = policy(batch.flat_obs(), stacked)
        z = (batch.flat_actions() - mean) / torch.exp(log_std)
    return z.reshape(batch.actions.shape).numpy()


def check_noise(policy, params, batch: EpisodeBatch, seed: int) -> np.ndarray:
    """The actions are mean + std * the episodes' own noise, distinct per task and episode."""
    z = recovered_noise(policy, params, batch)
    n, horizon, b = batch.rewards.shape
    mask = batch.mask.numpy().astype(bool)
    for i in range(n):
        for e in range(b):
            _, noise = episode_draws(seed, i, e, horizon, policy.act_dim)
            np.testing.assert_allclose(z[i, mask[i, :, e], e], noise[mask[i, :, e]], rtol=1e-3, atol=1e-3)
    first = z[:, 0]  # the first step always happened: (N, B, act_dim)
    for i in range(n):
        for j in range(n):
            for e in range(b):
                for f in range(b):
                    if (i, e) != (j, f):
                        assert np.abs(first[i, e] - first[j, f]).max() > 1e-3, \
                            f"task {i} episode {e} and task {j} episode {f} share their noise"
    return z


def sample_and_replay(family: envs.TaskFamily, sampler: Sampler, name: str) -> None:
    policy = policy_for(family)
    tasks = family.sample_tasks(3, np.random.default_rng(2))
    terminated = 0
    for seed, params in ((11, policy.params()), (12, per_task_params(policy, 3))):
        batch = sampler.sample(tasks, params, 2, seed)
        terminated += replay(family, tasks, batch, seed)
        check_noise(policy, params, batch, seed)
    if name in TERMINATING:  # the terminating step was reached and checked
        assert terminated > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_serial_batches_replay_on_single_envs(name):
    family = family_for(name)
    sample_and_replay(family, SerialSampler(family, PolicySpec.of(policy_for(family)), shards=2), name)


def test_oracle_batches_replay_on_single_envs():
    family = family_for("HopperParams", oracle=True)
    sample_and_replay(family, SerialSampler(family, PolicySpec.of(policy_for(family))), "HopperParams")


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in LOCAL_IN_CI else pytest.mark.slow)
                                  for n in SHIPPED])
def test_local_sampler_batches_replay_on_single_envs(name):
    family = family_for(name)
    with LocalSampler(family, PolicySpec.of(policy_for(family)), workers=2) as sampler:
        sample_and_replay(family, sampler, name)


class RecordingSampler(Sampler):
    """Runs another sampler and keeps every call's tasks, parameters, seed and batch."""

    def __init__(self, inner: Sampler):
        super().__init__(inner.family, inner.spec)
        self.inner = inner
        self.calls: list[tuple[list, dict[str, torch.Tensor], int, EpisodeBatch]] = []

    def sample(self, tasks, params, episodes_per_task, seed):
        batch = self.inner.sample(tasks, params, episodes_per_task, seed)
        self.calls.append((list(tasks), {k: v.detach().clone() for k, v in params.items()}, int(seed), batch))
        return batch

    def _dispatch(self, tasks, params, shards, seed):  # pragma: no cover - sample is overridden
        raise NotImplementedError


def test_train_and_valid_rollouts_of_an_iteration_replay_with_distinct_noise(tmp_path):
    cfg = load_config(None, ["env.family=HopperParams", "algo.meta_batch_size=2", "algo.episodes_per_task=2",
                             "policy.hidden_sizes=[8]", "sampler.backend=serial", "iterations=2"])
    trainer = Trainer(cfg, tmp_path)
    sampler = RecordingSampler(SerialSampler(trainer.family, PolicySpec.of(trainer.learner.policy)))
    trainer.sampler = sampler
    for iteration in range(2):
        trainer.run_iteration(iteration)
    assert len(sampler.calls) == 4  # train and valid of each iteration
    noises = []
    for tasks, params, seed, batch in sampler.calls:
        replay(trainer.family, tasks, batch, seed)
        noises.append(check_noise(trainer.learner.policy, params, batch, seed))
    # the valid batch has its own noise, not the train batch's again, and so does every iteration
    for a in range(len(noises)):
        for b in range(a + 1, len(noises)):
            assert np.abs(noises[a][:, 0] - noises[b][:, 0]).max() > 1e-3, (a, b)
    # the valid batch was collected with the adapted (per-task) parameters
    _, valid_params, _, _ = sampler.calls[1]
    assert valid_params["body.0.weight"].shape[0] == 2
