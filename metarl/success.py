"""Success rates of episodes whose env reports ``info["success"]`` (pure functions).

An episode succeeds if the env reported success at any of its live steps
(Meta-World's convention).  Batches of families that do not report success
carry ``success=None``; the functions here then return nothing (or raise, for
the ones that need it).
"""

from __future__ import annotations

import numpy as np

from metarl.episodes import EpisodeBatch


def success_rate(batch: EpisodeBatch) -> float:
    """Fraction of all episodes of ``batch`` that succeeded; ValueError if the family reports no success."""
    per_episode = batch.episode_success()
    if per_episode is None:
        raise ValueError("these episodes carry no success flags (the family does not report info['success'])")
    return float(per_episode.mean())


def task_success_rates(batch: EpisodeBatch) -> np.ndarray:
    """Per-task fraction of successful episodes: ``(N,)``."""
    per_episode = batch.episode_success()
    if per_episode is None:
        raise ValueError("these episodes carry no success flags (the family does not report info['success'])")
    return per_episode.double().mean(1).cpu().numpy()


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of a flat sample (:func:`metarl.run.mean_stderr`)."""
    from metarl.run import mean_stderr

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_and_stderr of no values")
    mean, stderr = mean_stderr(x, axis=0)
    return mean[0], stderr[0]


def success_scalars(train: EpisodeBatch, valid: EpisodeBatch | None) -> dict[str, float]:
    """``returns/success_pre`` and ``returns/success_post`` for a training iteration ({} without flags).

    ``success_post`` is NaN when the adapted policies were never rolled out.
    """
    if train.success is None:
        return {}
    post = success_rate(valid) if valid is not None and valid.success is not None else float("nan")
    return {"returns/success_pre": success_rate(train), "returns/success_post": post}
