"""``ROOT/outer_table.md``: outer loops and inner updates side by side, generated from the run artifacts.

Written by ``reproduce.py outer`` (``--report-only``: from the runs already
there, without training or rollouts).  A pure function of the files: each
run's config (its budget), ``checkpoints/latest`` (how far it got) and its
``eval/curve_<tasks>_3_<seed>.json`` (and those kept in ``eval/iter_NNNNNN/``
when it was extended past a budget); on a locomotion family also its
``scalars.csv`` beside the locomotion campaign's runs of the same seed.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from experiments.campaigns import LOCOMOTION, LOCOMOTION_ROOT, METHOD_LABELS, METHODS, ROOT
from experiments.reporting import SMOOTH_ITERATIONS, campaign_runs, env_steps_per_iteration, mean_pm_std, smooth
from metarl.rundir import curve_file

OUTER_RUN = re.compile(r"^(?P<family>[A-Za-z0-9]+)__(?P<method>\w+?)__(?P<seed>\d+)$")


def outer_report(root: Path, eval_tasks: int = 40, eval_seed: int = 0, plot: bool = True) -> str:
    """``ROOT/outer_table.md`` from the artifacts of every run under ``root`` alone (no training, no rollouts).

    One row per family, method and budget a run was evaluated at: each earlier
    budget's evaluation kept in ``eval/iter_NNNNNN/`` by an extension, and the
    latest when it is at the run's latest checkpoint. A seed that has not reached
    a budget is in flight towards it, or not extended when its own budget is
    smaller; the mean is over the seeds evaluated there. On a locomotion family the training curves follow
    (:func:`against_maml_trpo`)."""
    name = curve_file(eval_tasks, 3, eval_seed)
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rd, m in campaign_runs(root, OUTER_RUN):
        if m["method"] not in METHODS:
            continue
        done = rd.latest_iteration()
        curves = {}
        for it, where in [*rd.kept_budgets().items(), (done, rd.eval_dir)]:  # each evaluation made at `it`
            ev = rd.cached(str(where.relative_to(rd.eval_dir) / name), iteration=it)
            if ev is not None:
                curves[it] = ev["mean"]
        runs.setdefault((m["family"], m["method"]), {})[int(m["seed"])] = {
            "done": done, "budget": rd.config().iterations, "curves": curves}
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
    from metarl import scalars
    from metarl.plots import new_figure, save_png
    from metarl.rundir import RunDir

    fig, (ax,) = new_figure(width=7.0, height=4.2)
    rows, per_iter = [], None
    for s in seeds:
        refs = ["maml"] + (["anil"] if any(m.startswith("anil") and m != "anil" for m in methods) else [])
        runs = [(METHOD_LABELS[r], reference / f"{family}__{r}__{s}") for r in refs] + [
            (METHOD_LABELS.get(m, m), root / f"{family}__{m}__{s}") for m in methods]
        for (label, d), colour in zip(runs, ("tab:blue", "tab:green", "tab:red", "tab:purple"), strict=False):
            if not (d / "scalars.csv").exists():
                continue
            steps = env_steps_per_iteration(RunDir(d).config())
            per_iter = per_iter or steps
            done = RunDir(d).done_iterations() or 0
            data = scalars.read(d, ["returns/pre_adapt", "returns/post_adapt"])
            it, post = data["returns/post_adapt"]
            keep = it < done
            x = (it[keep] + 1) * steps / 1e6
            sm = smooth(post[keep], SMOOTH_ITERATIONS)
            ax.plot(x, sm, "-", color=colour, label=f"{label} seed {s}, after 1 step")
            ax.plot(x, smooth(data["returns/pre_adapt"][1][keep], SMOOTH_ITERATIONS), "--", color=colour, lw=0.8,
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
