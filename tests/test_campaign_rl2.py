"""The RL² campaign (``reproduce.py rl2``): its runs, their budget per meta-iteration against the committed MAML
runs, a tiny campaign that resumes, and RESULTS.md's generated RL² section."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from experiments import campaigns, reproduce, rl2_report
from experiments.campaigns import env_steps_per_iteration, rl2_config, rl2_match_config
from metarl.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "sampler.backend=serial",
        "policy.hidden_sizes=[8]", "policy.gru_size=4"]


def args(root: Path, **kw) -> argparse.Namespace:
    base = dict(root=str(root), iterations=2, seeds=None, set=list(TINY), no_estimate=True, eval_tasks=2,
                eval_seed=0, families=list(campaigns.RL2), benchmark=[], parallel=1, ray_address=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_the_runs_are_seed_major_per_family_with_their_budgets(tmp_path):
    jobs = reproduce.rl2_jobs(args(tmp_path, iterations=150, benchmark=["ML1-reach"], set=[]))
    assert [d.name for _, d in jobs] == ["Navigation2D__rl2__1", "Navigation2D__rl2__2", "Navigation2D__rl2__3",
                                         "HalfCheetahVel__rl2__1", "ML1-reach__rl2__1"]
    assert all(d.parent == tmp_path for _, d in jobs)
    by = {d.name: cfg for cfg, d in jobs}
    assert [by[n].iterations for n in by] == [150, 150, 150, 500, 100]
    assert [by[n].seed for n in by] == [1, 2, 3, 1, 1]
    for cfg in by.values():
        assert (cfg.algo.name, cfg.policy.kind, cfg.policy.adapt, cfg.name) == ("rl2", "gru", "all", "rl2")
    assert by["HalfCheetahVel__rl2__1"].env.horizon == 100 and by["ML1-reach__rl2__1"].rl2.episodes_per_trial == 10
    only_ml1 = reproduce.rl2_jobs(args(tmp_path, families=[], benchmark=["ML1-reach"], seeds=[2]))
    assert [d.name for _, d in only_ml1] == ["ML1-reach__rl2__2"]


@pytest.mark.parametrize("family, committed, steps", [
    ("Navigation2D", "results/depth/Navigation2D__maml_d2__1", 20 * 20 * 100 * (1 + 1)),
    ("HalfCheetahVel", "results/locomotion/HalfCheetahVel__maml__1", 40 * 20 * 100 * (1 + 1)),
    ("ML1-reach", "results/metaworld/ML1-reach__maml__1", 10 * 10 * 500 * (1 + 1)),
])
def test_rl2_takes_the_committed_maml_runs_env_steps_per_meta_iteration(family, committed, steps):
    """tasks x episodes x horizon x (inner steps + 1) for MAML = tasks x trials x episodes per trial x horizon
    for RL², against the config file and against the committed run's own config."""
    rl2 = rl2_config(family, 1, 10, [])
    a = rl2.algo
    assert a.meta_batch_size * a.episodes_per_task * rl2.rl2.episodes_per_trial * rl2.env.horizon == steps
    assert env_steps_per_iteration(rl2) == env_steps_per_iteration(rl2_match_config(family)) == steps
    assert env_steps_per_iteration(RunDir(ROOT / committed).config()) == steps
    maml = rl2_match_config(family)
    assert rl2.env.horizon == maml.env.horizon and rl2.env.family == maml.env.family


def test_the_navigation_budget_fits_the_measured_time_per_iteration():
    assert campaigns.RL2_BUDGETS["Navigation2D"] * campaigns.NAV_RL2_SECONDS <= 15 * 60 * 1.05
    assert campaigns.BUDGETS["rl2"] == campaigns.RL2_BUDGETS["Navigation2D"]


@pytest.mark.integration
def test_a_tiny_campaign_trains_evaluates_reports_and_a_second_call_trains_nothing(tmp_path, capsys):
    argv = ["rl2", "--root", str(tmp_path), "--iterations", "2", "--families", "Navigation2D", "--seeds", "1",
            "--eval-tasks", "40", "--no-estimate"] + [a for kv in TINY for a in ("--set", kv)]  # the report's 40 tasks
    assert reproduce.main(argv) == 0
    run_dir = tmp_path / "Navigation2D__rl2__1"
    rd = RunDir(run_dir)
    assert rd.done_iterations() == 2
    trials = rd.cached(f"trials_40_{campaigns.RL2_EVAL_EPISODES}_0.json", iteration=2)
    assert trials is not None and trials["steps"] == [1, 2, 3, 4] and trials["episodes_per_task"] == 20
    report = (tmp_path / "report.md").read_text()
    assert f"| **RL²** | {tmp_path.as_posix()} | 1 | 64 | 2 | 128 |" in report  # 2 tasks x 2 trials x 2 x 8
    assert f"| RL² seed 2 | {tmp_path.as_posix()} | not yet run |" in report
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()}
    evaluated = (run_dir / "eval" / f"trials_40_{campaigns.RL2_EVAL_EPISODES}_0.json").stat().st_mtime_ns
    scalars = (run_dir / "scalars.csv").read_text()
    capsys.readouterr()
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    assert "Navigation2D__rl2__1: finished (2 iterations)" in out
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()} == before
    assert (run_dir / "scalars.csv").read_text() == scalars
    assert (run_dir / "eval" / f"trials_40_{campaigns.RL2_EVAL_EPISODES}_0.json").stat().st_mtime_ns == evaluated


def test_the_section_says_not_yet_run_without_rl2_runs(tmp_path):
    text = rl2_report.section(tmp_path)
    assert text.startswith(rl2_report.BEGIN) and text.rstrip().endswith(rl2_report.END)
    for family, seeds in {**campaigns.RL2, **campaigns.RL2_BENCHMARKS}.items():
        for s in seeds:
            assert text.count(f"| RL² seed {s} | {tmp_path.as_posix()} | not yet run |") >= 1, family
    assert "| MAML-TRPO | results/locomotion/HalfCheetahVel__maml | 1, 2, 3 | 160,000 | 500 | 80,000,000 |" in text


def test_results_md_rl2_section_is_generated_from_the_artifacts():
    assert rl2_report.main(["--check", "--no-plots"]) == 0, "run: python experiments/rl2_report.py"


def test_a_run_in_flight_is_shown_with_its_iteration_and_env_steps():
    rows = rl2_report.rl2_rows("Navigation2D", {1: {"done": 40, "budget": 150, "eval": None, "per_iteration": 80_000}},
                               80_000, 150, "results/rl2")
    assert rows[0] == ("| RL² seed 1 | results/rl2 | in flight: iteration 40 of 150 | 80,000 | 40 of 150 | "
                       "3,200,000 | – | – | – | – |")
    assert rows[1].startswith("| RL² seed 2 | results/rl2 | not yet run |")


@pytest.mark.integration
def test_the_metaworld_benchmark_scores_rl2_with_the_protocol_as_one_trial(tmp_path):
    pytest.importorskip("metaworld")
    sets = ["algo.meta_batch_size=2", "env.horizon=10", "sampler.backend=serial", "policy.hidden_sizes=[8]",
            "policy.gru_size=4"]
    argv = ["rl2", "--root", str(tmp_path), "--iterations", "1", "--families", "--benchmark", "ML1-reach",
            "--no-estimate", "--set", "iterations=1"] + [a for kv in sets for a in ("--set", kv)]
    assert reproduce.main(argv) == 0
    result = RunDir(tmp_path / "ML1-reach__rl2__1").cached("metaworld.json", iteration=1)
    assert result is not None and result["num_tasks"] == 50 and result["trial_episodes"] == 13
    assert f"| **RL²** | {tmp_path.as_posix()} | 1 | 200 | 1 | 200 |" in (tmp_path / "report.md").read_text()


def test_one_command_runs_the_whole_experiment_and_an_empty_benchmark_list_skips_metaworld(tmp_path, capsys):
    assert reproduce.main(["rl2", "--root", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    order = [line.split("/")[-1].split(":")[0] for line in out.splitlines() if "__rl2__" in line]
    assert order == ["Navigation2D__rl2__1", "Navigation2D__rl2__2", "Navigation2D__rl2__3",
                     "HalfCheetahVel__rl2__1", "ML1-reach__rl2__1"]
    assert reproduce.main(["rl2", "--root", str(tmp_path), "--status", "--benchmark"]) == 0
    assert "ML1-reach" not in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # --status writes nothing
