"""Statistics over seeds: percentile-bootstrap confidence intervals of the mean, interquartile mean.

A handful of seeds is the usual budget in meta-RL, so intervals matter more
than a ± std.  ``bootstrap_ci`` resamples the seeds with replacement
(``n_boot`` times, from a generator seeded by ``seed`` so tables are
reproducible) and takes the percentile interval of the resampled means.
Conventions: fewer than two values give ``(nan, nan)`` (no interval from one
seed); non-finite values are an error.  ``iqm`` is the mean of the middle
50% (the values left after trimming a quarter from each end, with the
boundary values weighted fractionally, as in Agarwal et al. 2021), defined
for any non-empty input; callers report it from 5 seeds on.

Written here rather than taken from ``rliable``: rliable installs pandas,
seaborn and arch for what is two small functions at this scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IQM_MIN_SEEDS = 5


def _values(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"seed statistics need finite values, got {x.tolist()}")
    return x


def bootstrap_ci(values: Sequence[float] | np.ndarray, level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap ``level`` interval of the mean of ``values`` (one per seed)."""
    x = _values(values)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci_curves(curves: np.ndarray, level: float = 0.95, n_boot: int = 2_000,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_ci` at every step of ``curves (seeds, steps)``, with one resampling of the seeds."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"curves must be (seeds, steps), got shape {c.shape}")
    if c.shape[0] < 2:
        nan = np.full(c.shape[1], np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.shape[0], size=(n_boot, c.shape[0]))
    means = c[idx].mean(axis=1)  # (n_boot, steps)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2], axis=0)
    return lo, hi


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of ``values``, boundary values weighted fractionally."""
    x = np.sort(_values(values))
    n = len(x)
    if n == 0:
        raise ValueError("iqm of no values")
    # each value covers [i/n, (i+1)/n] of the distribution; average the part inside [1/4, 3/4]
    edges = np.arange(n + 1) / n
    weights = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return float(np.sum(weights * x) / np.sum(weights))
