"""The CAVIA campaign and the inner-update rules comparison: their runs, configs and tables."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import reproduce, rules_report
from experiments.campaigns import CAVIA, RULES
from metarl.rundir import locks_readable

TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "sampler.backend=serial",
        "policy.hidden_sizes=[8]", "es.population=4"]


def args(root: Path, **kw) -> argparse.Namespace:
    base = dict(root=str(root), iterations=2, seeds=None, set=list(TINY), no_estimate=True, eval_tasks=2,
                eval_seed=0, families=list(CAVIA), methods=list(RULES), family="Navigation2D")
    base.update(kw)
    return argparse.Namespace(**base)


def test_cavia_runs_use_cavias_config_and_the_others_the_familys(tmp_path):
    jobs = reproduce.cavia_jobs(args(tmp_path))
    names = [d.name for _, d in jobs]
    assert names[:3] == ["Navigation2D__maml__1", "Navigation2D__anil__1", "Navigation2D__cavia__1"]
    assert names[-1] == "HalfCheetahVel__cavia__1" and len(names) == 3 * 3 + 1
    by = {d.name: cfg for cfg, d in jobs}
    cavia = by["Navigation2D__cavia__1"]
    assert (cavia.policy.adapt, cavia.policy.context_size, cavia.algo.inner_lr) == ("context", 2, 1.0)
    assert by["Navigation2D__anil__1"].policy.adapt == "head" and by["Navigation2D__maml__1"].policy.adapt == "all"
    assert by["HalfCheetahVel__cavia__1"].iterations == 500  # the locomotion campaign's budget


def test_blur_by_cma_starts_from_the_same_seeds_maml_run_after_it(tmp_path):
    jobs = reproduce.rules_jobs(args(tmp_path, seeds=[1, 2]))
    names = [d.name for _, d in jobs]
    for seed in (1, 2):
        assert names.index(f"Navigation2D__maml__{seed}") < names.index(f"Navigation2D__blur_cma__{seed}")
    cfg = dict((d.name, c) for c, d in jobs)["Navigation2D__blur_cma__2"]
    assert (cfg.algo.name, cfg.algo.inner_update, cfg.es.params) == ("es", "blur", "rule")
    assert cfg.es.init_from == str(tmp_path / "Navigation2D__maml__2")


@pytest.mark.integration
def test_a_tiny_rules_comparison_writes_its_table(tmp_path):
    reproduce.cmd_rules(args(tmp_path, seeds=[1], iterations=1, methods=["maml", "blur_cma"]))
    text = (tmp_path / "rules_table.md").read_text()
    assert "| Navigation2D | MAML-TRPO | 1 |" in text and "| Navigation2D | BLUR genome by CMA-ES | 1 |" in text
    assert rules_report.main(["rules", "--root", str(tmp_path), "--eval-tasks", "2", "--check"]) == 0
    assert "BLUR genome by CMA-ES: the genome's distance from the gradient genome" in text
    (row,) = [r for r in rules_report.learned_rules(tmp_path)["blur_cma"]]
    assert row["distance"] > 0  # one CMA-ES generation moved the mean away from the gradient genome


@pytest.mark.integration
def test_the_rules_comparison_evaluates_transfer_to_the_outer_ring(tmp_path):
    reproduce.cmd_rules(args(tmp_path, seeds=[1], iterations=1, methods=["maml", "meta_sgd"]))
    text = (tmp_path / "rules_table.md").read_text()
    assert "Transfer (BLUR's claim)" in text and "| Meta-SGD | 1 |" in text
    import json

    ev = json.loads((tmp_path / "Navigation2D__maml__1" / "eval" / "transfer.json").read_text())
    assert ev["env_kwargs"]["exclude"] == 0.5
    assert all(max(abs(g) for g in t["goal"]) >= 0.5 for t in ev["learned"]["tasks"])
    assert ev["learned"]["mean"] == ev["sgd"]["mean"]  # a plain-step run: the learned rule is the plain step
    assert "Meta-SGD's learned step sizes" in text


def test_the_transfer_reading_weighs_each_rule_against_the_plain_step_seed_by_seed():
    rows = {"maml": {"learned": [-56.0, -56.5, -56.8], "sgd": [-56.0, -56.5, -56.8]},
            "meta_sgd": {"learned": [-57.0, -56.0, -57.5], "sgd": [-68.0, -67.0, -68.5]},  # +11 on every seed
            "lstm": {"learned": [-40.0, -90.0, -60.0], "sgd": [-50.0, -70.0, -75.0]},  # +10, -20, +15: noise
            "blur_cma": {"learned": [-47.0, -50.0, -48.0], "sgd": [-56.0, -56.5, -56.8]},
            "kronecker": {"learned": [-60.0, -61.0, -62.0], "sgd": [-58.0, -58.5, -59.5]}}  # behind on every seed
    text = rules_report.transfer_reading(rows)
    assert text.startswith("Reading: on the ring, the best return after one step is BLUR genome by CMA-ES's, "
                           "−48.3 ± 1.5 (3 seeds): +8.1 ± 1.4 over the plain step")
    assert "(paired over seeds): Meta-SGD, BLUR genome by CMA-ES; behind it: MAML-TRPO + Kronecker." in text
    assert text.endswith("ahead by more than two standard errors (Welch): BLUR genome by CMA-ES.")
    assert rules_report.paired([1.0, 2.0], [0.0, 0.0]) == "+1.5 ± 0.7"
    only_plain = rules_report.transfer_reading({"maml": rows["maml"]})
    assert only_plain == "Reading: only the plain step has been evaluated on the ring so far."


def test_the_lstm_probe_reads_the_plain_step_at_the_start_and_a_learned_scale_after():
    import torch

    from metarl.inner_updates.lstm import LSTMOptimizer, LSTMSettings

    settings = LSTMSettings(hidden_size=3)
    rule = LSTMOptimizer(0.1, settings)
    torch.manual_seed(0)
    learned = rule.init_params({"w": torch.zeros(2)}, ["w"])
    probe = rules_report.lstm_probe(learned, settings, 0.1)
    for key in ("first_pos", "first_neg", "second_pos", "second_neg"):
        assert probe[key] == pytest.approx([1.0] * len(probe["magnitude"]), abs=1e-12)  # residual, zero output
    assert probe["first_zero"] == probe["second_zero"] == 0.0
    with torch.no_grad():  # output bias b: the step adds scale * b whatever g, so the ratio is 1 + scale b / (lr g)
        learned["out/bias"].fill_(0.01)
    probe = rules_report.lstm_probe(learned, settings, 0.1, magnitudes=(1e-2, 1.0))
    assert probe["first_pos"][0] == pytest.approx(1 + 0.1 * 0.01 / (0.1 * 1e-2))
    assert probe["first_neg"][1] == pytest.approx(1 - 0.1 * 0.01 / 0.1)
    assert probe["first_zero"] == pytest.approx(0.1 * 0.01) and probe["second_zero"] == pytest.approx(0.1 * 0.01)


def test_the_genome_summary_measures_the_distance_from_the_gradient_genome():
    import torch

    from metarl.inner_updates.blur import gradient_genome

    genome = gradient_genome(2, torch.float64)
    assert rules_report.genome_summary(genome, 2)["distance"] == 0.0
    genome["hebbian"][1, 0] += 0.3
    genome["inject"][1] -= 0.4
    summary = rules_report.genome_summary(genome, 2)
    assert summary["distance"] == pytest.approx(0.5)
    assert summary["parts"]["hebbian"] == pytest.approx(0.3) and summary["parts"]["forward"] == 0.0


def test_the_best_rules_run_on_halfcheetahvel_too(tmp_path):
    jobs = reproduce.rules_jobs(args(tmp_path, seeds=[1], iterations=300, family="HalfCheetahVel",
                                     methods=["maml", "lstm", "blur"]))
    assert [d.name for _, d in jobs] == [f"HalfCheetahVel__{m}__1" for m in ("maml", "lstm", "blur")]
    assert all(c.env.family == "HalfCheetahVel" and c.iterations == 300 for c, _ in jobs)


def fake_table(monkeypatch, scores: dict[str, list[object]]) -> None:
    """rules_report reads ``scores``: per method, seed 1..3's curve (a list: after 0, 1 steps) or a string
    (in flight), as :func:`rules_report.curves` would from the runs' artifacts."""
    import re

    names = [f"Navigation2D__{m}__{s}" for m in scores for s in (1, 2, 3)]
    monkeypatch.setattr(rules_report, "campaign_runs",
                        lambda root, pattern: [(n, re.match(pattern, n)) for n in names])

    def curves(rows, rd, family, method, seed, steps, tasks, eval_seed):
        rows.setdefault((family, method), {})[seed] = scores[method][seed - 1]

    monkeypatch.setattr(rules_report, "curves", curves)


def test_the_best_two_rules_are_those_with_the_best_return_after_one_step(monkeypatch, tmp_path):
    def seeds(*after):
        return [[-40.0, a] for a in after]

    fake_table(monkeypatch, {"maml": seeds(-5, -5, -5), "meta_sgd": seeds(-12, -13, -11),
                             "kronecker": seeds(-10, -14, -12), "lstm": seeds(-9, -9.5, -10),
                             "blur": seeds(-12, -12, -12), "blur_cma": seeds(-1, -1, -1)})
    # MAML and BLUR by CMA-ES are not candidates; LSTM is best (-9.5); Meta-SGD, Kronecker and BLUR tie at -12.0,
    # and the candidates' order puts Meta-SGD first
    assert rules_report.best_rules(tmp_path) == ["lstm", "meta_sgd"]
    args_ = args(tmp_path, family="HalfCheetahVel", methods=None, seeds=None, iterations=None)
    assert reproduce.rules_defaults(args_) is None
    assert (args_.methods, args_.seeds, args_.iterations) == (["maml", "lstm", "meta_sgd"], [1], 300)
    nav = args(tmp_path, methods=None, seeds=None, iterations=None)
    assert reproduce.rules_defaults(nav) is None
    assert (nav.methods, nav.seeds, nav.iterations) == (list(RULES), [1, 2, 3], 100)


def test_the_best_rules_wait_for_the_whole_navigation_table(monkeypatch, tmp_path, capsys):
    done = [[-40.0, -10.0]] * 3
    fake_table(monkeypatch, {"meta_sgd": done, "kronecker": done, "blur": done,
                             "lstm": [[-40.0, -9.0], "in flight (50/100)", [-40.0, -9.0]]})
    with pytest.raises(ValueError, match=r"not finished and evaluated: lstm seed 2 \(run reproduce.py rules"):
        rules_report.best_rules(tmp_path)
    with pytest.raises(SystemExit) as e:
        reproduce.main(["rules", "--family", "HalfCheetahVel", "--root", str(tmp_path), "--no-estimate"])
    assert e.value.code == 2
    assert "not finished and evaluated: lstm seed 2" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    # naming the rules skips the choice
    named = args(tmp_path, family="HalfCheetahVel", methods=["maml", "blur"], seeds=None, iterations=None)
    assert reproduce.rules_defaults(named) is None and named.methods == ["maml", "blur"]


def test_a_halfcheetahvel_run_without_an_iteration_names_no_learning_curves(tmp_path):
    # a run just started (its config written, no checkpoint yet) has no curve: the section must not link an
    # image that was not drawn
    from experiments.campaigns import rules_config
    from metarl.rundir import RunDir

    cfg = rules_config("maml", 1, 300, [], tmp_path, family="HalfCheetahVel")
    RunDir.create(cfg, tmp_path / "HalfCheetahVel__maml__1").write_config(cfg)
    assert rules_report.long_runs(tmp_path) == {}
    rules_report.long_plots(tmp_path)
    assert not (tmp_path / "HalfCheetahVel_learning_curves.png").exists()
    assert rules_report.long_text(tmp_path, 2, 0) == []
    assert "learning_curves.png" not in rules_report.section("rules", "| table |\n", tmp_path)


@pytest.mark.integration
def test_the_halfcheetahvel_stage_adds_its_rows_and_learning_curves(tmp_path):
    reproduce.cmd_rules(args(tmp_path, family="HalfCheetahVel", seeds=[1], iterations=1,
                             methods=["maml", "meta_sgd"]))
    text = (tmp_path / "rules_table.md").read_text()
    assert "| HalfCheetahVel | MAML-TRPO | 1 |" in text and "| HalfCheetahVel | Meta-SGD | 1 |" in text
    assert ("HalfCheetahVel: MAML-TRPO against the rules named on the command line (the Navigation2D table is "
            "not finished)") in text
    assert (tmp_path / "HalfCheetahVel_learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    section = rules_report.section("rules", text, tmp_path)
    assert "HalfCheetahVel_learning_curves.png)" in section
    assert rules_report.main(["rules", "--root", str(tmp_path), "--eval-tasks", "2", "--check"]) == 0


def test_the_paragraph_on_what_the_rules_learned_reads_the_checkpoints_summaries():
    rules = {"lstm": [{"family": "Navigation2D", "seed": 2, "magnitude": [0.01, 0.1, 1.0],
                       "first_pos": [-5.0, 0.4, 0.9], "first_neg": [10.0, 2.2, 1.3], "first_zero": 0.03},
                      {"family": "Navigation2D", "seed": 1, "magnitude": [0.01, 0.1, 1.0],
                       "first_pos": [-7.0, 0.2, 0.9], "first_neg": [14.0, 2.4, 1.1], "first_zero": -0.01}],
             "blur": [{"family": "Navigation2D", "distance": 0.5, "parts": {"hebbian": 0.4, "inject": 0.3}}],
             "meta_sgd": [{"family": "Navigation2D", "median_step": {"body.0.weight": 0.9, "head.weight": 1.1,
                                                                       "head.bias": 4.0}}]}
    rows = {("Navigation2D", "lstm"): {1: [-38.0, -13.0, -90.0, -100.0], 2: [-460.0, -35.0, -110.0, -120.0]}}
    (line,) = [ln for ln in rules_report.learned_paragraph(rules, rows) if ln]
    assert "first step is 0.2 to 2.4 × the plain step for |g| ≥ 0.1" in line  # over every seed, |g| >= 0.1 only
    assert "a drift of −0.01 / 0.03 per coordinate (seeds 1 / 2)" in line  # per seed, in seed order
    assert "it gives −13.0 / −35.0 after one step (from −38.0 / −460.0 before adaptation; seeds 1 / 2) and " \
           "−120.0 to −90.0 after 2–3" in line
    assert "BLUR's genome under the meta-gradient ended 0.5 from the gradient genome (1 seed), most of it in its " \
           "hebbian part" in line
    assert "Meta-SGD's median step sizes stay at 0.9–1.1 × algo.inner_lr on the weight matrices and reach 4 × on " \
           "head.bias (1 seed)" in line
    assert rules_report.learned_paragraph({}, {}) == []


def test_status_says_where_each_run_stands_and_writes_nothing(tmp_path, capsys):
    from helpers_limits import snapshot

    from experiments.driver import train

    base = ["rules", "--root", str(tmp_path), "--family", "Navigation2D", "--methods", "maml", "meta_sgd", "--seeds",
            "1", "2",
            "--iterations", "2", "--status", *[a for kv in TINY for a in ("--set", kv)]]
    jobs = reproduce.rules_jobs(args(tmp_path, methods=["maml", "meta_sgd"], seeds=[1, 2], iterations=2))
    train(jobs[0][0], jobs[0][1], progress=False)  # maml seed 1: finished
    cfg, run_dir = jobs[1]  # meta_sgd seed 1: in flight at 1 of 2
    cfg.iterations = 1
    train(cfg, run_dir, progress=False)
    before = snapshot(tmp_path)
    assert reproduce.main(base) == 0
    assert snapshot(tmp_path) == before
    lines = capsys.readouterr().out.splitlines()
    pace = reproduce.recent_pace(run_dir)  # its one logged iteration's time
    assert pace is not None and pace > 0
    left = reproduce.duration(pace * 1)
    known = locks_readable()  # Linux: whether a process trains it now, from the run directory's lock
    expected = [f"  {tmp_path / 'Navigation2D__maml__1'}: finished at 2 of 2",
                f"  {tmp_path / 'Navigation2D__meta_sgd__1'}: in flight at 1 of 2{', stopped' if known else ''}, "
                f"about {left} of training left at {pace:.1f} s an iteration",
                f"  {tmp_path / 'Navigation2D__maml__2'}: not started",
                f"  {tmp_path / 'Navigation2D__meta_sgd__2'}: not started",
                f"1 finished, 1 in flight{' (0 training now)' if known else ''}, 2 not started (4 runs)"]
    assert lines == expected
    if not known:
        return
    # another process holding the run directory's lock (as `metarl train` does while it trains) is named
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert reproduce.main(base) == 0
        lines = capsys.readouterr().out.splitlines()
    finally:
        holder.kill()
        holder.wait()
    assert lines[1] == (f"  {run_dir}: in flight at 1 of 2, training now in process {holder.pid}, about {left} of "
                        f"training left at {pace:.1f} s an iteration")
    assert lines[-1] == "1 finished, 1 in flight (1 training now), 2 not started (4 runs)"
    assert snapshot(tmp_path) == before


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(120)
"""


def test_the_time_left_is_the_median_of_the_last_iterations_times(tmp_path):
    from metarl import scalars

    assert reproduce.recent_pace(tmp_path) is None  # nothing logged
    w = scalars.ScalarsCSV(tmp_path)
    for it, secs in enumerate([100.0] * 5 + [2.0, 3.0, 4.0]):
        w.append(it, {"time/iteration_s": secs})
    w.close()
    assert reproduce.recent_pace(tmp_path, last=3) == 3.0
    assert reproduce.recent_pace(tmp_path, last=4) == 3.5 and reproduce.recent_pace(tmp_path) == 100.0
    assert (reproduce.duration(2400), reproduce.duration(7200 * 1.5)) == ("40 min", "3.0 h")


def test_one_command_runs_navigation2d_then_the_halfcheetahvel_stage_on_its_best_rules(tmp_path, monkeypatch,
                                                                                      capsys):
    stages = []

    def record(stage, jobs, steps):
        stages.append((stage.family, stage.methods, stage.seeds, stage.iterations, len(jobs), steps))

    monkeypatch.setattr(reproduce, "train_and_evaluate", record)
    monkeypatch.setattr(reproduce, "transfer", lambda *a: None)
    monkeypatch.setattr(rules_report, "main", lambda argv: 0)
    monkeypatch.setattr(rules_report, "best_rules", lambda root, **kw: ["lstm", "blur"])
    reproduce.cmd_rules(args(tmp_path, family=None, methods=None, seeds=None, iterations=None))
    assert stages == [("Navigation2D", list(RULES), [1, 2, 3], 100, 18, 5),
                      ("HalfCheetahVel", ["maml", "lstm", "blur"], [1], 300, 3, 5)]

    def unfinished(root, **kw):
        raise ValueError("not finished and evaluated: lstm seed 2")

    stages.clear()
    monkeypatch.setattr(rules_report, "best_rules", unfinished)
    reproduce.cmd_rules(args(tmp_path, family=None, methods=None, seeds=None, iterations=None))
    assert [s[0] for s in stages] == ["Navigation2D"]
    assert "HalfCheetahVel: not started: not finished and evaluated: lstm seed 2" in capsys.readouterr().out


def test_the_lstm_table_gives_each_seed_its_own_rows_with_its_drift():
    def probe(seed, scale):
        return {"family": "Navigation2D", "seed": seed, "magnitude": [0.1, 1.0], "inner_lr": 0.1,
                **{f"{step}_{sign}": [scale, 2 * scale] for step in ("first", "second") for sign in ("pos", "neg")},
                "first_zero": -0.01 * scale, "second_zero": -0.02 * scale}

    lines = rules_report.learned_table({"lstm": [probe(2, 3.0), probe(1, 1.0)]})
    rows = [ln for ln in lines if ln.startswith("| Navigation2D |")]
    assert len(rows) == 8 and rows[0].startswith("| Navigation2D | 1 | first | g > 0 |")  # seed order, 2 x 2 each
    assert rows[0] == "| Navigation2D | 1 | first | g > 0 | 1 | 2 | −0.01 |"
    assert rows[1] == "| Navigation2D | 1 | first | g < 0 | 1 | 2 |  |"
    assert rows[6] == "| Navigation2D | 2 | second | g > 0 | 3 | 6 | −0.06 |"


def test_the_learned_tables_keep_each_family_apart():
    # a HalfCheetahVel run of the longer stage beside Navigation2D's seeds: its own rows, its own Meta-SGD mean,
    # its own paragraph; Navigation2D's first
    def blur(family, seed, d):
        return {"family": family, "seed": seed, "distance": d, "parts": {"forward": d, "backward": 0.0}}

    def msgd(family, step):
        return {"family": family, "seed": 1, "median_step": {"head.weight": 1.0, "head.bias": step}}

    rules = {"blur": [blur("HalfCheetahVel", 1, 0.9), blur("Navigation2D", 2, 0.3), blur("Navigation2D", 1, 0.1)],
             "meta_sgd": [msgd("HalfCheetahVel", 7.0), msgd("Navigation2D", 2.0)]}
    lines = rules_report.learned_table(rules)
    blur_rows = [ln for ln in lines if ln.endswith(" | 0.000 |")]
    assert blur_rows == ["| Navigation2D | 1 | 0.100 | 0.100 | 0.000 |", "| Navigation2D | 2 | 0.300 | 0.300 | 0.000 |",
                         "| HalfCheetahVel | 1 | 0.900 | 0.900 | 0.000 |"]
    assert "| Navigation2D | head.bias | 2 |" in lines and "| HalfCheetahVel | head.bias | 7 |" in lines
    nav = rules_report.learned_paragraph(rules, {}, "Navigation2D")[1]
    cheetah = rules_report.learned_paragraph(rules, {}, "HalfCheetahVel")[1]
    assert "ended 0.2 ± 0.1 from the gradient genome (2 seeds)" in nav and "on Navigation2D" in nav
    assert "ended 0.9 from the gradient genome (1 seed)" in cheetah and "reach 7 × on head.bias (1 seed)" in cheetah
