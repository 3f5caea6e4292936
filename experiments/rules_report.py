"""The tables of the CAVIA campaign and of the inner-update rules comparison, from their run artifacts alone.

    python experiments/rules_report.py cavia [--root results/cavia]    # -> ROOT/cavia_table.md
    python experiments/rules_report.py rules [--root results/rules]    # -> ROOT/rules_table.md

The released runs (the default roots) also rewrite their section of
RESULTS.md (between ``<!-- cavia:begin ...`` / ``<!-- rules:begin ...``
and the matching end marker); ``--check`` compares the table and the section.

One row per family and method: the seeds evaluated at their budget (a seed
still training shows as in flight), the return after one inner step (mean ±
std over seeds), and the mean return after each of 0..K inner steps on the
held-out tasks (step 0: the meta-policy, NIL). The rules report adds what
each learned rule became, read from its checkpoint alone (:func:`learned_table`).
The CAVIA table takes the
locomotion campaign's MAML and ANIL runs for HalfCheetahVel (the same
config, horizon 100). No training, no rollouts.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.campaigns import (  # noqa: E402
    CAVIA,
    LOCOMOTION_ROOT,
    METHOD_LABELS,
    ROOTS,
    RULES,
    RULES_CANDIDATES,
    RULES_LONG,
    RULES_SEEDS,
    RULES_STEPS,
)
from experiments.reporting import campaign_runs, n_seeds, num, over_seeds, welch_se  # noqa: E402
from metarl.rundir import RunDir, curve_file  # noqa: E402

RUN = re.compile(r"^(?P<family>[A-Za-z0-9]+)__(?P<method>\w+?)__(?P<seed>\d+)$")
EVAL_TASKS, EVAL_SEED = 40, 0


def curves(rows: dict[tuple[str, str], dict[int, object]], rd: RunDir, family: str, method: str, seed: int,
           steps: int, tasks: int, eval_seed: int) -> None:
    """Add run ``rd``'s curve at its budget to ``rows`` (or how far it is when it has none yet)."""
    done = rd.done_iterations() or 0
    budget = rd.config().iterations
    ev = rd.cached(curve_file(tasks, steps, eval_seed), iteration=done) if done >= budget else None
    rows.setdefault((family, method), {})[seed] = ev["mean"] if ev else f"in flight ({done}/{budget})"


def best_rules(root: Path, n: int = 2, tasks: int = EVAL_TASKS, eval_seed: int = EVAL_SEED) -> list[str]:
    """The ``n`` rules of :data:`RULES_CANDIDATES` with the highest return after one inner step on Navigation2D
    (mean over :data:`RULES_SEEDS`), best first; a :class:`ValueError` names the runs that have not finished
    and been evaluated at their budget (the choice is made on the whole table or not at all)."""
    rows: dict[tuple[str, str], dict[int, object]] = {}
    for rd, m in campaign_runs(root, RUN):
        if m["family"] == "Navigation2D" and m["method"] in RULES_CANDIDATES and int(m["seed"]) in RULES_SEEDS:
            curves(rows, rd, m["family"], m["method"], int(m["seed"]), RULES_STEPS, tasks, eval_seed)
    missing = [f"{method} seed {seed}" for method in RULES_CANDIDATES for seed in RULES_SEEDS
               if not isinstance(rows.get(("Navigation2D", method), {}).get(seed), list)]
    if missing:
        raise ValueError(f"the best rules are chosen on the finished Navigation2D table under {root}; not finished "
                         f"and evaluated: {', '.join(missing)} (run reproduce.py rules first, or name --methods)")
    score = {m: statistics.mean(c[1] for c in rows["Navigation2D", m].values()) for m in RULES_CANDIDATES}
    return sorted(RULES_CANDIDATES, key=lambda m: (-score[m], RULES_CANDIDATES.index(m)))[:n]


def long_runs(root: Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """The rules' runs on :data:`RULES_LONG`'s families that have trained at least one iteration (a run just
    started has no curve to draw), as the locomotion report's learning curves read them."""
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for rd, m in campaign_runs(root, RUN):
        done = rd.done_iterations() or 0
        if m["family"] in RULES_LONG and done > 0:
            runs.setdefault((m["family"], m["method"]), {})[int(m["seed"])] = {"dir": rd.path, "done": done}
    return runs


def long_text(root: Path, tasks: int, eval_seed: int) -> list[str]:
    """Which rules the longer runs compare (and why), and their learning curves' image, once any has run."""
    runs = long_runs(root)
    out = []
    for family, (seeds, budget) in RULES_LONG.items():
        if not any(f == family for f, _ in runs):
            continue
        try:
            chosen = best_rules(root, tasks=tasks, eval_seed=eval_seed)
            why = (f"the two with the best return after one inner step on Navigation2D: "
                   f"{', '.join(METHOD_LABELS.get(m, m) for m in chosen)}")
        except ValueError:
            why = "the rules named on the command line (the Navigation2D table is not finished)"
        out += ["", f"{family}: MAML-TRPO against {why}; seed {', '.join(map(str, seeds))}, {budget} iterations, "
                f"in the table's {family} rows; their learning curves are `{family}_learning_curves.png`."]
    return out


def long_plots(root: Path) -> None:
    """``ROOT/<family>_learning_curves.png`` for each :data:`RULES_LONG` family with runs."""
    from experiments.locomotion_report import learning_curves

    runs = long_runs(root)
    for family in RULES_LONG:
        methods = tuple(m for m in RULES if (family, m) in runs)
        if methods:
            learning_curves(runs, family, root / f"{family}_learning_curves.png", methods, METHOD_LABELS,
                            f"{family}: MAML-TRPO and learned inner-update rules")


def table(rows: dict[tuple[str, str], dict[int, object]], steps: int, order: list[str]) -> list[str]:
    head = ["| family | method | seeds | after 1 step (mean ± std) | " +
            " | ".join(f"{k} step{'s' if k != 1 else ''}" for k in range(steps + 1)) + " |",
            "|---|---|---|---|" + "---|" * (steps + 1)]
    out = []
    for (family, method) in sorted(rows, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 99)):
        by_seed = rows[family, method]
        done = {s: c for s, c in by_seed.items() if isinstance(c, list)}
        flight = [f"seed {s} {c}" for s, c in sorted(by_seed.items()) if not isinstance(c, list)]
        seeds = ", ".join([str(s) for s in sorted(done)] + flight)
        means = [num(statistics.mean(c[k] for c in done.values())) if done else "" for k in range(steps + 1)]
        out.append(f"| {family} | {METHOD_LABELS.get(method, method)} | {seeds} | "
                   f"{over_seeds([c[1] for c in done.values()])} | " + " | ".join(means) + " |")
    return head + out


def transfer_table(root: Path, tasks: int) -> list[str]:
    """Each rule on Navigation2D's outer ring without retraining (``eval/transfer.json``), against the plain
    gradient step from the same meta-policy: the return after one inner step, mean over seeds."""
    rows: dict[str, dict[str, list[float]]] = {}
    for rd, m in campaign_runs(root, RUN):
        ev = rd.cached("transfer.json", iteration=rd.done_iterations(), learned__num_tasks=tasks)
        if ev is not None and rd.done_iterations() >= rd.config().iterations:
            per = rows.setdefault(m["method"], {"learned": [], "sgd": [], "step0": []})
            per["learned"].append(ev["learned"]["mean"][1])
            per["sgd"].append(ev["sgd"]["mean"][1])
            per["step0"].append(ev["learned"]["mean"][0])
    if not rows:
        return []
    head = ["", "Transfer (BLUR's claim): each trained meta-policy and rule on goals in the outer ring [0.5, 1] "
            "around the square it trained on, without retraining; the return after one inner step with the "
            "learned rule and with the plain gradient step (algo.inner_lr) from the same meta-policy, mean over "
            "seeds, and their difference seed by seed.", "",
            "| method | seeds | step 0 | 1 step, learned rule | 1 step, plain step | learned − plain (paired) |",
            "|---|---|---|---|---|---|"]
    ordered = sorted(rows.items(), key=lambda kv: RULES.index(kv[0]) if kv[0] in RULES else 99)
    body = [f"| {METHOD_LABELS.get(m, m)} | {len(v['learned'])} | {num(statistics.mean(v['step0']))} | "
            f"{over_seeds(v['learned'])} | {over_seeds(v['sgd'])} | {paired(v['learned'], v['sgd'])} |"
            for m, v in ordered]
    return head + body + ["", transfer_reading(dict(ordered))]


def paired(a: list[float], b: list[float]) -> str:
    """``mean ± std`` of the per-seed differences ``a - b``, signed."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    if len(d) == 1:
        return num(d[0], sign=True)
    return f"{num(statistics.mean(d), sign=True)} ± {num(statistics.stdev(d))}"


def beyond_two_se(d: list[float]) -> bool:
    """Whether the mean of the paired differences ``d`` is more than two standard errors from zero."""
    if len(d) < 2:
        return False
    se = statistics.stdev(d) / len(d) ** 0.5
    return abs(statistics.mean(d)) > 2 * se


def transfer_reading(rows: dict[str, dict[str, list[float]]]) -> str:
    """One sentence from the transfer table: the best learned rule on the ring and, per rule, whether its
    step beat the plain step from the same meta-policy by more than two standard errors of the paired
    differences."""
    learned = {m: v for m, v in rows.items() if m != "maml"}  # MAML-TRPO's rule is the plain step
    if not learned:
        return "Reading: only the plain step has been evaluated on the ring so far."
    best = max(learned, key=lambda m: statistics.mean(learned[m]["learned"]))
    diffs = {m: [x - y for x, y in zip(v["learned"], v["sgd"], strict=True)] for m, v in learned.items()}
    better = [METHOD_LABELS.get(m, m) for m, d in diffs.items() if beyond_two_se(d) and statistics.mean(d) > 0]
    worse = [METHOD_LABELS.get(m, m) for m, d in diffs.items() if beyond_two_se(d) and statistics.mean(d) < 0]
    text = (f"Reading: on the ring, the best return after one step is {METHOD_LABELS.get(best, best)}'s, "
            f"{over_seeds(learned[best]['learned'])}: {paired(learned[best]['learned'], learned[best]['sgd'])} "
            "over the plain step from its own meta-policy. ")
    if better:
        text += "Learned rules ahead of the plain step from their own meta-policy by more than two standard " \
                f"errors (paired over seeds): " \
                f"{', '.join(better)}"
        text += f"; behind it: {', '.join(worse)}." if worse else "; none behind it."
    else:
        text += "No learned rule is ahead of the plain step from its own meta-policy by more than two standard " \
                "errors (paired over seeds)" + (f"; behind it: {', '.join(worse)}." if worse else ".")
    plain = rows.get("maml", {}).get("learned", [])
    if len(plain) >= 2:  # the gradient-trained rules' meta-policies co-adapted with them: MAML-TRPO's is the baseline
        ahead = [METHOD_LABELS.get(m, m) for m, v in learned.items() if welch_ahead(v["learned"], plain)]
        text += (f" Against MAML-TRPO with its plain step ({over_seeds(plain)}), ahead by more than two standard "
                 f"errors (Welch): {', '.join(ahead) if ahead else 'none'}.")
    return text


def welch_ahead(a: list[float], b: list[float]) -> bool:
    """Whether mean(a) exceeds mean(b) by more than two standard errors of the difference (Welch)."""
    if len(a) < 2 or len(b) < 2:
        return False
    return statistics.mean(a) - statistics.mean(b) > 2 * welch_se(a, b)


def g3(x: float) -> str:
    """Three significant digits with a typographic minus."""
    return f"{x:.3g}".replace("-", "−")


PROBE_MAGNITUDES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # |g| fed to the LSTM optimizer's probe


def lstm_probe(learned: dict[str, Any], settings: Any, inner_lr: float,
               magnitudes: tuple[float, ...] = PROBE_MAGNITUDES) -> dict[str, list[float]]:
    """The LSTM optimizer's first two steps on one coordinate whose gradient is ``g`` both times, as multiples
    of the plain step ``inner_lr * g``, for ``g = ±m`` and each magnitude ``m`` (the rule is coordinate-wise and
    shared, so this is its whole response; state zero at the start, as at every task's start); and its steps
    for ``g = 0`` (``first_zero``, ``second_zero``, in parameter units): the drift it adds whatever the
    gradient, which makes the multiples grow as ``|g|`` shrinks."""
    import torch

    from metarl.inner_updates.lstm import LSTMStep

    g = torch.tensor([*magnitudes, *(-m for m in magnitudes), 0.0], dtype=torch.float64)
    w = {k: v.detach().to(torch.float64) for k, v in learned.items()}
    rule = LSTMStep(w, settings, inner_lr)
    first, second = rule("probe", g), rule("probe", g)
    n = len(magnitudes)
    ratio = [(d[:-1] / (inner_lr * g[:-1])).tolist() for d in (first, second)]
    return {"magnitude": list(magnitudes), "first_pos": ratio[0][:n], "first_neg": ratio[0][n:],
            "second_pos": ratio[1][:n], "second_neg": ratio[1][n:], "first_zero": float(first[-1]),
            "second_zero": float(second[-1])}


def genome_summary(learned: dict[str, Any], states: int) -> dict[str, Any]:
    """A BLUR genome against the gradient genome: the distance (all numbers, and per part) and the numbers."""
    import torch

    from metarl.inner_updates.blur import GENOME, gradient_genome

    ref = gradient_genome(states, torch.float64)
    parts = {k: learned[k].detach().to(torch.float64) for k in GENOME}
    dist = {k: float(torch.linalg.norm(parts[k] - ref[k])) for k in GENOME}
    total = float(sum(d * d for d in dist.values()) ** 0.5)
    return {"distance": total, "parts": dist, "genome": {k: v.tolist() for k, v in parts.items()}}


def learned_rules(root: Path) -> dict[str, list[dict[str, Any]]]:
    """What each finished run's learned rule became, from its latest checkpoint: the LSTM optimizer's probe,
    BLUR's genome against the gradient genome, Meta-SGD's step sizes against ``inner_lr`` (their median per
    parameter)."""
    import torch

    out: dict[str, list[dict[str, Any]]] = {}
    for rd, m in campaign_runs(root, RUN):
        done = rd.done_iterations() or 0
        if done < rd.config().iterations or m["method"] not in ("meta_sgd", "lstm", "blur", "blur_cma"):
            continue
        learner = rd.load().learner
        rule, learned = learner.rule, learner.rule_params
        entry: dict[str, Any] = {"seed": int(m["seed"]), "family": m["family"]}
        if m["method"] == "lstm":
            entry.update(lstm_probe(learned, rule.settings, rule.inner_lr), inner_lr=rule.inner_lr)
        elif m["method"].startswith("blur"):
            entry.update(genome_summary(learned, rule.settings.states))
        else:
            entry["median_step"] = {k: float(torch.median(v.detach().abs()) / rule.inner_lr)
                                    for k, v in learned.items()}
        out.setdefault(m["method"], []).append(entry)
    return out


def mean_median_steps(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Meta-SGD's median step size per parameter (over ``inner_lr``), mean over ``runs`` (one family's seeds)."""
    return {k: statistics.mean(r["median_step"][k] for r in runs) for k in runs[0]["median_step"]}


def learned_paragraph(rules: dict[str, list[dict[str, Any]]], rows: dict[tuple[str, str], dict[int, object]],
                      family: str = "Navigation2D") -> list[str]:
    """One paragraph on what the rules learned, each clause from the finished runs' checkpoints (``rules``,
    :func:`learned_rules`) and curves (``rows``) that exist (none: nothing)."""
    said = []
    lstm = sorted((r for r in rules.get("lstm", []) if r["family"] == family), key=lambda r: r["seed"])
    if lstm:
        big = [i for i, m in enumerate(lstm[0]["magnitude"]) if m >= 0.1]
        ratios = [r[f"first_{sign}"][i] for r in lstm for i in big for sign in ("pos", "neg")]
        seeds = " / ".join(str(r["seed"]) for r in lstm)
        which = f"seed{'s' if len(lstm) > 1 else ''} {seeds}"
        clause = (f"the LSTM optimizer's first step is {g3(min(ratios))} to {g3(max(ratios))} × the plain step for "
                  f"|g| ≥ 0.1, plus a drift of {' / '.join(g3(r['first_zero']) for r in lstm)} per coordinate "
                  f"({which}) that dominates for smaller gradients")
        curves_by_seed = rows.get((family, "lstm"), {})
        done = [(r["seed"], curves_by_seed.get(r["seed"])) for r in lstm]
        done = [(seed, c) for seed, c in done if isinstance(c, list) and len(c) > 2]
        if done:
            later = [c[k] for _, c in done for k in range(2, len(c))]
            clause += (f"; meta-trained through one inner step only, it gives "
                       f"{' / '.join(num(c[1]) for _, c in done)} after one step (from "
                       f"{' / '.join(num(c[0]) for _, c in done)} before adaptation; seed"
                       f"{'s' if len(done) > 1 else ''} {' / '.join(str(seed) for seed, _ in done)}) and "
                       f"{num(min(later))} to {num(max(later))} after 2–{len(done[0][1]) - 1}")
        said.append(clause)
    for method, how in (("blur", "the meta-gradient"), ("blur_cma", "CMA-ES")):
        runs = [r for r in rules.get(method, []) if r["family"] == family]
        if runs:
            d = [r["distance"] for r in runs]
            part = max(runs[0]["parts"], key=lambda k: statistics.mean(r["parts"][k] for r in runs))
            said.append(f"BLUR's genome under {how} ended {over_seeds(d).replace(' (', ' from the gradient genome (')}"
                        f", most of it in its {part} part")
    msgd = [r for r in rules.get("meta_sgd", []) if r["family"] == family]
    if msgd:
        median = mean_median_steps(msgd)
        weights = [v for k, v in median.items() if k.endswith("weight")]
        top = max(median, key=lambda k: median[k])
        said.append(f"Meta-SGD's median step sizes stay at {g3(min(weights))}–{g3(max(weights))} × algo.inner_lr on "
                    f"the weight matrices and reach {g3(median[top])} × on {top} ({n_seeds(len(msgd))})")
    if not said:
        return []
    return ["", f"**What the rules learned** on {family} (read from the finished runs' checkpoints; the tables "
            "below give the numbers): " + "; ".join(said) + "."]


def family_order(family: str) -> tuple[int, str]:
    """Navigation2D (the table of every rule) first, then the longer stages' families."""
    return (family != "Navigation2D", family)


def learned_table(rules: dict[str, list[dict[str, Any]]]) -> list[str]:
    """:func:`learned_rules` as text: the LSTM's step per gradient magnitude and BLUR's genome distance per family
    and seed, Meta-SGD's step sizes averaged over each family's finished seeds (none: nothing)."""
    lines: list[str] = []

    def by_run(method: str) -> list[dict[str, Any]]:
        return sorted(rules[method], key=lambda r: (family_order(r["family"]), r["seed"]))

    if "lstm" in rules:
        runs = by_run("lstm")
        mags = runs[0]["magnitude"]
        lines += ["", "What the LSTM optimizer learned: its step as a multiple of the plain step (algo.inner_lr × "
                  "g) for a coordinate whose gradient is g, at its first and second inner step (the same g "
                  "twice, state carried), per seed; 1.0 is SGD. The last column is its step for g = 0, in parameter "
                  "units (a coordinate moves by minus its step): a drift it adds to every coordinate whatever the "
                  f"gradient, beside which the plain step algo.inner_lr × |g| = {runs[0]['inner_lr']:g} × |g| is "
                  "small for small |g|; hence the large multiples there.",
                  "", "| family | seed | step | sign | " + " | ".join(f"|g| = {m:g}" for m in mags)
                  + " | step at g = 0 |", "|---|---|---|---|" + "---|" * (len(mags) + 1)]
        for r in runs:
            for step in ("first", "second"):
                for sign in ("pos", "neg"):
                    zero = g3(r[f"{step}_zero"]) if sign == "pos" else ""
                    lines.append(f"| {r['family']} | {r['seed']} | {step} | g {'>' if sign == 'pos' else '<'} 0 | " +
                                 " | ".join(g3(v) for v in r[f"{step}_{sign}"]) + f" | {zero} |")
    for method in ("blur", "blur_cma"):
        if method in rules:
            runs = by_run(method)
            parts = list(runs[0]["parts"])
            lines += ["", f"{METHOD_LABELS.get(method, method)}: the genome's distance from the gradient genome "
                      "(Euclidean, over its numbers and per part; 0 is the plain gradient step).", "",
                      "| family | seed | distance | " + " | ".join(parts) + " |",
                      "|---|---|---|" + "---|" * len(parts)]
            lines += [f"| {r['family']} | {r['seed']} | {r['distance']:.3f} | "
                      + " | ".join(f"{r['parts'][k]:.3f}" for k in parts) + " |" for r in runs]
    if "meta_sgd" in rules:
        runs = by_run("meta_sgd")
        lines += ["", "Meta-SGD's learned step sizes: the median per parameter as a multiple of algo.inner_lr, "
                  "mean over each family's seeds.", "", "| family | parameter | median step / inner lr |",
                  "|---|---|---|"]
        for family in dict.fromkeys(r["family"] for r in runs):
            median = mean_median_steps([r for r in runs if r["family"] == family])
            lines += [f"| {family} | {n} | {v:.3g} |" for n, v in median.items()]
    return lines


def report(which: str, root: Path, tasks: int = EVAL_TASKS, eval_seed: int = EVAL_SEED) -> str:
    steps = 3 if which == "cavia" else RULES_STEPS
    rows: dict[tuple[str, str], dict[int, object]] = {}
    for rd, m in campaign_runs(root, RUN):
        curves(rows, rd, m["family"], m["method"], int(m["seed"]), steps, tasks, eval_seed)
    order = ["maml", "anil", "cavia"] if which == "cavia" else list(RULES)
    if which == "cavia":  # HalfCheetahVel's MAML and ANIL: the locomotion campaign's runs of the CAVIA seeds
        for method in ("maml", "anil"):
            for seed in CAVIA["HalfCheetahVel"][0]:
                rd = RunDir(LOCOMOTION_ROOT / f"HalfCheetahVel__{method}__{seed}")
                if rd.is_run() and ("HalfCheetahVel", "cavia") in rows:
                    curves(rows, rd, "HalfCheetahVel", method, seed, steps, tasks, eval_seed)
    what = ("CAVIA (policy.adapt: context) beside MAML and ANIL" if which == "cavia"
            else "MAML-TRPO with each inner-update rule, and BLUR's genome by CMA-ES")
    text = (f"{what}: mean return on {tasks} held-out tasks (seed {eval_seed}) after 0..{steps} inner "
            "steps at each run's budget; step 0 is the meta-policy before adaptation (NIL).\n\n")
    lines = table(rows, steps, order) if rows else ["No runs yet."]
    if which == "rules":
        rules = learned_rules(root)
        families = sorted({r["family"] for runs in rules.values() for r in runs}, key=family_order)
        lines += (long_text(root, tasks, eval_seed) + transfer_table(root, tasks)
                  + [line for family in families for line in learned_paragraph(rules, rows, family)]
                  + learned_table(rules))
    return text + "\n".join(lines) + "\n"


RESULTS_MD = Path(__file__).resolve().parents[1] / "RESULTS.md"
COMMANDS = {"cavia": ("python experiments/reproduce.py cavia        # Navigation2D 3 seeds x 100, then HalfCheetahVel "
                      "CAVIA 1 seed x 500",),
            "rules": ("python experiments/reproduce.py rules        # Navigation2D 3 seeds x 100: every rule, BLUR by "
                      "CMA-ES, the transfer; then HalfCheetahVel 1 seed x 300: MAML against the best two learned "
                      "rules",)}


def markers(which: str) -> tuple[str, str]:
    return f"<!-- {which}:begin (generated by experiments/rules_report.py {which}) -->", f"<!-- {which}:end -->"


def section(which: str, table: str, root: Path) -> str:
    """RESULTS.md's section for the released runs: the commands, where the runs are, the table."""
    from experiments.report_cli import relative_root

    begin, end = markers(which)
    images = [f"![{family}: MAML-TRPO and the learned rules, training returns before and after one inner step]"
              f"({relative_root(root)}/{family}_learning_curves.png)" for family in RULES_LONG
              if which == "rules" and any(f == family for f, _ in long_runs(root))]
    return "\n".join([begin, "", "```sh", *COMMANDS[which], f"python experiments/rules_report.py {which}    # this "
                      "section and the table again, from the committed artifacts", "```", "",
                      f"Runs: `{relative_root(root)}/`.", "", table.rstrip("\n"), "",
                      *[line for image in images for line in (image, "")], end]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=["cavia", "rules"])
    p.add_argument("--root", help="the campaign's runs (default: its results/ directory)")
    p.add_argument("--eval-tasks", type=int, default=EVAL_TASKS)
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument("--check", action="store_true", help="exit 1 if ROOT/<which>_table.md is not what this writes")
    args = p.parse_args(argv)
    root = Path(args.root or Path(__file__).resolve().parents[1] / ROOTS[args.which])
    text = report(args.which, root, args.eval_tasks, args.eval_seed)
    out = root / f"{args.which}_table.md"
    released = root.resolve() == (Path(__file__).resolve().parents[1] / ROOTS[args.which]).resolve()
    from metarl.fileio import replace_section

    results = RESULTS_MD.read_text(encoding="utf-8") if released else ""
    updated = replace_section(results, section(args.which, text, root), *markers(args.which)) if released else ""
    if args.check:
        return 0 if out.is_file() and out.read_text() == text and updated == results else 1
    root.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.which == "rules":
        long_plots(root)
    if released:
        RESULTS_MD.write_text(updated, encoding="utf-8")
    print(text + f"wrote {out}" + (f" and its section of {RESULTS_MD}" if released else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
