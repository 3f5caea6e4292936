"""Bootstrap confidence intervals and the interquartile mean against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from metarl.seedstats import bootstrap_ci, bootstrap_ci_curves, iqm


def test_bootstrap_ci_matches_a_hand_computation_with_a_fixed_seed():
    x = np.array([1.0, 2.0, 3.0, 10.0])
    rng = np.random.default_rng(7)
    means = np.array([x[rng.integers(0, 4, size=4)].mean() for _ in range(500)])
    want = (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert bootstrap_ci(x, n_boot=500, seed=7) == pytest.approx(want, abs=1e-12)
    lo, hi = bootstrap_ci(x, level=0.5, n_boot=500, seed=7)
    assert (lo, hi) == pytest.approx((np.percentile(means, 25), np.percentile(means, 75)), abs=1e-12)


def test_bootstrap_ci_conventions():
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert all(np.isnan(v) for v in bootstrap_ci([5.0]))
    lo, hi = bootstrap_ci([0.0, 1.0, 2.0, 3.0, 4.0], n_boot=20_000)
    assert 0.0 < lo < 2.0 < hi < 4.0  # inside the data's range, around the mean
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_curve_intervals_equal_per_step_intervals_with_the_same_resampling():
    curves = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 6.0], [4.0, 1.0, 9.0]])
    lo, hi = bootstrap_ci_curves(curves, n_boot=300, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 3, size=(300, 3))
    for j in range(3):
        means = curves[idx, j].mean(axis=1)
        assert lo[j] == pytest.approx(np.percentile(means, 2.5)) and hi[j] == pytest.approx(np.percentile(means, 97.5))
    assert lo[1] == hi[1] == 1.0


@pytest.mark.parametrize("values,want", [
    ([1, 2, 3, 4], 2.5),               # the middle two
    ([1, 2, 3, 4, 100], 3.0),          # 0.15*2 + 0.2*3 + 0.15*4 over 0.5: the outlier has no weight
    (list(range(1, 9)), 4.5),          # 3..6
    ([7.0], 7.0),
    ([4, 1, 3, 2], 2.5),               # order does not matter
])
def test_iqm_by_hand(values, want):
    assert iqm(values) == pytest.approx(want)
