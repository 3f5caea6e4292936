"""Running a campaign: train each run (skip finished, resume interrupted, extend a grown budget), evaluate it,
cache the results in its ``eval/``.

The run directory's lifecycle is :meth:`metarl.rundir.RunDir.prepare_training`
(the same as ``metarl train --seeds``); the evaluations are
:mod:`metarl.commands`' and :mod:`metarl.evaluation`'s, each cached in
``RUN_DIR/eval/`` and recomputed when it is not current (:meth:`RunDir.cached`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metarl.rundir import RunDir, curve_file


def seconds_per_iteration(cfg: Any) -> float:
    """Median time of iterations 2.. of a short throwaway run of ``cfg``."""
    from metarl.trainer import Trainer

    if cfg.iterations == 0:
        return 0.0
    probe = type(cfg)(**{**cfg.__dict__})
    probe.iterations = 2
    with tempfile.TemporaryDirectory() as tmp:
        results = Trainer(probe, Path(tmp)).train()
    return results[-1].scalars["time/iteration_s"]


def train(cfg: Any, run_dir: Path, latest_only: bool = False, progress: bool = True) -> None:
    """Train ``cfg`` in ``run_dir``: skip if finished, resume if interrupted, extend if the budget grew.

    ``latest_only`` keeps only the latest checkpoint and those of the budgets
    the run finished before it was extended (the released runs of ``results/``
    are committed that way); ``progress``: a progress bar."""
    from tqdm import tqdm

    from metarl.trainer import Trainer

    rd = RunDir(run_dir)
    plan = rd.prepare_training(cfg, keep_budgets=True)
    if plan.action == "finished":
        print(f"  {run_dir.name}: finished ({plan.done} iterations)")
        return
    if plan.archived is not None:
        print(f"  {run_dir.name}: extending from {plan.done} to {cfg.iterations} iterations; its evaluation at "
              f"{plan.done} is kept in eval/{plan.archived.name}/ with that checkpoint")
    try:  # prepare_training locked the run directory: released when this run is done (a campaign trains many)
        trainer = Trainer(plan.cfg, run_dir, resume=plan.resume)
        with tqdm(total=cfg.iterations, initial=trainer.start_iteration, desc=run_dir.name, unit="it",
                  disable=not progress) as bar:
            def tick(r: Any) -> None:
                bar.set_postfix(pre=f"{r.scalars['returns/pre_adapt']:.1f}",
                                post=f"{r.scalars['returns/post_adapt']:.1f}")
                bar.update(1)
                if latest_only:
                    rd.prune_checkpoints()

            try:  # Ctrl-C or SIGTERM inside checkpoints the run before the process exits
                trainer.train(tick)
            finally:
                if latest_only:
                    rd.prune_checkpoints()
    finally:
        rd.unlock()


def evaluate(run_dir: Path, tasks: int, steps: int, seed: int, best: bool = False) -> dict[str, Any]:
    """Adaptation curve of ``run_dir``'s latest checkpoint (cached in RUN_DIR/eval/curve_<tasks>_<steps>_<seed>.json),
    or with ``best`` of its best-iteration checkpoint (``curve_best_...``, the MAML paper's protocol)."""
    from metarl.evaluation import evaluate_run

    rd = RunDir(run_dir)
    name = curve_file(tasks, steps, seed, best)
    done = rd.done_iterations()
    if best:  # the best iteration can change while a run goes on: cached for the iterations done
        cached = rd.cached(name, iteration=int(rd.state_at("best")["iteration"]), done=done)
    else:
        cached = rd.cached(name, iteration=done)
    if cached is not None:
        return cached
    result = evaluate_run(run_dir, tasks, steps, None, seed, iteration="best" if best else None)
    if best:
        result["checkpoint"], result["done"] = "best", done
    rd.write_result(name, result)
    return result


def analyse(run_dir: Path, tasks: int, seed: int) -> dict[str, Any]:
    """``metarl analyze`` of ``run_dir`` (cached in RUN_DIR/eval/analysis_<tasks>_<seed>.json for its latest
    iteration; named by its settings, like the curve, so that a plain ``metarl analyze``, which writes
    ``eval/analysis.json``, never replaces the campaign's)."""
    from metarl.analysis.representation import analyze_run

    rd = RunDir(run_dir)
    name = f"analysis_{tasks}_{seed}"
    cached = rd.cached(f"{name}.json", iteration=rd.done_iterations(), similarity__num_tasks=tasks,
                       similarity__seed=seed)
    return cached if cached is not None else analyze_run(run_dir, tasks, seed, plot=False, name=name)


def metaworld_protocol(run_dir: Path, seed: int) -> dict[str, Any]:
    """Meta-World's protocol on every test task (``metarl evaluate RUN_DIR --protocol metaworld``), cached in
    RUN_DIR/eval/metaworld.json for its latest iteration."""
    from metarl.commands import evaluate_protocol

    rd = RunDir(run_dir)
    cached = rd.cached("metaworld.json", iteration=rd.done_iterations())
    if cached is not None:
        return cached
    return evaluate_protocol(rd, rd.load(), "metaworld", rd.eval_path("metaworld.json"), seed)[0]


def print_plan(jobs: list[tuple[Any, Path]]) -> None:
    """The expected training time of ``jobs`` on this machine, from two timed iterations of each configuration."""
    total = 0.0
    cache: dict[str, float] = {}
    print("timing two iterations of each configuration on this machine ...")
    for cfg, run_dir in jobs:
        key = f"{cfg.env.family}/{cfg.name}"
        if key not in cache:
            cache[key] = seconds_per_iteration(cfg)
        remaining = cfg.iterations - (RunDir(run_dir).done_iterations() or 0)
        total += max(remaining, 0) * cache[key]
    for key, s in cache.items():
        print(f"  {key:<32} {s:6.2f} s/iteration")
    print(f"expected training time: {total / 3600:.2f} h for {len(jobs)} runs (plus evaluation)", flush=True)


def trained(args: Any, jobs: list[tuple[Any, Path]]) -> Iterator[tuple[Any, Path]]:
    """Train every job (resuming, latest checkpoint kept; the runtime estimate first unless
    ``args.no_estimate``) and yield each once it has finished: one after the other here, or all first as Ray
    tasks with ``args.parallel`` > 1 or ``args.ray_address`` (a run a task could not finish is not yielded)."""
    if not args.no_estimate:
        print_plan(jobs)
    as_tasks = getattr(args, "parallel", 1) > 1 or getattr(args, "ray_address", None)
    if as_tasks:  # every run trained first, as Ray tasks; then evaluated here
        from experiments.ray_campaign import train_jobs

        unfinished = train_jobs(train, jobs, True, args.parallel, args.ray_address)
        jobs = [(cfg, d) for cfg, d in jobs if d.name not in unfinished]
    for cfg, run_dir in jobs:
        if not as_tasks:
            train(cfg, run_dir, latest_only=True)
        yield cfg, run_dir


def train_and_evaluate(args: Any, jobs: list[tuple[Any, Path]], steps: int, analysis: bool = False,
                       best: bool = False) -> None:
    """Every job trained (resuming, latest checkpoint kept) and evaluated over 0..``steps`` inner steps on
    ``args.eval_tasks`` held-out tasks (seed ``args.eval_seed``; the runtime estimate first unless
    ``args.no_estimate``).

    With ``analysis`` each finished run also gets the representation analysis
    and the layer-freezing ablation (``metarl analyze``) on the same held-out tasks; with ``best`` its
    best-iteration checkpoint is evaluated too."""
    eval_tasks, eval_seed = args.eval_tasks, args.eval_seed
    for _, run_dir in trained(args, jobs):
        for which in (False, True) if best else (False,):
            result = evaluate(run_dir, eval_tasks, steps, eval_seed, best=which)
            print(f"  {run_dir.name}: {'best iteration ' + str(result['iteration']) if which else 'final'}, "
                  f"after 0..{steps} steps " + " / ".join(f"{m:.1f}" for m in result["mean"]), flush=True)
        if analysis:
            abl = analyse(run_dir, eval_tasks, eval_seed)["freeze_ablation"]["variants"]
            print(f"  {run_dir.name}: one-step gain adapting " + ", ".join(
                f"{name} {v['gain']:+.1f}" for name, v in abl.items()), flush=True)
