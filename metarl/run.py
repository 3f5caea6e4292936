"""What every command shares about a run: seed streams, builders, returns, result files.

Training (:mod:`metarl.trainer`), evaluation (:mod:`metarl.evaluation`), the
analysis (:mod:`metarl.analysis`), the command line and the experiment
scripts all build a run's family, learner and sampler, and draw its random
numbers, through this module, so they agree on them.  The run directory
itself (layout, config, checkpoints, modules) is :mod:`metarl.rundir`'s.

Random streams: everything random is derived from ``(seed, stream, index)``
with the stream ids below, so a run resumed from a checkpoint continues
exactly as if it had never stopped, and every method evaluated with the same
seed sees the same held-out tasks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs.base import TaskFamily
from envs.oracle import OracleFamily
from metarl.adaptation import adapt_names
from metarl.algos import ALGOS, MetaLearner
from metarl.algos.base import section_name
from metarl.config import Config, resolve_device
from metarl.episodes import EpisodeBatch
from metarl.fileio import atomic_write
from metarl.policies import GaussianGRUPolicy, GaussianMLPPolicy
from metarl.sampling import BACKENDS, PolicySpec, Sampler, make_sampler

TASKS, TRAIN, VALID, EVAL_TASKS, EVAL_ROLLOUTS = range(5)
"""Stream ids: training tasks, train and valid rollouts (index: the iteration),
held-out tasks (index 0) and evaluation rollouts (index: the inner step)."""
OUTER_ROLLOUTS = 10
"""Stream id of the rollouts an outer loop makes itself (ES candidates; index: the iteration). Elsewhere:
shots 6, videos 7, protocols 8, ES candidates' noise 9."""


# -- seed streams -------------------------------------------------------------------

def derive_seed(seed: int, stream: int, index: int) -> int:
    """A 31-bit seed for ``(seed, stream, index)``."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0] >> 1)


def stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of ``(seed, stream, index)``."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


def held_out_tasks(family: TaskFamily, num_tasks: int, seed: int) -> list[dict[str, Any]]:
    """``num_tasks`` tasks from the evaluation stream, which training never uses."""
    return family.sample_tasks(num_tasks, stream_rng(seed, EVAL_TASKS, 0))


# -- builders -----------------------------------------------------------------------

def build_family(cfg: Config) -> TaskFamily:
    """The configured task family; ``env.oracle`` wraps it in :class:`envs.oracle.OracleFamily`."""
    family = envs.make_family(cfg.env.family, horizon=cfg.env.horizon, **cfg.env.kwargs)
    return OracleFamily.wrap(family) if cfg.env.oracle else family


def build_learner(cfg: Config, family: TaskFamily, device: torch.device | str = "cpu",
                  fresh: bool = False) -> MetaLearner:
    """Policy (initialised from ``cfg.seed``) and the meta-learner ``algo.name`` for ``cfg``, on ``device``;
    with ``fresh``, as a new run starts (:meth:`MetaLearner.start_fresh`, e.g. ``es.init_from`` read), else
    ready for a checkpoint to be restored into.

    Built on CPU (the same initial parameters on every device) and then moved. Training passes the run's
    :func:`learner_device`; evaluation and analysis keep the default CPU, wherever the run was trained."""
    torch.manual_seed(cfg.seed)
    learner = ALGOS[cfg.algo.name]
    p = cfg.policy
    policy: GaussianMLPPolicy | GaussianGRUPolicy
    if getattr(p, "kind", "mlp") == "gru":  # RL²: the hidden state spans the outer loop's trials
        policy = GaussianGRUPolicy(family.obs_dim, family.act_dim, p.hidden_sizes, p.activation, p.gru_size,
                                   p.init_log_std, learner.episodes_per_trial(cfg))
    else:
        policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, p.hidden_sizes, p.activation, p.init_log_std,
                                   p.context_size if p.adapt == "context" else 0)
    built = learner.from_config(cfg, policy, adapt_names(policy, p.adapt))
    if fresh:
        built.start_fresh()
    return built.to(device)


def learner_device(cfg: Config) -> torch.device:
    """The device the run's learner trains on (``cfg.device``; :class:`metarl.config.ConfigError` for a
    CUDA device this machine lacks)."""
    return resolve_device(cfg.device)


def build_sampler(cfg: Config, family: TaskFamily, policy: GaussianMLPPolicy | GaussianGRUPolicy) -> Sampler:
    """The configured sampler backend for ``policy``'s architecture."""
    s = cfg.sampler
    section = section_name(s.backend, BACKENDS.get(s.backend))
    return make_sampler(s.backend, family, PolicySpec.of(policy), workers=s.workers, ray_address=s.ray_address,
                        hang_timeout=s.hang_timeout, settings=getattr(cfg, section) if section else None)


# -- returns and results ------------------------------------------------------------

def mean_return(batch: EpisodeBatch) -> float:
    """Mean undiscounted episode return over all tasks and episodes."""
    return float(batch.episode_returns().mean())


def episode_mean_returns(batch: EpisodeBatch) -> np.ndarray:
    """Mean undiscounted episode return per task: ``(N,)``."""
    return batch.episode_returns().mean(1).numpy()


def mean_stderr(values: np.ndarray, axis: int = 0) -> tuple[list[float], list[float]]:
    """Mean and standard error (``ddof=1``) along ``axis``; zero error for one sample."""
    values = np.asarray(values)
    n = values.shape[axis]
    mean = values.mean(axis=axis)
    stderr = values.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
    return [float(m) for m in np.atleast_1d(mean)], [float(s) for s in np.atleast_1d(stderr)]


def jsonable(x: Any) -> Any:
    """``x`` with tuples, arrays, tensors and numpy scalars as JSON-ready values."""
    if isinstance(x, Mapping):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray | torch.Tensor):
        return np.asarray(x).tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def write_json(path: Path, result: Any, indent: int | None = None) -> Path:
    """Write ``result`` as JSON atomically (the old file or the new one, never half of one)."""
    return atomic_write(path, json.dumps(jsonable(result), indent=indent))
