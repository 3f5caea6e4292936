"""``es``: an evolution-strategies outer loop (Song et al. 2020, ES-MAML; Hansen's CMA-ES).

Each meta-iteration draws ``es.population`` candidate meta-parameter vectors
around the current ones, scores every candidate by its **fitness**, the mean
post-adaptation return on the iteration's tasks, and moves the search:

* ``es.method: cma``: CMA-ES through the ``cma`` package, for searches of up
  to :data:`CMA_MAX_DIM` numbers (a rule's genome, Meta-SGD's step sizes, a
  policy head); the candidates are ``cma``'s ``ask()``, the fitness is told
  negated (``cma`` minimises);
* ``es.method: openes``: antithetic OpenES (pairs ``θ ± σ ε``) with centered
  rank fitness shaping (``es.fitness_shaping``) and Adam (``es.lr``) on the
  mean, for larger searches such as a whole policy.

``es.params`` chooses what is searched: ``rule``, the inner-update rule's
meta-parameters only (the policy stays at its initialisation: from the seed,
or from ``es.init_from``, another run's directory or checkpoint), or ``all``,
every meta-parameter. With ``rule`` the meta-policy does not change, so the
iteration's train episodes serve every candidate, and only each candidate's
adapted policies are rolled out; with ``all`` each candidate's meta-policy is
rolled out as well. Every rollout goes through the run's sampler (local
workers or a Ray cluster), as many candidates' in one call as the sampler has
workers (the task list repeated per candidate, each repeat drawing its task's
own episode randomness), so a cluster's workers all take part.

Randomness: the candidates of iteration ``i`` derive from ``(seed, ES, i)``,
and CMA-ES's own state is a function of its start and of every fitness it was
told. A checkpoint holds the start, the fitness history and (OpenES) the Adam
state (:meth:`ESLearner.extra_state`); a resumed run rebuilds ``cma``'s state
by replaying the history, so it continues exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from metarl.algos.base import MetaLearner, Rollouts, StepResult
from metarl.episodes import EpisodeBatch
from metarl.inner_updates import INNER_UPDATES
from metarl.policies import flatten, unflatten

CMA_MAX_DIM = 1000
MAX_POPULATION = 10_000
METHODS = ("cma", "openes")
SEARCHED = ("rule", "all")


@dataclass
class ESSettings:
    method: str = "cma"
    """cma (CMA-ES through the cma package, up to 1000 numbers) | openes (antithetic OpenES with Adam)."""
    params: str = "rule"
    """What is searched: rule (the inner-update rule's meta-parameters; the policy stays at its start) | all."""
    population: int = 16
    """Candidates per meta-iteration (OpenES: an even number, antithetic pairs)."""
    sigma: float = 0.1
    """Initial step size of CMA-ES; OpenES's perturbation scale (ES-MAML: 0.1)."""
    lr: float = 0.01
    """OpenES: Adam step size on the mean (ES-MAML's ES step: 0.01)."""
    fitness_shaping: bool = True
    """OpenES: centered ranks in [-0.5, 0.5] instead of raw fitness."""
    init_from: str | None = None
    """Run directory or checkpoint whose policy starts the search (null: the seed's); read once, at the run's start."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        need(self.method in METHODS, "method", self.method, "must be cma or openes")
        need(self.params in SEARCHED, "params", self.params, "must be rule or all")
        need(2 <= self.population <= MAX_POPULATION, "population", self.population,
             f"must be in [2, {MAX_POPULATION}]")
        need(self.method != "openes" or self.population % 2 == 0, "population", self.population,
             "must be even with method openes (antithetic pairs)")
        need(self.sigma > 0, "sigma", self.sigma, "must be > 0")
        need(self.lr > 0, "lr", self.lr, "must be > 0")


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Fitness shaping: ranks scaled to [-0.5, 0.5] (ties broken by order), the best highest."""
    ranks = np.empty(len(fitness))
    ranks[np.argsort(fitness, kind="stable")] = np.arange(len(fitness))
    return ranks / max(len(fitness) - 1, 1) - 0.5


def openes_gradient(noise: np.ndarray, fitness: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Antithetic estimate of the fitness gradient and its standard error per coordinate.

    ``noise (P, D)``: the pairs' directions ``ε``; ``fitness (2P,)``: ``F(θ + σε_p)`` for every pair, then
    ``F(θ - σε_p)``. Each pair gives ``(F+ - F-) ε / (2σ)``, unbiased for a smooth ``F``; the estimate is
    their mean."""
    pairs = len(noise)
    per_pair = ((fitness[:pairs] - fitness[pairs:]) / (2.0 * sigma))[:, None] * noise
    stderr = per_pair.std(axis=0, ddof=1) / math.sqrt(pairs) if pairs > 1 else np.zeros(noise.shape[1])
    return per_pair.mean(axis=0), stderr


class CMASearch:
    """CMA-ES (``cma``) whose candidates come from ``(seed, iteration)`` and whose state is its start and the
    fitness history: :meth:`state` and a new instance's :meth:`load` continue exactly."""

    def __init__(self, x0: np.ndarray, sigma: float, population: int, seed: int):
        self.x0, self.sigma, self.population, self.seed = np.asarray(x0, np.float64), sigma, population, seed
        self.history: list[np.ndarray] = []
        self._es: Any = None

    def _rng_for(self, iteration: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, ES_STREAM, iteration])

    def _strategy(self) -> Any:
        import cma

        self._gen = self._rng_for(0)
        opts = {"popsize": self.population, "seed": 1, "verbose": -9, "randn": lambda *s: self._gen.standard_normal(s),
                "tolfun": 0, "tolx": 0, "tolstagnation": 1 << 30, "tolflatfitness": 1 << 30, "tolfunhist": 0,
                "maxiter": float("inf"), "CMA_diagonal": False}
        return cma.CMAEvolutionStrategy(self.x0.copy(), self.sigma, opts)

    def ask(self, iteration: int) -> np.ndarray:
        if self._es is None:  # a fresh or loaded search: replay the history (exact: same candidates, same fitness)
            self._es = self._strategy()
            for i, fit in enumerate(self.history):
                self._gen = self._rng_for(i)
                self._es.tell(self._es.ask(), list(-fit))
        self._gen = self._rng_for(len(self.history))
        return np.asarray(self._es.ask())

    def tell(self, candidates: np.ndarray, fitness: np.ndarray) -> np.ndarray:
        self._es.tell(list(candidates), list(-fitness))
        self.history.append(np.asarray(fitness, np.float64))
        return np.asarray(self._es.mean)

    def scalars(self) -> dict[str, float]:
        return {"es/sigma": float(self._es.sigma)} if self._es is not None else {}

    def state(self) -> dict[str, Tensor]:
        hist = np.stack(self.history) if self.history else np.zeros((0, self.population))
        return {"x0": torch.from_numpy(self.x0.copy()), "history": torch.from_numpy(hist)}

    def load(self, state: Mapping[str, Tensor]) -> None:
        self.x0 = state["x0"].double().numpy().copy()
        self.history = [row.copy() for row in state["history"].double().numpy()]
        self._es = None


class OpenES:
    """Antithetic OpenES with Adam on the mean; the state is Adam's moments and step count."""

    def __init__(self, x0: np.ndarray, settings: ESSettings, seed: int):
        self.settings, self.seed = settings, seed
        self.mean = np.asarray(x0, np.float64).copy()
        self.m, self.v, self.t = np.zeros_like(self.mean), np.zeros_like(self.mean), 0
        self.history: list[np.ndarray] = []
        self._noise: np.ndarray | None = None
        self.last_stderr = 0.0

    def ask(self, iteration: int) -> np.ndarray:
        pairs = self.settings.population // 2
        self._noise = np.random.default_rng([self.seed, ES_STREAM, iteration]).standard_normal((pairs, len(self.mean)))
        sigma = self.settings.sigma
        return np.concatenate([self.mean + sigma * self._noise, self.mean - sigma * self._noise])

    def tell(self, candidates: np.ndarray, fitness: np.ndarray) -> np.ndarray:
        assert self._noise is not None
        shaped = centered_ranks(fitness) if self.settings.fitness_shaping else fitness
        grad, stderr = openes_gradient(self._noise, shaped, self.settings.sigma)
        self.last_stderr = float(np.linalg.norm(stderr))
        self.t += 1  # Adam ascent on the fitness
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        step = self.settings.lr * (self.m / (1 - b1**self.t)) / (np.sqrt(self.v / (1 - b2**self.t)) + eps)
        self.mean = self.mean + step
        self.history.append(np.asarray(fitness, np.float64))
        return self.mean

    def scalars(self) -> dict[str, float]:
        return {"es/grad_stderr_norm": self.last_stderr}

    def state(self) -> dict[str, Tensor]:
        return {"mean": torch.from_numpy(self.mean.copy()), "adam_m": torch.from_numpy(self.m.copy()),
                "adam_v": torch.from_numpy(self.v.copy()),
                "adam_t": torch.tensor(self.t, dtype=torch.int64, device="cpu")}  # the search's own state: CPU

    def load(self, state: Mapping[str, Tensor]) -> None:
        self.mean = state["mean"].double().numpy().copy()
        self.m, self.v = state["adam_m"].double().numpy().copy(), state["adam_v"].double().numpy().copy()
        self.t = int(state["adam_t"])


ES_STREAM = 9
"""Seed stream of the candidates (beside the trainer's 0..4, shots 6, videos 7, protocol 8)."""
WORST = -1e30
"""The fitness of a candidate whose rollouts or returns are not finite (the worst possible)."""


@dataclass
class ESLearner(MetaLearner):
    """The ES outer loop (module docstring). ``seed``: the run's seed (the candidates' random stream)."""

    es: ESSettings = field(default_factory=ESSettings)
    seed: int = 1

    Settings: ClassVar[type | None] = ESSettings
    section: ClassVar[str | None] = "es"
    scalar_prefix: ClassVar[str] = "es"
    needs_rollouts: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        meta = self.meta_params()
        self.searched = [k for k in meta if self.es.params == "all" or k.startswith(self.rule.prefix) and
                         self.rule.learned]
        if not self.searched:
            raise ValueError(f"es.params: rule searches the inner-update rule's meta-parameters, and "
                             f"algo.inner_update: {self.inner_update} has none (use es.params: all, or a learned rule)")
        dim = sum(meta[k].numel() for k in self.searched)
        if self.es.method == "cma" and dim > CMA_MAX_DIM:
            raise ValueError(f"es.method: cma searches at most {CMA_MAX_DIM} numbers; es.params: {self.es.params} "
                             f"has {dim} here (use es.method: openes)")
        self.search: CMASearch | OpenES | None = None

    @classmethod
    def from_config(cls, cfg: Any, policy: Any, adapt_names: Any) -> MetaLearner:
        learner = super().from_config(cfg, policy, adapt_names)
        assert isinstance(learner, ESLearner)
        learner.seed = int(cfg.seed)
        return learner

    def start_fresh(self) -> None:
        """A new run's policy starts from ``es.init_from`` when set (read only here: a run restored from its
        own checkpoint never needs that other run again)."""
        if self.es.init_from:
            self.start_policy_from(Path(self.es.init_from))

    def start_policy_from(self, where: Path) -> None:
        """Set the policy's parameters from a run directory's latest checkpoint (or a checkpoint file)."""
        from metarl import checkpoint

        path = checkpoint.latest(where / "checkpoints") if where.is_dir() else where
        if path is None or not path.is_file():
            raise ValueError(f"es.init_from: no checkpoint at {where}")
        meta = checkpoint.load(path)["meta"]
        with torch.no_grad():
            for k, v in self.policy.params().items():
                got = meta.get(k)
                if not isinstance(got, Tensor) or got.shape != v.shape:
                    raise ValueError(f"es.init_from: {path} has no policy parameter {k} of shape {tuple(v.shape)}")
                v.copy_(got)

    @classmethod
    def check_config(cls, cfg: Any, need: Callable[[bool, str, Any, str], None]) -> None:
        rule = INNER_UPDATES[cfg.algo.inner_update]
        need(cfg.es.params != "rule" or rule.learned, "es.params", cfg.es.params,
             f"searches the inner-update rule's meta-parameters, and algo.inner_update: {cfg.algo.inner_update} "
             "has none (use all, or a learned rule)")

    # -- the searched vector ------------------------------------------------------------
    def vector(self) -> np.ndarray:
        meta = self.meta_params()
        return flatten(OrderedDict((k, meta[k].detach()) for k in self.searched)).double().cpu().numpy()

    def with_vector(self, x: np.ndarray) -> dict[str, Tensor]:
        meta = OrderedDict((k, v.detach()) for k, v in self.meta_params().items())
        like = OrderedDict((k, meta[k]) for k in self.searched)
        first = next(iter(like.values()))
        meta.update(unflatten(torch.as_tensor(x, dtype=first.dtype, device=first.device), like))
        return meta

    def _searcher(self) -> CMASearch | OpenES:
        if self.search is None:
            x0 = self.vector()
            self.search = (CMASearch(x0, self.es.sigma, self.es.population, self.seed) if self.es.method == "cma"
                           else OpenES(x0, self.es, self.seed))
        return self.search

    # -- one meta-iteration -----------------------------------------------------------
    def fitnesses(self, metas: Sequence[Mapping[str, Tensor]], train: EpisodeBatch, train_adv: Tensor,
                  rollouts: Rollouts) -> np.ndarray:
        """Each candidate's mean post-adaptation return on the iteration's tasks (:data:`WORST` where its
        episodes, adapted parameters or return are not finite).

        Every candidate's episodes use the same seeds (common random numbers), so their differences are the
        candidates'. The candidates' rollouts go to the sampler together, as many per call as it has workers
        (:meth:`Rollouts.sample_many`), so they spread over a cluster at once; each candidate's episodes are
        those a call of its own would give."""
        like = self.policy.params()
        fitness = np.full(len(metas), WORST)
        if self.es.params == "all":  # each candidate's own meta-policy (a CAVIA context at zero): its own episodes
            trains = rollouts.sample_many([self._split(meta)[0] for meta in metas], rollouts.seed(0), like)
        adapted_sets, which = [], []
        for i, meta in enumerate(metas):
            batch, adv = train, train_adv  # rule: the iteration's episodes (:meth:`step` checked them)
            if self.es.params == "all":
                batch = trains[i]
                if not bool(torch.isfinite(batch.rewards).all()):
                    continue
                adv = self.advantages(batch)
            adapted = {k: v.detach() for k, v in self.adapt(batch, adv, meta).items()}
            if all(bool(torch.isfinite(v).all()) for v in adapted.values()):
                adapted_sets.append(adapted)
                which.append(i)
        if adapted_sets:
            for i, valid in zip(which, rollouts.sample_many(adapted_sets, rollouts.seed(1), like), strict=True):
                value = float(valid.episode_returns().mean())
                fitness[i] = value if math.isfinite(value) else WORST
        return fitness

    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None, rollouts: Rollouts | None = None) -> StepResult:
        if rollouts is None:
            raise ValueError("the es outer loop rolls out its candidates: step needs the trainer's rollouts")
        if not (bool(torch.isfinite(train.rewards).all()) and bool(torch.isfinite(valid.rewards).all())):
            return StepResult(self.rejected_scalars(), rejected=True)  # as every outer loop refuses them
        if train_adv is None:
            train_adv = self.advantages(train)
        search = self._searcher()
        candidates = search.ask(rollouts.iteration)
        fitness = self.fitnesses([self.with_vector(x) for x in candidates], train, train_adv, rollouts)
        if not (fitness > WORST).any():
            search.tell(candidates, fitness)  # the search still moves on (its history stays exact)
            return StepResult(self.rejected_scalars(), rejected=True)
        mean = search.tell(candidates, fitness)
        new = self.with_vector(mean)
        with torch.no_grad():
            for k, v in self.meta_params().items():
                if k in self.searched:
                    v.copy_(new[k])
        ok = fitness[fitness > WORST]
        return StepResult({"es/fitness_mean": float(ok.mean()), "es/fitness_max": float(ok.max()),
                           "es/fitness_min": float(ok.min()), "es/failed_candidates": float((fitness <= WORST).sum()),
                           **search.scalars()})

    def rejected_scalars(self) -> dict[str, float]:
        own = "es/sigma" if self.es.method == "cma" else "es/grad_stderr_norm"  # the search's own (same columns)
        return {"es/fitness_mean": float("nan"), "es/fitness_max": float("nan"), "es/fitness_min": float("nan"),
                "es/failed_candidates": float(self.es.population), own: float("nan")}

    # -- checkpointed state --------------------------------------------------------------
    def extra_state(self) -> dict[str, Tensor]:
        return {} if self.search is None else dict(self.search.state())

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            self.search = None
            return
        self._searcher_for_load().load(state)

    def _searcher_for_load(self) -> CMASearch | OpenES:
        self.search = None
        return self._searcher()
