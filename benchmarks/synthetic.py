"""Synthetic data shaped like the real thing, for benchmarks (and the tests that check them)."""

from __future__ import annotations

import numpy as np


def ant_like_arrays(n=3, t=100, b=5, seed=0):
    """Observations shaped like Ant's: positions and velocities of order 1-10, and contact forces that are
    clipped to [-1, 1] and mostly exactly zero (whole columns of zeros among them)."""
    rng = np.random.default_rng(seed)
    joints = rng.normal(size=(n, t, b, 29)) * np.r_[np.ones(15), 8.0 * np.ones(14)]
    contact = np.clip(rng.normal(size=(n, t, b, 78)) * 3.0, -1, 1) * (rng.random(size=(n, t, b, 78)) < 0.05)
    contact[..., :30] = 0.0  # bodies that never touch anything
    obs = np.concatenate([joints, contact, rng.normal(size=(n, t, b, 12))], axis=-1)
    rewards = rng.normal(size=(n, t, b)) + 0.1 * joints[..., 15] + 0.05 * joints[..., 16] ** 2
    mask = np.ones((n, t, b))
    mask[1, 60:, 2] = 0.0
    return obs, rewards * mask, mask
