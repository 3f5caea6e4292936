"""What every command shares about a run: seed streams, builders, loading, results.

A run directory ``runs/<family>__<name>__<seed>__<time>/`` holds
``config.yaml``, TensorBoard events, ``scalars.csv``, ``checkpoints/``
(atomic writes, ``latest`` pointer) and ``eval/``.  Training
(:mod:`metarl.trainer`), evaluation (:mod:`metarl.evaluation`), the analysis
(:mod:`metarl.analysis`), the command line and the experiment scripts all
build a run's family, learner and sampler, and draw its random numbers,
through this module, so they agree on them.

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
from typing import Any, NamedTuple

import numpy as np
import torch

import envs
from envs.base import TaskFamily
from envs.oracle import OracleFamily
from metarl import checkpoint
from metarl.adaptation import adapt_names
from metarl.algos import ALGOS, MetaLearner
from metarl.algos.base import section_name
from metarl.config import Config, ConfigError, load_config
from metarl.episodes import EpisodeBatch
from metarl.fileio import atomic_write
from metarl.policies import GaussianMLPPolicy
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


def build_learner(cfg: Config, family: TaskFamily) -> MetaLearner:
    """Policy (initialised from ``cfg.seed``) and the meta-learner ``algo.name`` for ``cfg``."""
    torch.manual_seed(cfg.seed)
    policy = GaussianMLPPolicy(family.obs_dim, family.act_dim, cfg.policy.hidden_sizes, cfg.policy.activation,
                               cfg.policy.init_log_std, cfg.policy.context_size if cfg.policy.adapt == "context" else 0)
    return ALGOS[cfg.algo.name].from_config(cfg, policy, adapt_names(policy, cfg.policy.adapt))


def build_sampler(cfg: Config, family: TaskFamily, policy: GaussianMLPPolicy) -> Sampler:
    """The configured sampler backend for ``policy``'s architecture."""
    s = cfg.sampler
    section = section_name(s.backend, BACKENDS.get(s.backend))
    return make_sampler(s.backend, family, PolicySpec.of(policy), workers=s.workers, ray_address=s.ray_address,
                        hang_timeout=s.hang_timeout, settings=getattr(cfg, section) if section else None)


# -- loading ------------------------------------------------------------------------

def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_state(run_dir: Path) -> dict[str, Any] | None:
    """The state of the run's latest checkpoint (``iteration``, ``meta``, ...), or None."""
    path = checkpoint.latest(checkpoint_dir(run_dir))
    return None if path is None else checkpoint.load(path)


def best_return(run_dir: Path) -> float:
    """The post-adaptation training return of the run's best-iteration checkpoint (-inf without one)."""
    path = checkpoint_dir(run_dir) / checkpoint.BEST
    if not path.is_file():
        return -math.inf
    return float(checkpoint.load(path).get("best_return", -math.inf))


def done_iterations(run_dir: Path) -> int | None:
    """Iterations completed at the latest checkpoint (None: no checkpoint)."""
    state = latest_state(run_dir)
    return None if state is None else int(state["iteration"])


def kept_iterations(run_dir: Path) -> list[int]:
    """The iterations of the checkpoints ``run_dir`` holds, ascending."""
    its = (checkpoint.iteration_of(p.name) for p in checkpoint_dir(run_dir).glob("iter_*.pt"))
    return sorted(i for i in its if i is not None)


def kept_budgets(run_dir: Path) -> dict[int, Path]:
    """The ``eval/iter_NNNNNN/`` directories of a run extended past budgets it had finished (each holds
    the evaluations made at that iteration), by iteration, ascending."""
    dirs = ((checkpoint.iteration_of(d.name), d) for d in (Path(run_dir) / "eval").glob("iter_*") if d.is_dir())
    return dict(sorted((i, d) for i, d in dirs if i is not None))


def state_at(run_dir: Path, iteration: int | str | None = None) -> dict[str, Any] | None:
    """The state of the run's checkpoint at ``iteration`` (None: the latest; ``"best"``: the best training
    iteration's, :data:`metarl.checkpoint.BEST`), or None when there is no checkpoint at all. A missing
    ``iteration`` raises FileNotFoundError naming the ones the run keeps."""
    if iteration is None:
        return latest_state(run_dir)
    if iteration == "best":
        path = checkpoint_dir(run_dir) / checkpoint.BEST
        if not path.is_file():
            raise FileNotFoundError(f"no best-iteration checkpoint ({checkpoint.BEST}) in {checkpoint_dir(run_dir)}")
        return checkpoint.load(path)
    path = checkpoint_dir(run_dir) / checkpoint.file_name(iteration)
    if not path.is_file():
        kept = ", ".join(map(str, kept_iterations(run_dir))) or "none"
        raise FileNotFoundError(f"no checkpoint at iteration {iteration} in {checkpoint_dir(run_dir)} "
                                f"(it keeps: {kept})")
    return checkpoint.load(path)


class LoadedRun(NamedTuple):
    """A run directory's config, family and learner, restored from the checkpoint at ``iteration``."""

    cfg: Config
    family: TaskFamily
    learner: MetaLearner
    iteration: int


def load_run(run_dir: Path, iteration: int | str | None = None) -> LoadedRun:
    """Config, family, learner (at the latest checkpoint, or the one at ``iteration``, ``"best"`` included)
    and its iteration."""
    cfg = load_config(Path(run_dir) / "config.yaml")
    family = build_family(cfg)
    learner = build_learner(cfg, family)
    state = state_at(run_dir, iteration)
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    restore(learner, state, checkpoint_dir(run_dir))
    return LoadedRun(cfg, family, learner, int(state["iteration"]))


def restore(learner: MetaLearner, state: Mapping[str, Any], where: Path) -> None:
    """Load a checkpoint's ``meta`` into ``learner``, refusing other names or shapes
    (:class:`metarl.checkpoint.CheckpointError`)."""
    want = learner.state_dict()
    meta = state["meta"]
    if set(meta) != set(want):
        raise checkpoint.CheckpointError(f"checkpoint in {where} holds {len(meta)} tensors that do not match this "
                                         f"run's learner ({len(want)}: {', '.join(list(want)[:4])}, ...)")
    for k, v in want.items():
        got = meta[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise checkpoint.CheckpointError(f"checkpoint in {where}: {k} has shape {shape}, "
                                             f"this run's learner needs {tuple(v.shape)}")
    learner.load_state_dict(meta)


def resume_config(run_dir: Path, iterations: int | None = None) -> Config:
    """The config a resumed run continues with; ``iterations`` extends (or keeps) its budget.

    The trainer writes a changed budget back to ``config.yaml`` (atomically,
    once the checkpoint has loaded).  A run without a checkpoint resumes from
    iteration 0.  Raises
    :class:`metarl.config.ConfigError` for a bad config or an ``iterations``
    below the iteration already reached, and
    :class:`metarl.checkpoint.CheckpointError` for a bad checkpoint.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml", [f"iterations={iterations}"] if iterations is not None else [])
    done = done_iterations(run_dir) or 0
    if iterations is not None and iterations < done:
        raise ConfigError(f"--iterations {iterations} is below the {done} iterations {run_dir} has done")
    return cfg


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
