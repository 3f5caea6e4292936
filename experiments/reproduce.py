"""Reproduce the published MAML and ANIL results with one command each.

    python experiments/reproduce.py anil [--iterations N] [--seeds 1 2 3] [--families ...]
    python experiments/reproduce.py maml [--iterations N] [--family Navigation2D] [--seeds 1]
    python experiments/reproduce.py locomotion [--iterations 500] [--seeds 1 2 3] [--families ...] [--methods maml anil]
    python experiments/reproduce.py outer [--methods promp maml_ppo] [--families Navigation2D] [--report-only]
    python experiments/reproduce.py depth [--iterations N] [--seeds 1 2 3] [--depths 1 2 3 4]
    python experiments/reproduce.py metaworld [--iterations 100] [--ml10-iterations 10] [--benchmarks ML1-reach ML10]
    python experiments/reproduce.py anil2019 [--iterations 500] [--families HalfCheetahDir HalfCheetahVel]
                                             [--ablate action_scale|activation|width|horizon]
    python experiments/reproduce.py cavia [--iterations 100] [--families Navigation2D HalfCheetahVel]
    python experiments/reproduce.py rules [--family Navigation2D|HalfCheetahVel] [--methods ...]  # default: both
    python experiments/reproduce.py rl2 [--iterations 150] [--families Navigation2D HalfCheetahVel]
                                        [--benchmark [ML1-reach]]
    python experiments/reproduce.py status       # every released campaign's --status
    python experiments/reproduce.py all [--status]   # the released campaigns' remaining work, one after another

``cavia``: CAVIA (``experiments/configs/cavia/``) beside MAML and ANIL on
Navigation2D (3 seeds), then CAVIA on HalfCheetahVel (1 seed, 500
iterations) beside the locomotion campaign's MAML and ANIL; NIL is every
run's return before adaptation. ``rules``: MAML-TRPO with each inner-update
rule on Navigation2D (3 seeds), and BLUR's genome found by CMA-ES from the
same seed's MAML policy; returns after 0..5 inner steps. Both write their
table with ``experiments/rules_report.py``.

``rl2``: RL² (Duan et al. 2016; ``experiments/configs/rl2/``) with the same
environment steps per meta-iteration as the committed MAML-TRPO runs of each
family: Navigation2D on seeds 1-3 (``--iterations``), HalfCheetahVel on seed 1
(500 iterations, as the locomotion campaign), then Meta-World ML1 reach on
seed 1 (``--benchmark``; 100 iterations, as the committed MAML run), scored
with Meta-World's protocol as one trial of 10 + 3 episodes.
Each run is evaluated on the same 40 held-out tasks (seed 0) and episodes per
task as the MAML curves, on trials of 4 episodes (episode 1..4 beside inner
steps 0..3); ``experiments/rl2_report.py`` writes RESULTS.md's RL² section and
``results/rl2/<family>_env_steps.png`` (learning curves by environment steps).

``anil2019``: MAML and ANIL under the setup the ANIL paper inherited from the
MAML authors (``experiments/configs/anil2019/``: (100, 100) ReLU, horizon
200, actions in [-1, 1]); HalfCheetahDir on seeds 1-3 first, then
HalfCheetahVel on seed 1. Each run is evaluated at its final iteration and at
its best training iteration (``checkpoints/best.pt``, the MAML paper's
protocol), and analysed (``metarl analyze``) at the final one. ``anil2019
--ablate SETTING`` runs the ablation instead: ANIL on HalfCheetahDir, seed 1,
with one setting (``action_scale``, ``activation``, ``width``, ``horizon``) at
the locomotion campaign's value, under ``ROOT/ablation/SETTING/``.

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

This file is the command line only: the campaigns (families, methods,
budgets, paper figures) are ``experiments/campaigns.py``; training and the
cached evaluations ``experiments/driver.py`` (over :class:`metarl.rundir.RunDir`);
the tables and figures ``experiments/reporting.py`` and the ``*_report.py`` scripts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the experiments package and metarl from this checkout

from experiments.campaigns import (  # noqa: E402
    ANIL2019,
    ANIL2019_ABLATION,
    ANIL2019_ABLATIONS,
    ANIL2019_CONFIGS,
    ANIL_PAPER,
    BUDGETS,
    CAVIA,
    CAVIA_LONG,
    CONFIGS,
    CONTINUE,
    DEPTH_METHODS,
    FAMILY_CONFIGS,
    LOCOMOTION,
    LOCOMOTION_METHODS,
    LOCOMOTION_MORE,
    LOCOMOTION_SET,
    MAML_PAPER,
    METAWORLD,
    METHOD_LABELS,
    METHODS,
    RL2,
    RL2_BENCHMARKS,
    RL2_BUDGETS,
    RL2_EVAL_EPISODES,
    ROOTS,
    RULES,
    RULES_LONG,
    RULES_SEEDS,
    RULES_STEPS,
    cavia_config,
    config_for,
    depth_config,
    depth_run_name,
    metaworld_config,
    rl2_config,
    rl2_match_config,
    rules_config,
    run_name,
)
from experiments.driver import evaluate, metaworld_protocol, print_plan, train, train_and_evaluate, trained  # noqa: E402
from experiments.outer_report import outer_report  # noqa: E402
from experiments.reporting import maml_figure, maml_table, over_seeds  # noqa: E402

__all__ = ["ANIL_PAPER", "CONFIGS", "FAMILY_CONFIGS", "LOCOMOTION", "LOCOMOTION_MORE", "METAWORLD", "METHODS",
           "METHOD_LABELS", "config_for", "main", "outer_report"]


def anil_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """MAML and ANIL on each family, every seed."""
    root = Path(args.root)
    return [(config_for(f, m, s, args.iterations, args.set), root / run_name(f, m, s))
            for f in args.families for m in ("maml", "anil") for s in args.seeds]


def cmd_anil(args: argparse.Namespace) -> None:
    """MAML and ANIL, three seeds each: train (resuming), evaluate one inner step, write ``ROOT/anil_table.md``."""
    root = Path(args.root)
    jobs = anil_jobs(args)
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir)
    rows = ["| family | method | ours: return after 1 step (mean ± std over seeds) | paper |", "|---|---|---|---|"]
    for f in args.families:
        for m in ("maml", "anil"):
            finals = [evaluate(root / run_name(f, m, s), args.eval_tasks, 1, args.eval_seed)["mean"][1]
                      for s in args.seeds]
            rows.append(f"| {f} | {m.upper()} | {over_seeds(finals)} | {ANIL_PAPER.get((f, m), '-')} |")
    text = (f"Budget: {args.iterations} meta-iterations per run; evaluation on {args.eval_tasks} held-out tasks "
            f"(seed {args.eval_seed}), one inner step.\n\n" + "\n".join(rows) + "\n")
    out = root / "anil_table.md"
    out.write_text(text)
    print(text + f"wrote {out}")


def outer_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """Each outer loop (method) on each family, seed-major."""
    root = Path(args.root)
    return [(config_for(f, m, s, args.iterations, args.set), root / run_name(f, m, s))
            for s in args.seeds for f in args.families for m in args.methods]


def cmd_outer(args: argparse.Namespace) -> None:
    """Outer loops side by side: train (resuming), evaluate 0..3 steps, write ``ROOT/outer_table.md``
    (with ``--report-only``: only the table, from the artifacts already there)."""
    root = Path(args.root)
    if not args.report_only:
        train_and_evaluate(args, outer_jobs(args), steps=3)
    text = outer_report(root, args.eval_tasks, args.eval_seed)
    out = root / "outer_table.md"
    out.write_text(text)
    print(text + f"wrote {out}")


MAML_BASELINES = ["maml", "pretrained", "random", "oracle"]


def maml_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """MAML-TRPO and the baselines of Finn et al. on one family, every seed."""
    root = Path(args.root)
    return [(config_for(args.family, m, s, args.iterations, args.set), root / run_name(args.family, m, s))
            for m in MAML_BASELINES for s in args.seeds]


def cmd_maml(args: argparse.Namespace) -> None:
    """MAML-TRPO and the baselines of Finn et al. on one family: train, evaluate 0..3 steps, table and figure."""
    root = Path(args.root)
    jobs = maml_jobs(args)
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir)
    curves = {}
    for m in MAML_BASELINES:
        per_seed = [evaluate(root / run_name(args.family, m, s), args.eval_tasks, 3, args.eval_seed)["mean"]
                    for s in args.seeds]
        curves[m] = [statistics.mean(v) for v in zip(*per_seed)]
    paper = MAML_PAPER.get(args.family)
    text = (f"{args.family}: budget {args.iterations} meta-iterations, seeds {args.seeds}; "
            f"{args.eval_tasks} held-out tasks (seed {args.eval_seed}).\n\n" + "\n".join(maml_table(curves, paper))
            + "\n")
    (root / f"maml_{args.family}.md").write_text(text)
    png = maml_figure(curves, paper, args.family, root / f"maml_{args.family}.png")
    print(text + f"wrote {root / f'maml_{args.family}.md'} and {png}")


def depth_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The depth sweep's runs, seed-major: MAML at every depth, the learned updates at the shallow ones."""
    root = Path(args.root)
    cells = [("maml", d) for d in args.depths] + [(m, d) for m in DEPTH_METHODS if m != "maml"
                                                   for d in args.learned_depths]
    return [(depth_config(method, depth, s, args.iterations, args.width, args.set),
             root / depth_run_name(method, depth, s)) for s in args.seeds for method, depth in cells]


def cmd_depth(args: argparse.Namespace) -> None:
    """The depth sweep: train (resuming), evaluate one inner step, write the table and figure."""
    from experiments import depth_report

    train_and_evaluate(args, depth_jobs(args), steps=1)
    depth_report.main(["--root", str(args.root), "--eval-tasks", str(args.eval_tasks),
                       "--eval-seed", str(args.eval_seed)])


def locomotion_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The campaign's runs, seed-major so that every configuration's first seed finishes first."""
    from experiments import locomotion_report

    root = Path(args.root)
    if args.families is None:  # the report's families: HalfCheetah, then each further family with a run
        args.families = list(locomotion_report.families(locomotion_report.collect(root)))
    return [(config_for(f, m, s, args.iterations, LOCOMOTION_SET + args.set), root / run_name(f, m, s))
            for s in args.seeds for f in args.families for m in args.methods]


def cmd_locomotion(args: argparse.Namespace) -> None:
    """MAML vs ANIL on the HalfCheetah families (and, when asked or already started, Ant): train (resuming),
    evaluate, write the report."""
    from experiments import locomotion_report

    train_and_evaluate(args, locomotion_jobs(args), steps=3, analysis=True)
    write_report(locomotion_report, Path(args.root))


def anil2019_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The 2019-setup runs (``experiments/configs/anil2019/``), family by family in :data:`ANIL2019`'s order,
    seed-major within a family."""
    if getattr(args, "ablate", None):
        return anil2019_ablation_jobs(args)
    root = Path(args.root)
    methods = args.methods or ["maml", "anil"]
    return [(config_for(f, m, s, args.iterations, args.set, ANIL2019_CONFIGS), root / run_name(f, m, s))
            for f in args.families for s in (args.seeds or ANIL2019[f]) for m in methods]


def anil2019_ablation_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The ablation ``--ablate NAME``: the 2019 setup with one setting at the locomotion campaign's value
    (:data:`ANIL2019_ABLATIONS`), HalfCheetahDir, ANIL on seed 1 unless ``--methods``/``--seeds`` say otherwise,
    under ``ROOT/ablation/NAME/``."""
    family, seeds, methods = ANIL2019_ABLATION
    root = Path(args.root) / "ablation" / args.ablate
    extra = ANIL2019_ABLATIONS[args.ablate] + args.set
    return [(config_for(family, m, s, args.iterations, extra, ANIL2019_CONFIGS), root / run_name(family, m, s))
            for s in (args.seeds or seeds) for m in (args.methods or methods)]


def cmd_anil2019(args: argparse.Namespace) -> None:
    """MAML vs ANIL under the setup the ANIL paper inherited: train (resuming), evaluate the final and the
    best-training-iteration checkpoints, analyse the final one."""
    train_and_evaluate(args, anil2019_jobs(args), steps=3, analysis=True, best=True)


def cavia_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The CAVIA campaign's runs, family by family in :data:`CAVIA`'s order, seed-major within a family."""
    root = Path(args.root)
    return [(cavia_config(f, m, s, CAVIA_LONG.get(f, args.iterations), args.set), root / run_name(f, m, s))
            for f in args.families for s in (args.seeds or CAVIA[f][0]) for m in CAVIA[f][1]]


def cmd_cavia(args: argparse.Namespace) -> None:
    """CAVIA beside MAML and ANIL: train (resuming), evaluate 0..3 inner steps, analyse, write the table."""
    from experiments import rules_report

    train_and_evaluate(args, cavia_jobs(args), steps=3, analysis=True)
    rules_report.main(["cavia", "--root", str(args.root), "--eval-tasks", str(args.eval_tasks),
                       "--eval-seed", str(args.eval_seed)])


def rules_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The rules comparison's runs, seed-major (each seed's MAML run first: ``blur_cma`` starts from it)."""
    root = Path(args.root)
    return [(rules_config(m, s, args.iterations, args.set, root, args.family), root / run_name(args.family, m, s))
            for s in args.seeds for m in args.methods]


def transfer(run_dir: Path, tasks: int, seed: int) -> dict[str, Any]:
    """The ``transfer`` evaluation of ``run_dir`` (Navigation2D's outer ring), cached in ``eval/transfer.json``
    for its latest iteration."""
    from metarl.evaluations import EVALUATIONS, settings_for
    from metarl.rundir import RunDir

    rd = RunDir(run_dir)
    cached = rd.cached("transfer.json", iteration=rd.done_iterations(), learned__num_tasks=tasks)
    if cached is not None:
        return cached
    settings = settings_for("transfer", {"tasks": tasks, "steps": RULES_STEPS, "seed": seed})
    return EVALUATIONS["transfer"].run(rd, rd.load(), settings, rd.eval_path("transfer.json"), lambda _: None).result


def rules_stages(args: argparse.Namespace) -> list[argparse.Namespace]:
    """The rules comparison's stages: ``--family`` alone, or Navigation2D then :data:`RULES_LONG`'s families,
    each with its own defaults for what the command line left unset (:func:`rules_defaults`, filled when the
    stage starts, so that a later stage chooses on the table the earlier one finished)."""
    families = [args.family] if args.family else ["Navigation2D", *RULES_LONG]
    return [argparse.Namespace(**{**vars(args), "family": f}) for f in families]


def rules_defaults(args: argparse.Namespace) -> str | None:
    """Fill the rules comparison's unset ``--methods``, ``--seeds`` and ``--iterations``: every rule on
    Navigation2D (:data:`RULES_SEEDS`, the budget); on a :data:`RULES_LONG` family its seeds and budget, and
    MAML against the best two learned rules of the committed Navigation2D table. Returns why that choice cannot
    be made (one line), or None."""
    from experiments import rules_report

    long = RULES_LONG.get(args.family)
    if args.seeds is None:
        args.seeds = list(long[0] if long else RULES_SEEDS)
    if args.iterations is None:
        args.iterations = long[1] if long else BUDGETS["rules"]
    if args.methods is None:
        if not long:
            args.methods = list(RULES)
        else:
            try:
                args.methods = ["maml", *rules_report.best_rules(Path(args.root), tasks=args.eval_tasks,
                                                                 eval_seed=args.eval_seed)]
            except ValueError as e:
                return str(e)
            print(f"{args.family}: MAML against the best two rules on Navigation2D, "
                  f"{' and '.join(args.methods[1:])}")
    return None


def cmd_rules(args: argparse.Namespace) -> None:
    """The inner-update rules: on Navigation2D, train (resuming), evaluate 0..5 inner steps and the transfer;
    then on HalfCheetahVel, MAML against the best two (or ``--family`` alone); write the table."""
    from experiments import rules_report

    for stage in rules_stages(args):
        why = rules_defaults(stage)
        if why is not None:  # an earlier stage left runs unfinished (a failed run): the next cannot choose
            print(f"{stage.family}: not started: {why}")
            break
        jobs = rules_jobs(stage)
        train_and_evaluate(stage, jobs, steps=RULES_STEPS)
        if stage.family == "Navigation2D":  # BLUR's own claim: the rule on goals it never trained on (outer ring)
            for _, run_dir in jobs:
                transfer(run_dir, stage.eval_tasks, stage.eval_seed)
    rules_report.main(["rules", "--root", str(args.root), "--eval-tasks", str(args.eval_tasks),
                       "--eval-seed", str(args.eval_seed)])


def rules_status_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """:func:`rules_jobs` of every stage whose runs are known now (a later stage's rules are chosen on the
    finished Navigation2D table; until then it is named, not listed)."""
    jobs = []
    for stage in rules_stages(args):
        why = rules_defaults(stage)
        if why is not None:
            print(f"  {stage.family}: its rules are chosen once the Navigation2D table is finished")
            continue
        jobs += rules_jobs(stage)
    return jobs


def rl2_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """The RL² campaign's runs: family by family in :data:`RL2`'s order, seed-major within a family
    (Navigation2D at ``--iterations``, HalfCheetahVel at its own budget), then each ``--benchmark``."""
    root = Path(args.root)
    jobs = [(rl2_config(f, s, args.iterations if f == "Navigation2D" else RL2_BUDGETS[f], args.set),
             root / run_name(f, "rl2", s)) for f in args.families for s in (args.seeds or RL2[f])]
    jobs += [(rl2_config(b, s, RL2_BUDGETS[b], args.set), root / run_name(b, "rl2", s))
             for b in args.benchmark for s in (args.seeds or RL2_BENCHMARKS[b])]
    return jobs


def trials(run_dir: Path, tasks: int, episodes_per_trial: int, episodes: int, seed: int) -> dict[str, Any]:
    """RL²'s trial curve of ``run_dir`` (``metarl evaluate RUN_DIR --steps N --episodes B``: episode 1..N of
    trials on the held-out tasks), cached in ``eval/trials_<tasks>_<N>_<seed>.json`` for its latest
    iteration."""
    from metarl.evaluations import EVALUATIONS, settings_for
    from metarl.rundir import RunDir

    rd = RunDir(run_dir)
    name = f"trials_{tasks}_{episodes_per_trial}_{seed}.json"
    cached = rd.cached(name, iteration=rd.done_iterations(), num_tasks=tasks, episodes_per_task=episodes)
    if cached is not None:
        return cached
    settings = settings_for("trials", {"tasks": tasks, "steps": episodes_per_trial, "episodes": episodes,
                                       "seed": seed})
    return EVALUATIONS["trials"].run(rd, rd.load(), settings, rd.eval_path(name), lambda _: None).result


def rl2_protocol(run_dir: Path, seed: int) -> dict[str, Any]:
    """Meta-World's protocol for an RL² run (one trial of 10 + 3 episodes per test task), cached in
    ``eval/metaworld.json`` for its latest iteration."""
    from metarl.evaluations import EVALUATIONS, settings_for
    from metarl.rundir import RunDir

    rd = RunDir(run_dir)
    cached = rd.cached("metaworld.json", iteration=rd.done_iterations())
    if cached is not None:
        return cached
    return EVALUATIONS["metaworld"].run(rd, rd.load(), settings_for("metaworld", {"seed": seed}),
                                        rd.eval_path("metaworld.json"), lambda _: None).result


def cmd_rl2(args: argparse.Namespace) -> None:
    """RL² beside MAML, ANIL and CAVIA: train (resuming), evaluate episodes 1..4 of trials on the held-out tasks
    (Meta-World: its protocol), write the report."""
    from experiments import rl2_report

    for _, run_dir in trained(args, rl2_jobs(args)):
        family = run_dir.name.split("__")[0]
        if family in RL2_BENCHMARKS:
            r = rl2_protocol(run_dir, args.eval_seed)
            print(f"  {run_dir.name}: test success {r['success_rate']:.3f} ± {r['success_stderr']:.3f} in the last "
                  f"{r['evaluation_episodes']} episodes of a trial ({r['success_rate_pre']:.3f} in the first "
                  f"{r['adaptation_episodes']}), {r['num_tasks']} test tasks", flush=True)
            continue
        # the same held-out tasks, seed and episodes per point as the MAML curves of the family
        episodes = rl2_match_config(family).algo.episodes_per_task
        r = trials(run_dir, args.eval_tasks, RL2_EVAL_EPISODES, episodes, args.eval_seed)
        print(f"  {run_dir.name}: episodes 1..{RL2_EVAL_EPISODES} of a trial " +
              " / ".join(f"{m:.1f}" for m in r["mean"]), flush=True)
    rl2_report.main(["--root", str(args.root), *(["--results", str(Path(args.root) / "report.md")]
                                                 if Path(args.root).resolve() != rl2_report.DEFAULT_ROOT.resolve()
                                                 else [])])


def write_report(report: Any, root: Path) -> None:
    """Run a report module (``locomotion_report``, ``metaworld_report``) on ``root``: the released runs
    rewrite their own section of RESULTS.md, any other root gets ``ROOT/report.md`` beside its runs."""
    root = root.resolve()
    extra = [] if root == report.DEFAULT_ROOT.resolve() else ["--results", str(root / "report.md")]
    report.main(["--root", str(root), *extra])


def metaworld_jobs(args: argparse.Namespace) -> list[tuple[Any, Path]]:
    """ML1 reach (budget ``--iterations``) and ML10 (``--ml10-iterations``), seed-major."""
    budgets = {"ML1-reach": args.iterations, "ML10": args.ml10_iterations}
    return [(metaworld_config(b, s, budgets[b], args.set), Path(args.root) / run_name(b, "maml", s))
            for s in args.seeds for b in args.benchmarks]


def cmd_metaworld(args: argparse.Namespace) -> None:
    """MAML-TRPO on Meta-World ML1 reach and ML10: train (resuming), Meta-World's protocol, the report."""
    from experiments import metaworld_report

    jobs = metaworld_jobs(args)
    if not args.no_estimate:
        print_plan(jobs)
    for cfg, run_dir in jobs:
        train(cfg, run_dir, latest_only=True)
        r = metaworld_protocol(run_dir, args.eval_seed)
        print(f"  {run_dir.name}: test success {r['success_rate']:.3f} ± {r['success_stderr']:.3f} after one "
              f"step ({r['success_rate_pre']:.3f} before), {r['num_tasks']} test tasks", flush=True)
    write_report(metaworld_report, Path(args.root))


JOBS = {"anil": anil_jobs, "maml": maml_jobs, "outer": outer_jobs, "locomotion": locomotion_jobs, "depth": depth_jobs,
        "anil2019": anil2019_jobs, "cavia": cavia_jobs, "rules": rules_status_jobs, "rl2": rl2_jobs,
        "metaworld": metaworld_jobs}  # every subcommand's runs, for --status


def recent_pace(run_dir: Path, last: int = 20) -> float | None:
    """Median seconds per iteration over the run's last ``last`` logged iterations (``time/iteration_s``), or
    None when it logged none."""
    from metarl import scalars

    secs = scalars.last_values(run_dir, "time/iteration_s", last)
    return float(statistics.median(secs.tolist())) if len(secs) else None


def duration(seconds: float) -> str:
    """``40 min`` under two hours, else ``2.3 h``."""
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


RELEASED = ("locomotion", "anil2019", "cavia", "rules", "rl2", "outer", "depth", "metaworld")  # runs under results/


def status(jobs: list[tuple[Any, Path]]) -> None:
    """Where each of the campaign's runs stands, from its run directory alone (nothing trained or written):
    finished, in flight at the iteration of its latest checkpoint (training now in process N, or stopped,
    where the system says which: the holder of the run directory's lock; with the training time it has left
    at its recent pace), or not started."""
    from metarl.rundir import RunDir, locks_readable

    counts = {"finished": 0, "in flight": 0, "not started": 0}
    training = 0
    known = locks_readable()
    for cfg, run_dir in jobs:
        rd = RunDir(run_dir)
        done = (rd.done_iterations() or 0) if rd.is_run() else None
        state = "not started" if done is None else "finished" if done >= cfg.iterations else "in flight"
        counts[state] += 1
        where = "" if done is None else f" at {done} of {cfg.iterations}"
        if state == "in flight" and known:
            pid = rd.trainer()
            training += pid is not None
            where += f", training now in process {pid}" if pid is not None else ", stopped"
        pace = recent_pace(run_dir) if state == "in flight" else None
        if pace is not None:
            where += (f", about {duration(pace * (cfg.iterations - done))} of training left at "
                      f"{pace:.1f} s an iteration")
        print(f"  {run_dir}: {state}{where}")
    parts = [f"{n} {state}" for state, n in counts.items()]
    if known and counts["in flight"]:
        parts[1] += f" ({training} training now)"
    print(", ".join(parts) + f" ({len(jobs)} runs)")


def run_command(argv: list[str]) -> int:
    """Run ``argv`` to its end and return its exit code. The child runs in its own session and this process
    hands it each SIGINT and SIGTERM it receives, exactly once (Ctrl-C, a scheduler's SIGTERM to this process
    or to its whole group): the child writes its checkpoint and exits 130 or 143, never signalled twice or
    killed mid-write."""
    import contextlib
    import signal

    proc = subprocess.Popen(argv, start_new_session=True)

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run_all(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``reproduce.py all``: each command of :data:`CONTINUE` in its own process, one after another (``--status``:
    each one's status, in this process). Returns the first non-zero exit code (an interrupted command's 130 or
    143 stops the queue: running ``all`` again continues it), else 0."""
    for i, command in enumerate(CONTINUE, 1):
        line = " ".join(command)
        print(f"[{i}/{len(CONTINUE)}] reproduce.py {line}", flush=True)
        if args.status:
            status(JOBS[command[0]](p.parse_args(list(command))))
            continue
        rc = run_command([sys.executable, str(Path(__file__).resolve()), *command,
                          *(["--no-estimate"] if args.no_estimate else [])])
        if rc != 0:
            print(f"reproduce.py {line} exited {rc}; run `reproduce.py all` again to continue", file=sys.stderr)
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    for name in ("anil", "maml", "locomotion", "outer", "depth", "metaworld", "anil2019", "cavia", "rules", "rl2"):
        s = sub.add_parser(name)
        s.add_argument("--iterations", type=int, default=None if name == "rules" else BUDGETS[name],
                       help="meta-iterations per run (the budget; rules: 100 on Navigation2D, 300 on HalfCheetahVel)")
        s.add_argument("--seeds", type=int, nargs="+",
                       default=None if name in ("anil2019", "cavia", "rl2", "rules") else [1] if name in ("maml",
                                                                                                "metaworld")
                       else [1, 2, 3],
                       help="seeds (anil2019: default 1 2 3 on HalfCheetahDir, 1 on HalfCheetahVel; cavia and rl2: "
                            "1 2 3 on Navigation2D, 1 on HalfCheetahVel; rl2: 1 on ML1-reach; rules: 1 2 3 on "
                            "Navigation2D, 1 on HalfCheetahVel)")
        s.add_argument("--root", default=ROOTS[name], help="where runs and tables go")
        if name != "metaworld":  # Meta-World's protocol scores every test task
            s.add_argument("--eval-tasks", type=int, default=40)
        s.add_argument("--eval-seed", type=int, default=0)
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="extra config override for every run, e.g. sampler.backend=local")
        s.add_argument("--no-estimate", action="store_true", help="skip the runtime estimate")
        s.add_argument("--status", action="store_true",
                       help="only print where each run stands (finished, in flight at iteration N with the training "
                            "time it has left at its recent pace, not started); nothing is trained or written")
        if name in ("locomotion", "outer", "depth", "anil2019", "cavia", "rules", "rl2"):
            s.add_argument("--parallel", type=int, default=1, metavar="N",
                           help="train N runs at a time as Ray tasks on this machine (each reserves sampler.workers "
                                "CPUs, 1 when unset), then evaluate them")
            s.add_argument("--ray-address", metavar="HOST:PORT",
                           help="train the runs as Ray tasks on the cluster at HOST:PORT (run directories on storage "
                                "every node mounts, --root); then evaluate them here")
    sub.choices["anil"].add_argument("--families", nargs="+", default=["Navigation2D", "HalfCheetahDir",
                                                                       "HalfCheetahVel"], choices=FAMILY_CONFIGS)
    sub.choices["maml"].add_argument("--family", default="Navigation2D", choices=FAMILY_CONFIGS)
    sub.choices["locomotion"].add_argument("--families", nargs="+", default=None,
                                           choices=LOCOMOTION + LOCOMOTION_MORE,
                                           help="HalfCheetahDir and HalfCheetahVel by default, plus AntDir or "
                                                "AntVel once either has a run under --root; AntDir and AntVel "
                                                "run the same protocol (horizon 100)")
    sub.choices["locomotion"].add_argument("--methods", nargs="+", default=list(LOCOMOTION_METHODS),
                                           choices=LOCOMOTION_METHODS,
                                           help="which of the campaign's methods to run (e.g. extend only ANIL)")
    sub.choices["outer"].add_argument("--families", nargs="+", default=["Navigation2D"], choices=FAMILY_CONFIGS)
    sub.choices["outer"].add_argument("--methods", nargs="+", default=["promp", "maml_ppo"], choices=list(METHODS),
                                      help="outer loops (and MAML/ANIL variants) to compare")
    sub.choices["outer"].add_argument("--report-only", action="store_true",
                                      help="only rewrite ROOT/outer_table.md from the runs already there "
                                           "(no training, no rollouts)")
    a19 = sub.choices["anil2019"]
    a19.add_argument("--families", nargs="+", default=list(ANIL2019), choices=list(ANIL2019))
    a19.add_argument("--methods", nargs="+", default=None, choices=["maml", "anil"],
                     help="default: both; with --ablate, anil")
    a19.add_argument("--ablate", choices=list(ANIL2019_ABLATIONS), default=None, metavar="SETTING",
                     help="instead of the campaign: HalfCheetahDir under the 2019 setup with this one setting at the "
                          "locomotion campaign's value (" + ", ".join(
                              f"{k}: {' '.join(v)}" for k, v in ANIL2019_ABLATIONS.items())
                          + "), ANIL on seed 1, under ROOT/ablation/SETTING/")
    cav = sub.choices["cavia"]
    cav.add_argument("--families", nargs="+", default=list(CAVIA), choices=list(CAVIA),
                     help="Navigation2D (MAML, ANIL, CAVIA at --iterations), then HalfCheetahVel (CAVIA at "
                          f"{CAVIA_LONG['HalfCheetahVel']}, beside the locomotion campaign's MAML and ANIL)")
    sub.choices["rules"].add_argument("--family", default=None, choices=["Navigation2D", "HalfCheetahVel"],
                                      help="only this stage (default: both, in order): Navigation2D (the table "
                                           "and the transfer to the outer ring), then HalfCheetahVel: MAML "
                                           "against the two learned rules with the best return after one step "
                                           "on the finished Navigation2D table, seed 1, 300 iterations")
    sub.choices["rules"].add_argument("--methods", nargs="+", default=None, choices=list(RULES),
                                      help="inner-update rules under MAML-TRPO, and blur_cma (BLUR's genome by "
                                           "CMA-ES from the same seed's maml run); default: all on Navigation2D, "
                                           "maml and the best two on HalfCheetahVel")
    rl2 = sub.choices["rl2"]
    rl2.add_argument("--families", nargs="*", default=list(RL2), choices=list(RL2),
                     help="Navigation2D (seeds 1 2 3 at --iterations), then HalfCheetahVel (seed 1 at "
                          f"{RL2_BUDGETS['HalfCheetahVel']} iterations); give none to run only --benchmark")
    rl2.add_argument("--benchmark", nargs="*", default=list(RL2_BENCHMARKS), choices=list(RL2_BENCHMARKS),
                     help="then Meta-World (default: ML1-reach, seed 1 at "
                          f"{RL2_BUDGETS['ML1-reach']} iterations, Meta-World's protocol, beside the committed MAML "
                          "run); give none to run only --families")
    depth = sub.choices["depth"]
    depth.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3, 4], help="hidden layers, MAML")
    depth.add_argument("--learned-depths", type=int, nargs="+", default=[1, 2],
                       help="hidden layers, Kronecker preconditioner and Meta-SGD")
    depth.add_argument("--width", type=int, default=64, help="width of every hidden layer")
    mw = sub.choices["metaworld"]
    mw.add_argument("--benchmarks", nargs="+", default=list(METAWORLD), choices=METAWORLD)
    mw.add_argument("--ml10-iterations", type=int, default=10, help="meta-iterations of the ML10 run")
    sub.add_parser("status", help="where every released campaign stands (each one's --status, with its default "
                                  "arguments): nothing is trained or written")
    everything = sub.add_parser("all", help="the released campaigns' remaining work, one command after another "
                                            "(experiments/campaigns.py CONTINUE; each skips finished runs and "
                                            "resumes interrupted ones); stops at the first that fails or is "
                                            "interrupted, with its exit code")
    everything.add_argument("--no-estimate", action="store_true", help="skip each command's runtime estimate")
    everything.add_argument("--status", action="store_true",
                            help="only print the queue and where each command's runs stand; nothing is trained")
    args = p.parse_args(argv)
    if args.which == "status":
        for name in RELEASED:
            print(f"{name} ({ROOTS[name]}):")
            status(JOBS[name](p.parse_args([name])))
        return 0
    if args.which == "all":
        return run_all(p, args)
    if getattr(args, "ml10_iterations", 1) < 1:
        p.error(f"--ml10-iterations must be >= 1, got {args.ml10_iterations}")
    if args.which == "rules" and args.family and not getattr(args, "status", False):
        why = rules_defaults(argparse.Namespace(**vars(args)))  # the stage asked for alone must be able to start
        if why is not None:
            p.error(why)
    if args.iterations is not None and args.iterations < 1:
        p.error(f"--iterations must be >= 1, got {args.iterations}")
    if getattr(args, "status", False):
        status(JOBS[args.which](args))
        return 0
    if getattr(args, "parallel", 1) < 1:
        p.error(f"--parallel must be >= 1, got {args.parallel}")
    t0 = time.time()
    from metarl import signals

    try:  # before a run trains nothing needs saving: exit at once
        with signals.handled(signals.exit_at_once("interrupted; run the same command to continue")):
            {"anil": cmd_anil, "maml": cmd_maml, "locomotion": cmd_locomotion, "outer": cmd_outer,
             "depth": cmd_depth, "metaworld": cmd_metaworld, "anil2019": cmd_anil2019, "cavia": cmd_cavia,
             "rules": cmd_rules, "rl2": cmd_rl2}[args.which](args)
    except KeyboardInterrupt as e:  # SIGTERM too: the run in flight has written its checkpoint
        print("interrupted; run the same command to continue from the last checkpoint", file=sys.stderr)
        return signals.exit_code(e)
    print(f"total wall time {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
