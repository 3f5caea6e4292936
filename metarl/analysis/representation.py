"""What the inner loop changes in a trained meta-policy.

``representation_similarity`` follows the analysis of Raghu et al. (ANIL,
2020): on held-out tasks, compare every layer's activations before and after
one inner step, on the same states, with CKA and SVCCA.  High similarity in
the body and low in the head means adaptation reuses features and only
re-reads them.

``freeze_ablation`` adapts only chosen parameters at test time (one inner
step) and reports the post-adaptation return of each choice.

Both use the held-out task stream of :mod:`metarl.run` and roll out
the meta-policy with the seed of ``adaptation_curve``'s step 0, so the same
``seed`` gives the same tasks and step-0 episodes as ``metarl evaluate``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.base import TaskFamily
from metarl.adaptation import adapt
from metarl.algos import MetaLearner
from metarl.analysis.preconditioner import format_spectra, preconditioner_spectra
from metarl.analysis.similarity import cca_similarity, linear_cka
from metarl.episodes import EpisodeBatch
from metarl.policies import Params
from metarl.run import (
    EVAL_ROLLOUTS,
    build_sampler,
    derive_seed,
    episode_mean_returns,
    held_out_tasks,
    jsonable,
    mean_stderr,
    stream_rng,
    write_json,
)
from metarl.rundir import LoadedRun, load_run
from metarl.sampling import Sampler

STATES_STREAM = 101  # random stream of the state subsample (apart from the trainer's streams)


def _meta_params(learner: MetaLearner) -> Params:
    return OrderedDict((k, v.detach()) for k, v in learner.policy.params().items())


def task_params(params: Mapping[str, Tensor], like: Mapping[str, Tensor], index: int) -> Params:
    """Task ``index``'s parameters from a partly stacked dict (stacked entries ``(N, *shape)``)."""
    out: Params = OrderedDict()
    for k, ref in like.items():
        v = params[k]
        out[k] = v[index] if v.dim() == ref.dim() + 1 else v
    return out


def task_states(batch: EpisodeBatch, index: int, max_states: int | None, rng: np.random.Generator) -> Tensor:
    """Observations of task ``index`` at steps that happened: ``(M, obs_dim)``.

    At most ``max_states`` rows, drawn without replacement, in time order.
    """
    obs = batch.obs[index][batch.mask[index] > 0]
    if max_states is not None and obs.shape[0] > max_states:
        rows = np.sort(rng.choice(obs.shape[0], size=max_states, replace=False))
        obs = obs[torch.from_numpy(rows)]
    return obs


def representation_similarity(
    learner: MetaLearner,
    family: TaskFamily,
    sampler: Sampler,
    num_tasks: int = 20,
    episodes_per_task: int = 20,
    seed: int = 0,
    max_states: int = 2000,
    cca_keep: float | int | None = 0.99,
) -> dict[str, Any]:
    """Per-layer similarity of activations before vs after one inner step.

    For each of ``num_tasks`` held-out tasks: roll out the meta-policy
    (``episodes_per_task`` episodes), adapt with one inner step on those
    episodes (``learner.adapt_further``: the learner's adapted parameters and
    step size), and evaluate every layer (``policy.layer_outputs``) with the
    meta- and the adapted parameters on the same visited states (at most
    ``max_states`` per task).  ``cca_keep`` is the SVCCA truncation.

    Returns ``{"layers": [name per layer], "cka": [mean over tasks per
    layer], "cca": [...], "cka_stderr", "cca_stderr", "relative_change":
    [...], "per_task": {"cka", "cca", "relative_change": tasks x layers,
    "num_states": [per task]}, "pre_adapt_return", "tasks",
    "adapted_params", ...}``.

    CKA and CCA centre the activations, so they are blind to a constant
    shift (e.g. a changed head bias moving every action the same way);
    ``relative_change`` = ``||after - before||_F / ||before||_F`` is not.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    if max_states is not None and max_states < 2:
        raise ValueError(f"max_states must be >= 2, got {max_states}")
    policy = learner.policy
    tasks = held_out_tasks(family, num_tasks, seed)
    params = _meta_params(learner)
    batch = sampler.sample(tasks, params, episodes_per_task, derive_seed(seed, EVAL_ROLLOUTS, 0))
    adapted = learner.adapt_further(params, batch, learner.advantages(batch), steps=1)
    layers = policy.layer_names()
    cka = np.zeros((num_tasks, len(layers)))
    cca = np.zeros((num_tasks, len(layers)))
    change = np.zeros((num_tasks, len(layers)))
    num_states = []
    with torch.no_grad():
        for i in range(num_tasks):
            states = task_states(batch, i, max_states, stream_rng(seed, STATES_STREAM, i))
            num_states.append(int(states.shape[0]))
            before = policy.layer_outputs(states, params)
            after = policy.layer_outputs(states, task_params(adapted, params, i))
            for j, (a, b) in enumerate(zip(before, after, strict=True)):
                cka[i, j] = linear_cka(a, b)
                cca[i, j] = cca_similarity(a, b, keep=cca_keep)
                change[i, j] = relative_change(a, b)
    cka_mean, cka_se = mean_stderr(cka)
    cca_mean, cca_se = mean_stderr(cca)
    change_mean, _ = mean_stderr(change)
    return {
        "layers": layers,
        "cka": cka_mean,
        "cca": cca_mean,
        "cka_stderr": cka_se,
        "cca_stderr": cca_se,
        "relative_change": change_mean,
        "per_task": {"cka": cka.tolist(), "cca": cca.tolist(), "relative_change": change.tolist(),
                     "num_states": num_states},
        "pre_adapt_return": float(episode_mean_returns(batch).mean()),
        "adapted_params": list(learner.adapt_names),
        "cca_keep": cca_keep,
        "tasks": jsonable(tasks),
        "num_tasks": num_tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
    }


def relative_change(before: Tensor, after: Tensor) -> float:
    """``||after - before||_F / ||before||_F`` of two ``(n, d)`` activations (0 if both are 0)."""
    b, a = before.detach().double(), after.detach().double()
    diff = float(torch.linalg.norm(a - b))
    base = float(torch.linalg.norm(b))
    if diff == 0.0:
        return 0.0
    return diff / base if base > 0 else math.inf


def default_variants(learner: MetaLearner) -> dict[str, list[str] | None]:
    """``all`` (every policy parameter), ``head_only``, ``body_only``, ``none``.

    A CAVIA policy (with context parameters) gets ``context_only`` and
    ``none``: its network was meta-learned to be read through the context,
    and its inner step size (1.0 in CAVIA's code) is sized for the context,
    not for the network's weights.
    """
    context = learner.policy.context_names()
    if context:
        return {"context_only": context, "none": []}
    names = list(learner.policy.params())
    return {
        "all": None,
        "head_only": learner.policy.head_names(),
        "body_only": [k for k in names if k.startswith("body.")],
        "none": [],
    }


def freeze_ablation(
    learner: MetaLearner,
    family: TaskFamily,
    sampler: Sampler,
    num_tasks: int = 20,
    episodes_per_task: int = 20,
    seed: int = 0,
    variants: Mapping[str, Sequence[str] | None] | None = None,
) -> dict[str, Any]:
    """Post-adaptation return when only some parameters adapt at test time.

    ``variants`` maps a name to the parameter names adapted (``None``: all of
    the policy's parameters, ``[]``: none); the default is
    :func:`default_variants`.  For each held-out task the meta-policy's
    episodes (seed of step 0) are the adaptation data; every variant takes
    one inner step (``metarl.adaptation.adapt``, the learner's inner step
    size) on them, and its adapted policy is rolled out with the *same* seed
    as step 0 (common random numbers: differences between variants come from
    the parameters, not the noise; adapting nothing reproduces step 0
    exactly).

    Returns ``{"step0": {"mean", "stderr", "per_task"}, "variants": {name:
    {"params", "mean", "stderr", "per_task", "gain", "gain_stderr"}},
    "tasks", ...}``; ``gain`` is the mean over tasks of (post-adaptation
    return - step-0 return), with its standard error.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    policy = learner.policy
    chosen = default_variants(learner) if variants is None else dict(variants)
    known = list(policy.params())
    resolved: dict[str, list[str]] = {}
    for name, names in chosen.items():
        names = known if names is None else list(names)
        unknown = [k for k in names if k not in known]
        if unknown:
            raise ValueError(f"variant {name!r}: unknown parameters {unknown}; the policy has {known}")
        resolved[name] = names
    tasks = held_out_tasks(family, num_tasks, seed)
    params = _meta_params(learner)
    rollout_seed = derive_seed(seed, EVAL_ROLLOUTS, 0)
    batch = sampler.sample(tasks, params, episodes_per_task, rollout_seed)
    adv = learner.advantages(batch)
    step0 = episode_mean_returns(batch).astype(np.float64)

    def summary(returns: np.ndarray) -> dict[str, Any]:
        mean, stderr = mean_stderr(returns[:, None])
        return {"mean": mean[0], "stderr": stderr[0], "per_task": [float(r) for r in returns]}

    out: dict[str, Any] = {}
    for name, names in resolved.items():
        if names:
            adapted = adapt(policy, params, batch, adv, learner.step_size(names), steps=1, first_order=True,
                            names=names)
            adapted = OrderedDict((k, v.detach()) for k, v in adapted.items())
        else:
            adapted = params
        post = episode_mean_returns(sampler.sample(tasks, adapted, episodes_per_task, rollout_seed)).astype(np.float64)
        gain = summary(post - step0)  # paired per task: far less noisy than comparing two means
        out[name] = {"params": names, **summary(post), "gain": gain["mean"], "gain_stderr": gain["stderr"]}
    return {
        "step0": summary(step0),
        "variants": out,
        "learner_adapts": list(learner.adapt_names),
        "tasks": jsonable(tasks),
        "num_tasks": num_tasks,
        "episodes_per_task": episodes_per_task,
        "seed": seed,
    }


def analyze_run(
    run_dir: Path,
    num_tasks: int = 20,
    seed: int = 0,
    episodes_per_task: int | None = None,
    max_states: int = 2000,
    out_dir: Path | None = None,
    plot: bool = True,
    iteration: int | None = None,
    loaded: LoadedRun | None = None,
    name: str = "analysis",
) -> dict[str, Any]:
    """Both analyses of RUN_DIR's latest checkpoint (or the one at ``iteration``), written to ``OUT_DIR``
    (default ``RUN_DIR/eval``).

    Writes ``<name>.json`` (default ``analysis.json``; ``{"similarity": ..., "freeze_ablation": ...,
    "preconditioner": ..., "run_dir", "iteration"}``; ``preconditioner`` is the
    learned Kronecker factors' spectra per layer,
    :func:`metarl.analysis.preconditioner.preconditioner_spectra`, or null) and, with ``plot`` (needs matplotlib),
    ``similarity.png`` and ``freeze_ablation.png``; every file atomically.
    ``episodes_per_task`` defaults to the run's.  ``loaded`` is the run as
    :func:`metarl.rundir.load_run` already returned it (not loaded again;
    ``iteration`` is then ignored).  Returns the JSON dict with the written
    paths under ``"files"``.
    """
    run_dir = Path(run_dir)
    cfg, family, learner, iteration = loaded or load_run(run_dir, iteration)
    episodes = episodes_per_task or cfg.algo.episodes_per_task
    with build_sampler(cfg, family, learner.policy) as sampler:
        similarity = representation_similarity(learner, family, sampler, num_tasks, episodes, seed, max_states)
        ablation = freeze_ablation(learner, family, sampler, num_tasks, episodes, seed)
    result: dict[str, Any] = {"run_dir": str(run_dir), "iteration": iteration, "similarity": similarity,
                              "freeze_ablation": ablation,
                              "preconditioner": preconditioner_spectra(learner.precond_params)}
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / f"{name}.json"}
    write_json(files["json"], result, indent=1)
    if plot:
        from metarl.plots import plot_freeze_ablation, plot_similarity

        files["similarity_png"] = plot_similarity(similarity, out_dir / "similarity.png")
        files["ablation_png"] = plot_freeze_ablation(ablation, out_dir / "freeze_ablation.png")
    result["files"] = {k: str(v) for k, v in files.items()}
    return result


def format_report(result: Mapping[str, Any]) -> str:
    """Plain-text tables of an :func:`analyze_run` result (for the terminal)."""
    sim, abl = result["similarity"], result["freeze_ablation"]
    lines = [f"representation similarity before vs after one inner step ({sim['num_tasks']} held-out tasks; "
             f"adapted: {', '.join(sim['adapted_params'])})",
             f"{'layer':<10}  {'CKA':>6}  {'CCA':>6}  {'|change|/|before|':>17}"]
    for name, cka, cca, change in zip(sim["layers"], sim["cka"], sim["cca"], sim["relative_change"], strict=True):
        lines.append(f"{name:<10}  {cka:>6.4f}  {cca:>6.4f}  {change:>17.4f}")
    lines += ["", "layer-freezing ablation: mean return after one inner step adapting only",
              f"{'variant':<10}  {'return':>10}  {'stderr':>8}  {'gain vs step 0':>16}",
              f"{'(step 0)':<10}  {abl['step0']['mean']:>10.2f}  {abl['step0']['stderr']:>8.2f}"]
    for name, v in abl["variants"].items():
        gain = f"{v['gain']:+.2f} ± {v['gain_stderr']:.2f}"
        lines.append(f"{name:<10}  {v['mean']:>10.2f}  {v['stderr']:>8.2f}  {gain:>16}")
    if result.get("preconditioner"):
        lines += ["", *format_spectra(result["preconditioner"])]
    return "\n".join(lines)
