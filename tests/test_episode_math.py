"""Edges of the episode maths and the baseline that the mutation run found unpinned:
several tasks at once, tasks with a single step, non-finite tasks, float32 batches,
long horizons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl import baselines, episodes
from metarl.episodes import EpisodeBatch, discount_matrix, masked_task_mean, normalize


def batch_of(obs, rewards, mask, dtype=torch.float64) -> EpisodeBatch:
    n, t, b = rewards.shape
    return EpisodeBatch(torch.tensor(obs, dtype=dtype), torch.zeros(n, t, b, 1, dtype=dtype),
                        torch.tensor(rewards * mask, dtype=dtype), torch.tensor(mask, dtype=dtype))


def random_arrays(n=3, t=12, b=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, t, b))
    mask[0, 7:, 1] = 0.0
    return rng.normal(size=(n, t, b, d)), rng.normal(size=(n, t, b)), mask


def test_discount_matrix_is_exact_in_double_precision_over_long_horizons():
    d = discount_matrix(400, 0.999, torch.float64).numpy()
    for t, s in [(0, 399), (3, 250), (10, 10), (17, 300)]:
        assert d[t, s] == pytest.approx(0.999 ** (s - t), rel=1e-13)
    assert d[5, 4] == 0.0


def test_episode_returns_and_task_slices():
    obs, rewards, mask = random_arrays()
    batch = batch_of(obs, rewards, mask)
    want = [[sum(rewards[i, t, e] for t in range(12) if mask[i, t, e]) for e in range(3)] for i in range(3)]
    np.testing.assert_allclose(batch.episode_returns().numpy(), want, rtol=1e-12)
    part = batch.tasks(1, 3)
    for name in ("obs", "actions", "rewards", "mask"):
        assert torch.equal(getattr(part, name), getattr(batch, name)[1:3]), name


def test_normalize_and_task_means_are_per_task_and_handle_single_steps():
    x = torch.tensor([[1.0, 3.0], [10.0, 30.0], [5.0, 7.0]], dtype=torch.float64).view(3, 2, 1)
    m = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]], dtype=torch.float64).view(3, 2, 1)
    out = normalize(x, m).view(3, 2)
    torch.testing.assert_close(out[:2], torch.tensor([[-1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    assert out[2].tolist() == [0.0, 0.0]  # one step: itself minus its mean
    torch.testing.assert_close(masked_task_mean(x, m), torch.tensor([2.0, 20.0, 5.0], dtype=torch.float64))


def test_baseline_fits_every_task_alone_and_marks_non_finite_tasks_nan():
    obs, rewards, mask = random_arrays(n=4)
    rewards[1, 4, 0] = np.nan  # a non-finite reward
    obs[2, 3, 2, 1] = np.inf  # a non-finite observation
    values = baselines.fit_predict(batch_of(obs, rewards, mask), 0.9).numpy()
    for i in (0, 3):
        alone = baselines.fit_predict(batch_of(obs[i:i + 1], rewards[i:i + 1], mask[i:i + 1]), 0.9).numpy()
        np.testing.assert_allclose(values[i], alone[0], rtol=1e-9, atol=1e-9)
        assert np.all(np.isfinite(values[i]))
    assert np.all(np.isnan(values[1])) and np.all(np.isnan(values[2]))


def test_baseline_of_a_float32_batch_is_the_double_precision_fit():
    obs, rewards, mask = random_arrays()
    single = baselines.fit_predict(batch_of(obs, rewards, mask, torch.float32), 0.95)
    assert single.dtype == torch.float32
    double = baselines.fit_predict(batch_of(obs.astype(np.float32), (rewards * mask).astype(np.float32), mask), 0.95)
    np.testing.assert_allclose(single.numpy(), double.numpy().astype(np.float32), rtol=1e-6, atol=1e-6)


def test_baseline_features_are_exact_in_double_precision():
    obs = torch.randn(2, 150, 3, 2, dtype=torch.float64)
    mask = torch.ones(2, 150, 3, dtype=torch.float64)
    f = baselines.features(obs, mask)
    assert f.dtype == torch.float64 and f.shape == (2, 150, 3, 8)
    for t in (0, 1, 37, 149):
        u = t / 100.0
        assert f[1, t, 2, 4:].tolist() == [u, u**2, u**3, 1.0]
    assert torch.equal(f[..., :2], obs) and torch.equal(f[..., 2:4], obs * obs)


def test_task_slices_carry_success_and_episode_success_ignores_masked_steps():
    obs, rewards, mask = random_arrays(n=3, t=5, b=2)
    mask[1, 3:, 0] = 0.0
    success = np.zeros((3, 5, 2))
    success[0, 2, 1] = 1.0  # live step: counts
    success[1, 4, 0] = 1.0  # after termination: ignored
    success[2, 0, 0] = success[2, 4, 1] = 1.0
    batch = batch_of(obs, rewards, mask)
    assert batch.success is None and batch.episode_success() is None
    assert batch.tasks(0, 2).success is None
    batch.success = torch.tensor(success)
    part = batch.tasks(1, 3)
    assert part.success is not None and torch.equal(part.success, batch.success[1:3])
    got = batch.episode_success()
    assert got is not None and got.shape == (3, 2)
    assert got.tolist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert part.episode_success().tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_returns_and_advantages_of_float32_rewards_are_float32():
    _, rewards, mask = random_arrays()
    values = np.random.default_rng(1).normal(size=rewards.shape)
    r64, m64, v64 = (torch.tensor(a) for a in (rewards * mask, mask, values))
    r32, m32, v32 = (a.float() for a in (r64, m64, v64))
    g = episodes.discounted_returns(r32, m32, 0.97)
    a = episodes.gae(r32, v32, m32, 0.97, 0.9)
    assert g.dtype == torch.float32 and a.dtype == torch.float32
    torch.testing.assert_close(g.double(), episodes.discounted_returns(r64, m64, 0.97), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.double(), episodes.gae(r64, v64, m64, 0.97, 0.9), rtol=1e-5, atol=1e-5)


def test_normalize_divides_by_std_plus_eps_for_nearly_constant_values():
    # std == eps: (x - mean) / (std + eps) = +-1/2, finite, not +-inf
    x = torch.tensor([0.0, 2e-8], dtype=torch.float64).view(1, 2, 1)
    out = normalize(x, torch.ones_like(x)).view(2)
    torch.testing.assert_close(out, torch.tensor([-0.5, 0.5], dtype=torch.float64), rtol=1e-6, atol=0)


def test_baseline_with_a_strong_ridge_is_the_closed_form_ridge_solution():
    obs, rewards, mask = random_arrays()
    gamma, reg = 0.9, 30.0
    n, t, b, _ = obs.shape
    want = np.zeros((n, t, b))
    for i in range(n):
        rows, ys = [], []
        for s in range(t):
            for e in range(b):
                u = s / 100.0
                rows.append(np.concatenate([obs[i, s, e], obs[i, s, e] ** 2, [u, u * u, u**3, 1.0]]) * mask[i, s, e])
                ys.append(sum(gamma ** (k - s) * rewards[i, k, e] * mask[i, k, e] for k in range(s, t)) * mask[i, s, e])
        x, y = np.array(rows), np.array(ys)
        w = np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ y)
        want[i] = (x @ w).reshape(t, b) * mask[i]
    got = baselines.fit_predict(batch_of(obs, rewards, mask), gamma, reg).numpy()
    # the ridge is applied in float64: a float32 sqrt(reg) moves these values by ~1e-7 relative
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_baseline_of_float32_observations_is_the_float64_fit():
    obs, rewards, mask = random_arrays()
    obs = obs.astype(np.float32).astype(np.float64)  # values exact in both precisions
    wide = batch_of(obs, rewards, mask)
    narrow = EpisodeBatch(wide.obs.float(), wide.actions, wide.rewards, wide.mask)
    # features in float32 (obs^2, t/100) move these values by ~1e-6 relative; LAPACK noise is ~1e-14
    torch.testing.assert_close(baselines.fit_predict(narrow, 0.95), baselines.fit_predict(wide, 0.95),
                               rtol=1e-10, atol=1e-12)
