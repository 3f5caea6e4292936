"""Edges of the episode maths and the baseline that the mutation run found unpinned:
several tasks at once, tasks with a single step, non-finite tasks, float32 batches,
long horizons."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl import baselines
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
