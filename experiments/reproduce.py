"""Reproduce the published MAML and ANIL results with one command each.

    python experiments/reproduce.py anil [--iterations N] [--seeds 1 2 3] [--families ...]
    python experiments/reproduce.py maml [--iterations N] [--family Navigation2D] [--seeds 1]
    python experiments/reproduce.py locomotion [--iterations 500] [--seeds 1 2 3] [--families ...] [--methods maml anil]
    python experiments/reproduce.py outer [--methods promp maml_ppo] [--families Navigation2D] [--report-only]
    python experiments/reproduce.py depth [--iterations N] [--seeds 1 2 3] [--depths 1 2 3 4]
    python experiments/reproduce.py metaworld [--iterations 100] [--ml10-iterations 10] [--benchmarks ML1-reach ML10]
    python experiments/reproduce.py anil2019 [--iterations 500] [--families HalfCheetahDir HalfCheetahVel]

``anil2019``: MAML and ANIL under the setup the ANIL paper inherited from the
MAML authors (``experiments/configs/anil2019/``: (100, 100) ReLU, horizon
200, actions in [-1, 1]); HalfCheetahDir on seeds 1-3 first, then
HalfCheetahVel on seed 1. Each run is evaluated at its final iteration and at
its best training iteration (``checkpoints/best.pt``, the MAML paper's
protocol), and analysed (``metarl analyze``) at the final one.

``anil``: MAML and ANIL on HalfCheetahDir, HalfCheetahVel and Navigation2D,
three seeds each (Raghu et al., table 2); writes ``ROOT/anil_table.md`` with
mean ± std over seeds of the return after one inner step, beside the paper's
numbers.

``maml``: MAML-TRPO and the baselines of Finn et al. (fig. 5) on one family:
``pretrained`` (TRPO on the task mixture, fine-tuned at test time),
``random`` (random initialisation, fine-tuned) and ``oracle`` (the task in the
observation); evaluates 0..3 inner steps on the same held-out tasks and
writes ``ROOT/maml_<family>.md`` and ``ROOT/maml_<family>.png``.

``depth``: MAML-TRPO on Navigation2D with 1..4 hidden layers of width 64
(Arnold et al., "When MAML can adapt fast"), and the same sweep on depths 1
and 2 with the learned Kronecker preconditioner (``algo.inner_update:
kronecker``) and with Meta-SGD; evaluates every run on 40 held-out tasks
(return after one inner step, gain over step 0) and writes ``ROOT/depth.md``
and ``ROOT/depth.png`` with ``experiments/depth_report.py``, which
regenerates them from the run artifacts alone.

``outer``: other outer loops (``promp``, ``maml_ppo``) or inner updates
(``kronecker``, ``meta_sgd``) beside each other; on a locomotion family it
also plots their training curves against the locomotion campaign's MAML-TRPO
run of the same seed, e.g. ``outer --families HalfCheetahDir --methods
kronecker --seeds 1 --iterations 200 --root results/kronecker_dir``.
``outer --report-only --root ROOT`` rewrites ``ROOT/outer_table.md`` (and the
plot) from the runs already in ROOT, without training or rollouts.

``metaworld``: MAML-TRPO on Meta-World ML1 reach-v3 (budget ``--iterations``)
and ML10 (a short run, ``--ml10-iterations``), each scored with Meta-World's
protocol on every test task (``metarl evaluate --protocol metaworld``);
``experiments/metaworld_report.py`` writes the success curves and RESULTS.md's
Meta-World section from the run artifacts. Both use ``trpo.cg_subsample=0.3``
(the curvature of the conjugate gradient from 3 of ML1's 10 tasks, 6 of
ML10's 20): exact curvature is three fifths of an ML1 iteration on 2 cores.

All resume where they stopped (finished runs are skipped, interrupted ones
continue from their latest checkpoint; Ctrl-C or SIGTERM during training
writes one at the last completed iteration and exits 130 / 143), take an
iteration budget, and print
the expected runtime on this machine, measured by timing two iterations of
each configuration first. A larger budget extends finished runs; each one's
evaluations at the budget it had finished move to ``eval/iter_NNNNNN/`` and
that checkpoint is kept, so the shorter budget's result is not lost.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
FAMILY_CONFIGS = {
    "Navigation2D": "navigation2d.yaml",
    "HalfCheetahDir": "halfcheetah_dir.yaml",
    "HalfCheetahVel": "halfcheetah_vel.yaml",
    "AntVel": "ant_vel.yaml",
    "AntDir": "ant_dir.yaml",
}
ANIL_PAPER = {  # Raghu et al. 2020, table 2: mean ± std over 3 seeds, after adaptation
    ("HalfCheetahDir", "maml"): "170.4 ± 21.0", ("HalfCheetahDir", "anil"): "363.2 ± 14.8",
    ("HalfCheetahVel", "maml"): "-139.0 ± 18.9", ("HalfCheetahVel", "anil"): "-120.9 ± 6.3",
    ("Navigation2D", "maml"): "-20.3 ± 3.2", ("Navigation2D", "anil"): "-20.1 ± 2.3",
}
MAML_PAPER = {  # Finn et al. 2017, fig. 5: MAML after 0 / 1 / 2 / 3 inner steps (40 test tasks)
    "Navigation2D": [-40.4, -11.7, -3.3, -3.2],
    "HalfCheetahVel": [-129.5, -78.6, -66.6, -60.8],
    "HalfCheetahDir": [-50.7, 293.2, 313.5, 315.7],
    "AntVel": [30.6, 96.7, 100.1, 101.4],
    "AntDir": [8.7, 499.1, 500.7, 499.1],
}
METHODS = {
    "maml": [],
    "anil": ["policy.adapt=head"],
    "anil_log_std": ["policy.adapt=head_log_std"],
    "anil_meta_sgd": ["policy.adapt=head", "algo.inner_update=meta_sgd"],
    "anil_lr_x3": ["policy.adapt=head", "algo.inner_lr=0.3"],  # three times the reference inner lr, in training
    "pretrained": ["algo.inner_steps=0"],
    "random": ["iterations=0"],
    "oracle": ["algo.inner_steps=0", "env.oracle=true"],
    "promp": ["algo.name=promp"],
    "maml_ppo": ["algo.name=maml_ppo"],
}
INNER_UPDATES = {"maml": "sgd", "kronecker": "kronecker", "meta_sgd": "meta_sgd"}  # method -> algo.inner_update
# MAML-TRPO with a learned inner update, as methods of their own (the depth sweep uses the same names)
METHODS.update({m: [f"algo.inner_update={u}"] for m, u in INNER_UPDATES.items() if m != "maml"})


def config_for(family: str, method: str, seed: int, iterations: int, extra: list[str], configs: Path = CONFIGS):
    from metarl.config import load_config

    overrides = [f"iterations={iterations}", f"seed={seed}", f"name={method}"] + METHODS[method] + extra
    if method == "random":
        overrides = [o for o in overrides if not o.startswith("iterations=")] + ["iterations=0"]
    return load_config(configs / FAMILY_CONFIGS[family], overrides)


def seconds_per_iteration(cfg) -> float:
    """Median time of iterations 2.. of a short throwaway run of ``cfg``."""
    from metarl.trainer import Trainer

    if cfg.iterations == 0:
        return 0.0
    probe = type(cfg)(**{**cfg.__dict__})
    probe.iterations = 2
    with tempfile.TemporaryDirectory() as tmp:
        results = Trainer(probe, Path(tmp)).train()
    return results[-1].scalars["time/iteration_s"]


def done_iterations(run_dir: Path) -> int | None:
    """Iterations at ``run_dir``'s latest checkpoint (None: not started)."""
    from metarl.run import done_iterations as done

    return done(run_dir)


def prune_checkpoints(run_dir: Path) -> None:
    """Delete every checkpoint of ``run_dir`` but the one ``latest`` points to and those of its
    earlier budgets (an ``eval/iter_NNNNNN/`` directory for each, see :func:`archive_evaluations`)."""
    from metarl import checkpoint
    from metarl.run import kept_budgets

    latest = checkpoint.latest(run_dir / "checkpoints")
    if latest is None:
        return
    keep = {latest.name} | {checkpoint.file_name(i) for i in kept_budgets(run_dir)}
    for p in (run_dir / "checkpoints").glob("iter_*.pt"):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def archive_evaluations(run_dir: Path, done: int) -> Path | None:
    """Before a run that reached iteration ``done`` is extended: move its evaluations made at ``done``
    into ``eval/iter_NNNNNN/``, so the result at that budget stays beside the longer run's, and
    :func:`prune_checkpoints` keeps the checkpoint they were made from. Returns that directory, or None
    when the run had no evaluation at ``done`` (an interrupted run)."""
    from metarl import checkpoint

    ev = run_dir / "eval"
    dest = ev / Path(checkpoint.file_name(done)).stem
    for f in sorted(ev.glob("*.json")):
        try:
            iteration = json.loads(f.read_text()).get("iteration")
        except (ValueError, AttributeError):  # not an evaluation of ours
            continue
        if iteration == done:
            dest.mkdir(exist_ok=True)
            f.replace(dest / f.name)
    return dest if dest.is_dir() else None


def train(cfg, run_dir: Path, latest_only: bool = False) -> None:
    """Train ``cfg`` in ``run_dir``: skip if finished, resume if interrupted.

    ``latest_only`` keeps only the latest checkpoint and those of the budgets
    the run finished before it was extended (the released runs of ``results/``
    are committed that way)."""
    from tqdm import tqdm

    from metarl.run import resume_config
    from metarl.trainer import Trainer

    done = done_iterations(run_dir)
    if done is not None and done >= cfg.iterations:
        print(f"  {run_dir.name}: finished ({done} iterations)")
        return
    if done is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(cfg, run_dir)
    else:  # continue with the run's own config; the budget may have grown
        kept = archive_evaluations(run_dir, done)
        if kept is not None:
            print(f"  {run_dir.name}: extending from {done} to {cfg.iterations} iterations; its evaluation at "
                  f"{done} is kept in eval/{kept.name}/ with that checkpoint")
        trainer = Trainer(resume_config(run_dir, cfg.iterations), run_dir, resume=True)
    with tqdm(total=cfg.iterations, initial=trainer.start_iteration, desc=run_dir.name, unit="it") as bar:
        def tick(r) -> None:
            bar.set_postfix(pre=f"{r.scalars['returns/pre_adapt']:.1f}", post=f"{r.scalars['returns/post_adapt']:.1f}")
            bar.update(1)
            if latest_only:
                prune_checkpoints(run_dir)

        try:  # Ctrl-C or SIGTERM inside checkpoints the run before the process exits
            trainer.train(tick)
        finally:
            if latest_only:
                prune_checkpoints(run_dir)


def evaluate(run_dir: Path, tasks: int, steps: int, seed: int, best: bool = False) -> dict[str, Any]:
    """Adaptation curve of ``run_dir``'s latest checkpoint (cached in RUN_DIR/eval/curve_<tasks>_<steps>_<seed>.json),
    or with ``best`` of its best-iteration checkpoint (``curve_best_...``, the MAML paper's protocol)."""
    from metarl.evaluation import evaluate_run
    from metarl.run import state_at, write_json

    out = run_dir / "eval" / f"curve_{'best_' if best else ''}{tasks}_{steps}_{seed}.json"
    at = int(state_at(run_dir, "best")["iteration"]) if best else done_iterations(run_dir)
    if out.exists():
        cached = json.loads(out.read_text())
        if cached.get("iteration") == at and (not best or cached.get("done") == done_iterations(run_dir)):
            return cached
    result = evaluate_run(run_dir, tasks, steps, None, seed, iteration="best" if best else None)
    if best:  # the best iteration can change while a run goes on: cached for the iterations done
        result["checkpoint"], result["done"] = "best", done_iterations(run_dir)
    write_json(out, result)
    return result


def analyse(run_dir: Path, tasks: int, seed: int) -> dict[str, Any]:
    """``metarl analyze`` of ``run_dir`` (cached in RUN_DIR/eval/analysis_<tasks>_<seed>.json for its latest
    iteration; named by its settings, like the curve, so that a plain ``metarl analyze``, which writes
    ``eval/analysis.json``, never replaces the campaign's)."""
    from metarl.analysis.representation import analyze_run

    name = f"analysis_{tasks}_{seed}"
    out = run_dir / "eval" / f"{name}.json"
    if out.exists():
        cached = json.loads(out.read_text())
        sim = cached.get("similarity", {})
        if (cached.get("iteration") == done_iterations(run_dir) and sim.get("num_tasks") == tasks
                and sim.get("seed") == seed):
            return cached
    return analyze_run(run_dir, tasks, seed, plot=False, name=name)


def train_and_evaluate(args: argparse.Namespace, jobs: list[tuple[Any, Path]], steps: int,
                       analysis: bool = False, best: bool = False) -> None:
    """Every job trained (resuming, latest checkpoint kept) and evaluated over 0..``steps`` inner steps.

    With ``analysis`` each finished run also gets the representation analysis
    and the layer-freezing ablation (``metarl analyze``) on the same held-out tasks; with ``best`` its
    best-iteration checkpoint is evaluated too."""
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir, latest_only=True)
        for which in (False, True) if best else (False,):
            result = evaluate(run_dir, args.eval_tasks, steps, args.eval_seed, best=which)
            print(f"  {run_dir.name}: {'best iteration ' + str(result['iteration']) if which else 'final'}, "
                  f"after 0..{steps} steps " + " / ".join(f"{m:.1f}" for m in result["mean"]), flush=True)
        if analysis:
            abl = analyse(run_dir, args.eval_tasks, args.eval_seed)["freeze_ablation"]["variants"]
            print(f"  {run_dir.name}: one-step gain adapting " + ", ".join(
                f"{name} {v['gain']:+.1f}" for name, v in abl.items()), flush=True)


def print_plan(jobs: list[tuple[Any, Path]]) -> None:
    total = 0.0
    cache: dict[str, float] = {}
    print("timing two iterations of each configuration on this machine ...")
    for cfg, run_dir in jobs:
        key = f"{cfg.env.family}/{cfg.name}"
        if key not in cache:
            cache[key] = seconds_per_iteration(cfg)
        remaining = cfg.iterations - (done_iterations(run_dir) or 0)
        total += max(remaining, 0) * cache[key]
    for key, s in cache.items():
        print(f"  {key:<32} {s:6.2f} s/iteration")
    print(f"expected training time: {total / 3600:.2f} h for {len(jobs)} runs (plus evaluation)", flush=True)


def mean_pm_std(values: list[float]) -> str:
    """``mean ± std`` over seeds (sample std); a single seed has no spread, so it is given alone."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def cmd_anil(args: argparse.Namespace) -> None:
    root = Path(args.root)
    jobs = [(config_for(f, m, s, args.iterations, args.set), root / f"{f}__{m}__{s}")
            for f in args.families for m in ("maml", "anil") for s in args.seeds]
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir)
    rows = ["| family | method | ours: return after 1 step (mean ± std over seeds) | paper |", "|---|---|---|---|"]
    for f in args.families:
        for m in ("maml", "anil"):
            finals = [evaluate(root / f"{f}__{m}__{s}", args.eval_tasks, 1, args.eval_seed)["mean"][1]
                      for s in args.seeds]
            rows.append(f"| {f} | {m.upper()} | {mean_pm_std(finals)} "
                        f"({len(finals)} seed{'s' if len(finals) > 1 else ''}) | {ANIL_PAPER.get((f, m), '-')} |")
    text = (f"Budget: {args.iterations} meta-iterations per run; evaluation on {args.eval_tasks} held-out tasks "
            f"(seed {args.eval_seed}), one inner step.\n\n" + "\n".join(rows) + "\n")
    out = root / "anil_table.md"
    out.write_text(text)
    print(text + f"wrote {out}")


def cmd_outer(args: argparse.Namespace) -> None:
    """Outer loops side by side: train (resuming), evaluate 0..3 steps, write ``ROOT/outer_table.md``
    (with ``--report-only``: only the table, from the artifacts already there)."""
    root = Path(args.root)
    if not args.report_only:
        jobs = [(config_for(f, m, s, args.iterations, args.set), root / f"{f}__{m}__{s}")
                for s in args.seeds for f in args.families for m in args.methods]
        train_and_evaluate(args, jobs, steps=3)
    text = outer_report(root, args.eval_tasks, args.eval_seed)
    out = root / "outer_table.md"
    out.write_text(text)
    print(text + f"wrote {out}")


OUTER_RUN = re.compile(r"^(?P<family>[A-Za-z0-9]+)__(?P<method>\w+?)__(?P<seed>\d+)$")


def outer_report(root: Path, eval_tasks: int = 40, eval_seed: int = 0, plot: bool = True) -> str:
    """``ROOT/outer_table.md`` from the artifacts of every run under ``root`` alone (no training, no rollouts).

    One row per family, method and budget a run was evaluated at: each earlier
    budget's evaluation kept in ``eval/iter_NNNNNN/`` by an extension, and the
    latest when it is at the run's latest checkpoint. A seed that has not reached
    a budget is in flight towards it, or not extended when its own budget is
    smaller; the mean is over the seeds evaluated there. On a locomotion family the training curves follow
    (:func:`against_maml_trpo`)."""
    import yaml

    from metarl.checkpoint import latest_iteration
    from metarl.run import kept_budgets

    name = f"curve_{eval_tasks}_3_{eval_seed}.json"
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        m = OUTER_RUN.match(d.name)
        if not (m and m["method"] in METHODS and (d / "config.yaml").exists()):
            continue
        done = latest_iteration(d / "checkpoints")
        curves = {}
        for it, where in [*kept_budgets(d).items(), (done, d / "eval")]:  # each evaluation made at `it`
            ev = json.loads((where / name).read_text()) if (where / name).exists() else {}
            if ev.get("iteration") == it:
                curves[it] = ev["mean"]
        budget = int(yaml.safe_load((d / "config.yaml").read_text())["iterations"])
        runs.setdefault((m["family"], m["method"]), {})[int(m["seed"])] = {"done": done, "budget": budget,
                                                                           "curves": curves}
    order = list(METHODS)
    keys = sorted(runs, key=lambda k: (k[0], order.index(k[1])))
    seeds = sorted({s for k in keys for s in runs[k]})
    rows = ["| family | method | iterations | " + " | ".join(f"seed {s}" for s in seeds)
            + " | 1 step, mean ± std | step 0 | 2 steps | 3 steps |", "|---|---|---|" + "---|" * (len(seeds) + 4)]
    for f, m in keys:
        by_seed = runs[f, m]
        budgets = sorted({b for r in by_seed.values() for b in r["curves"]}
                         | {r["budget"] for r in by_seed.values() if r["budget"] not in r["curves"]})
        for b in budgets:
            cells, curves = [], []
            for s in seeds:
                r = by_seed.get(s)
                if r is None:
                    cells.append("")
                elif b in r["curves"]:
                    curves.append(r["curves"][b])
                    cells.append(f"{r['curves'][b][1]:.1f}")
                else:
                    cells.append("not evaluated" if r["done"] >= b else "not extended" if r["budget"] < b
                                 else f"in flight ({r['done']}/{b})")
            if curves:
                one = [c[1] for c in curves]
                n = "" if len(one) == len(by_seed) else f" ({len(one)} of {len(by_seed)} seeds)"
                stats = [f"**{mean_pm_std(one)}**{n}"] + [
                    f"{statistics.mean(c[k] for c in curves):.1f}" for k in (0, 2, 3)]
            else:
                stats = [""] * 4
            rows.append(f"| {f} | {m} | {b} | " + " | ".join(cells + stats) + " |")
    text = (f"{eval_tasks} held-out tasks (seed {eval_seed}), returns after 0..3 inner steps, at each budget "
            "(meta-iterations) a run was evaluated at; a run extended past a budget keeps that budget's "
            "evaluation in `eval/iter_NNNNNN/`.\n\n" + "\n".join(rows) + "\n")
    for f in sorted({f for f, _ in keys}):
        if f in LOCOMOTION:
            methods = [m for g, m in keys if g == f]
            text += "\n" + against_maml_trpo(root, f, methods, sorted({s for m in methods for s in runs[f, m]}),
                                              plot=plot)
    return text


MILESTONES = (10, 25, 50, 100, 150, 200, 300, 400, 500, 750, 1000)
METHOD_LABELS = {"promp": "ProMP", "maml_ppo": "MAML-PPO", "maml": "MAML-TRPO", "anil": "ANIL",
                 "anil_log_std": "ANIL, head + log-std",
                 "anil_meta_sgd": "ANIL + Meta-SGD", "anil_lr_x3": "ANIL, inner lr 0.3",
                 "kronecker": "MAML-TRPO + Kronecker", "meta_sgd": "Meta-SGD"}
LOCOMOTION_ROOT = ROOT / "results" / "locomotion"


def against_maml_trpo(root: Path, family: str, methods: list[str], seeds: list[int],
                      reference: Path = LOCOMOTION_ROOT, plot: bool = True) -> str:
    """The outer loops' training curves beside the locomotion campaign's MAML-TRPO run of the same seed
    (and its ANIL run, when an ANIL variant is among ``methods``).

    Same seed, config and task stream (tasks derive from (seed, iteration)), so
    iteration i of every run trains on the same 40 tasks.  HalfCheetah
    episodes never end early, so env steps per iteration are exactly
    tasks x episodes x horizon x 2 (train and valid batches).  Writes
    ``ROOT/<family>_vs_maml_trpo.png`` (return after one step and before, vs
    env steps; unless ``plot`` is false) and returns a markdown table of the post-adaptation training
    return (10-iteration moving average) at fixed env-step milestones."""
    import yaml

    from experiments.locomotion_report import SMOOTH, smooth
    from metarl import scalars
    from metarl.plots import new_figure, save_png

    fig, (ax,) = new_figure(width=7.0, height=4.2)
    rows, per_iter = [], None
    for s in seeds:
        refs = ["maml"] + (["anil"] if any(m.startswith("anil") and m != "anil" for m in methods) else [])
        runs = [(METHOD_LABELS[r], reference / f"{family}__{r}__{s}") for r in refs] + [
            (METHOD_LABELS.get(m, m), root / f"{family}__{m}__{s}") for m in methods]
        for (label, d), colour in zip(runs, ("tab:blue", "tab:green", "tab:red", "tab:purple"), strict=False):
            if not (d / "scalars.csv").exists():
                continue
            cfg = yaml.safe_load((d / "config.yaml").read_text())
            steps = 2 * cfg["algo"]["meta_batch_size"] * cfg["algo"]["episodes_per_task"] * cfg["env"]["horizon"]
            per_iter = per_iter or steps
            done = done_iterations(d) or 0
            data = scalars.read(d, ["returns/pre_adapt", "returns/post_adapt"])
            it, post = data["returns/post_adapt"]
            keep = it < done
            x = (it[keep] + 1) * steps / 1e6
            sm = smooth(post[keep], SMOOTH)
            ax.plot(x, sm, "-", color=colour, label=f"{label} seed {s}, after 1 step")
            ax.plot(x, smooth(data["returns/pre_adapt"][1][keep], SMOOTH), "--", color=colour, lw=0.8,
                    label=f"{label} seed {s}, before")
            cells = [f"{sm[m - 1]:.1f}" if m <= len(sm) else "" for m in MILESTONES]
            rows.append(f"| {label} | {s} | {done} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("training return (10-iteration moving average)")
    ax.set_title(f"{family}: outer loops on the same task stream")
    ax.legend(fontsize=7)
    png = root / f"{family}_vs_maml_trpo.png"
    if plot:
        save_png(fig, png)
    head = [f"{family}: post-adaptation return on each iteration's training tasks (10-iteration moving average) "
            f"after the given number of meta-iterations ({per_iter:,} env steps each; MAML-TRPO from "
            f"`{reference.relative_to(ROOT) if reference.is_relative_to(ROOT) else reference}`). Plot: `{png.name}`.",
            "", "| outer loop | seed | iterations done | " + " | ".join(f"it {m}" for m in MILESTONES) + " |",
            "|---|---|---|" + "---|" * len(MILESTONES)]
    return "\n".join(head + rows) + "\n"



def cmd_maml(args: argparse.Namespace) -> None:
    from metarl.plots import new_figure, save_png

    root = Path(args.root)
    methods = ["maml", "pretrained", "random", "oracle"]
    jobs = [(config_for(args.family, m, s, args.iterations, args.set), root / f"{args.family}__{m}__{s}")
            for m in methods for s in args.seeds]
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir)
    curves = {}
    for m in methods:
        per_seed = [evaluate(root / f"{args.family}__{m}__{s}", args.eval_tasks, 3, args.eval_seed)["mean"]
                    for s in args.seeds]
        curves[m] = [statistics.mean(v) for v in zip(*per_seed)]
    rows = ["| method | 0 steps | 1 step | 2 steps | 3 steps |", "|---|---|---|---|---|"]
    for m, c in curves.items():
        rows.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in c) + " |")
    paper = MAML_PAPER.get(args.family)
    if paper:
        rows.append("| MAML (paper, fig. 5) | " + " | ".join(f"{v:.1f}" for v in paper) + " |")
    text = (f"{args.family}: budget {args.iterations} meta-iterations, seeds {args.seeds}; "
            f"{args.eval_tasks} held-out tasks (seed {args.eval_seed}).\n\n" + "\n".join(rows) + "\n")
    (root / f"maml_{args.family}.md").write_text(text)
    fig, (ax,) = new_figure()
    for m, c in curves.items():
        ax.plot(range(len(c)), c, marker="o", label=m)
    if paper:
        ax.plot(range(4), paper, "k--", label="MAML (paper)")
    ax.set_xticks(range(4))
    ax.set_xlabel("inner steps at test time")
    ax.set_ylabel("mean return on held-out tasks")
    ax.set_title(f"{args.family}: adaptation")
    ax.legend()
    png = save_png(fig, root / f"maml_{args.family}.png")
    print(text + f"wrote {root / f'maml_{args.family}.md'} and {png}")


def depth_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The depth sweep's runs, seed-major: MAML at every depth, the learned updates at the shallow ones.

    The sweep's own overrides (architecture, inner update) come after ``--set``."""
    from experiments.depth_report import run_name
    from metarl.config import load_config

    root = Path(args.root)
    cells = [("maml", d) for d in args.depths] + [(m, d) for m in ("kronecker", "meta_sgd")
                                                   for d in args.learned_depths]
    jobs = []
    for s in args.seeds:
        for method, depth in cells:
            overrides = [f"iterations={args.iterations}", f"seed={s}", f"name={method}_d{depth}", *args.set,
                         f"policy.hidden_sizes={[args.width] * depth}", f"algo.inner_update={INNER_UPDATES[method]}",
                         "algo.learn_inner_lr=false"]
            jobs.append((load_config(CONFIGS / FAMILY_CONFIGS["Navigation2D"], overrides),
                         root / run_name(method, depth, s)))
    return jobs


def cmd_depth(args: argparse.Namespace) -> None:
    """The depth sweep: train (resuming), evaluate one inner step, write the table and figure."""
    train_and_evaluate(args, depth_jobs(args), steps=1)
    from experiments import depth_report

    depth_report.main(["--root", str(args.root), "--eval-tasks", str(args.eval_tasks),
                       "--eval-seed", str(args.eval_seed)])


LOCOMOTION = ("HalfCheetahDir", "HalfCheetahVel")
# further families the locomotion campaign takes (``--families AntDir``), reported once they have runs
LOCOMOTION_MORE = ("AntDir", "AntVel")
# the campaign's protocol on every family: horizon 100, as pytorch-maml-rl's configs for HalfCheetah and Ant
# (``max_episode_steps: 100``); the HalfCheetah configs already say so, the Ant configs keep the MAML paper's 200
LOCOMOTION_SET = ["env.horizon=100"]
METAWORLD = {"ML1-reach": "metaworld_ml1_reach.yaml", "ML10": "metaworld_ml10.yaml"}
# TRPO's Fisher-vector products on a subsample of the batch (Schulman et al. 2015 use 10% of the data)
METAWORLD_SET = ["trpo.cg_subsample=0.3"]


def locomotion_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The campaign's runs, seed-major so that every configuration's first seed finishes first."""
    root = Path(args.root)
    return [(config_for(f, m, s, args.iterations, LOCOMOTION_SET + args.set), root / f"{f}__{m}__{s}")
            for s in args.seeds for f in args.families for m in args.methods]


def cmd_locomotion(args: argparse.Namespace) -> None:
    """MAML vs ANIL on the HalfCheetah families (and, when asked or already started, Ant): train (resuming),
    evaluate, write the report."""
    from experiments import locomotion_report

    if args.families is None:  # the report's families: HalfCheetah, then each further family with a run
        args.families = list(locomotion_report.families(locomotion_report.collect(Path(args.root))))
    train_and_evaluate(args, locomotion_jobs(args), steps=3, analysis=True)
    write_report(locomotion_report, Path(args.root))


ANIL2019_CONFIGS = CONFIGS / "anil2019"
# the 2019-setup campaign: HalfCheetahDir on three seeds first, then HalfCheetahVel on one
ANIL2019 = {"HalfCheetahDir": (1, 2, 3), "HalfCheetahVel": (1,)}


def anil2019_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The 2019-setup runs (``experiments/configs/anil2019/``), family by family in :data:`ANIL2019`'s order,
    seed-major within a family."""
    root = Path(args.root)
    return [(config_for(f, m, s, args.iterations, args.set, ANIL2019_CONFIGS), root / f"{f}__{m}__{s}")
            for f in args.families for s in (args.seeds or ANIL2019[f]) for m in args.methods]


def cmd_anil2019(args: argparse.Namespace) -> None:
    """MAML vs ANIL under the setup the ANIL paper inherited: train (resuming), evaluate the final and the
    best-training-iteration checkpoints, analyse the final one."""
    train_and_evaluate(args, anil2019_jobs(args), steps=3, analysis=True, best=True)


def write_report(report: Any, root: Path) -> None:
    """Run a report module (``locomotion_report``, ``metaworld_report``) on ``root``: the released runs
    rewrite their own section of RESULTS.md, any other root gets ``ROOT/report.md`` beside its runs."""
    root = root.resolve()
    extra = [] if root == report.DEFAULT_ROOT.resolve() else ["--results", str(root / "report.md")]
    report.main(["--root", str(root), *extra])


def metaworld_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    from metarl.config import load_config

    budgets = {"ML1-reach": args.iterations, "ML10": args.ml10_iterations}
    return [(load_config(CONFIGS / METAWORLD[b], [f"iterations={budgets[b]}", f"seed={s}", "name=maml"]
                         + METAWORLD_SET + args.set), Path(args.root) / f"{b}__maml__{s}")
            for s in args.seeds for b in args.benchmarks]


def metaworld_protocol(run_dir: Path, seed: int) -> dict[str, Any]:
    """``metarl evaluate RUN_DIR --protocol metaworld`` (cached in RUN_DIR/eval/metaworld.json for its
    latest iteration)."""
    from metarl.cli import main as cli

    out = run_dir / "eval" / "metaworld.json"
    if out.exists():
        cached = json.loads(out.read_text())
        if cached.get("iteration") == done_iterations(run_dir):
            return cached
    rc = cli(["evaluate", str(run_dir), "--protocol", "metaworld", "--seed", str(seed), "--out", str(out)])
    if rc:
        raise SystemExit(f"metarl evaluate --protocol metaworld {run_dir} failed (exit {rc})")
    return json.loads(out.read_text())  # the command records the checkpoint's iteration in it


def cmd_metaworld(args: argparse.Namespace) -> None:
    """MAML-TRPO on Meta-World ML1 reach and ML10: train (resuming), Meta-World's protocol, the report."""
    jobs = metaworld_jobs(args)
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir, latest_only=True)
        r = metaworld_protocol(run_dir, args.eval_seed)
        print(f"  {run_dir.name}: test success {r['success_rate']:.3f} ± {r['success_stderr']:.3f} after one "
              f"step ({r['success_rate_pre']:.3f} before), {r['num_tasks']} test tasks", flush=True)
    from experiments import metaworld_report

    write_report(metaworld_report, Path(args.root))


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    budgets = {"maml": 100, "anil": 200, "locomotion": 500, "outer": 100, "depth": 100, "metaworld": 100,
               "anil2019": 500}
    roots = {"maml": "runs/reproduce_maml", "anil": "runs/reproduce_anil", "locomotion": "results/locomotion",
             "outer": "results/outer", "depth": "results/depth", "metaworld": "results/metaworld",
             "anil2019": "results/anil2019"}
    for name in ("anil", "maml", "locomotion", "outer", "depth", "metaworld", "anil2019"):
        s = sub.add_parser(name)
        s.add_argument("--iterations", type=int, default=budgets[name],
                       help="meta-iterations per run (the budget)")
        s.add_argument("--seeds", type=int, nargs="+",
                       default=None if name == "anil2019" else [1] if name in ("maml", "metaworld") else [1, 2, 3],
                       help="seeds (anil2019: default 1 2 3 on HalfCheetahDir, 1 on HalfCheetahVel)")
        s.add_argument("--root", default=roots[name], help="where runs and tables go")
        if name != "metaworld":  # Meta-World's protocol scores every test task
            s.add_argument("--eval-tasks", type=int, default=40)
        s.add_argument("--eval-seed", type=int, default=0)
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="extra config override for every run, e.g. sampler.backend=local")
        s.add_argument("--no-estimate", action="store_true", help="skip the runtime estimate")
    sub.choices["anil"].add_argument("--families", nargs="+", default=["Navigation2D", "HalfCheetahDir",
                                                                       "HalfCheetahVel"], choices=FAMILY_CONFIGS)
    sub.choices["maml"].add_argument("--family", default="Navigation2D", choices=FAMILY_CONFIGS)
    sub.choices["locomotion"].add_argument("--families", nargs="+", default=None,
                                           choices=LOCOMOTION + LOCOMOTION_MORE,
                                           help="HalfCheetahDir and HalfCheetahVel by default, plus AntDir or "
                                                "AntVel once either has a run under --root; AntDir and AntVel "
                                                "run the same protocol (horizon 100)")
    sub.choices["locomotion"].add_argument("--methods", nargs="+", default=["maml", "anil"], choices=["maml", "anil"],
                                           help="which of the campaign's methods to run (e.g. extend only ANIL)")
    sub.choices["outer"].add_argument("--families", nargs="+", default=["Navigation2D"], choices=FAMILY_CONFIGS)
    sub.choices["outer"].add_argument("--methods", nargs="+", default=["promp", "maml_ppo"], choices=list(METHODS),
                                      help="outer loops (and MAML/ANIL variants) to compare")
    sub.choices["outer"].add_argument("--report-only", action="store_true",
                                      help="only rewrite ROOT/outer_table.md from the runs already there "
                                           "(no training, no rollouts)")
    a19 = sub.choices["anil2019"]
    a19.add_argument("--families", nargs="+", default=list(ANIL2019), choices=list(ANIL2019))
    a19.add_argument("--methods", nargs="+", default=["maml", "anil"], choices=["maml", "anil"])
    depth = sub.choices["depth"]
    depth.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4], help="hidden layers, MAML")
    depth.add_argument("--learned-depths", type=int, nargs="+", default=[1, 2],
                       help="hidden layers, Kronecker preconditioner and Meta-SGD")
    depth.add_argument("--width", type=int, default=64, help="width of every hidden layer")
    mw = sub.choices["metaworld"]
    mw.add_argument("--benchmarks", nargs="+", default=list(METAWORLD), choices=METAWORLD)
    mw.add_argument("--ml10-iterations", type=int, default=10, help="meta-iterations of the ML10 run")
    args = p.parse_args(argv)
    if getattr(args, "ml10_iterations", 1) < 1:
        p.error(f"--ml10-iterations must be >= 1, got {args.ml10_iterations}")
    if args.iterations < 1:
        p.error(f"--iterations must be >= 1, got {args.iterations}")
    t0 = time.time()
    from metarl import signals

    try:  # before a run trains nothing needs saving: exit at once
        with signals.handled(signals.exit_at_once("interrupted; run the same command to continue")):
            {"anil": cmd_anil, "maml": cmd_maml, "locomotion": cmd_locomotion, "outer": cmd_outer,
             "depth": cmd_depth, "metaworld": cmd_metaworld, "anil2019": cmd_anil2019}[args.which](args)
    except KeyboardInterrupt as e:  # SIGTERM too: the run in flight has written its checkpoint
        print("interrupted; run the same command to continue from the last checkpoint", file=sys.stderr)
        return signals.exit_code(e)
    print(f"total wall time {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
