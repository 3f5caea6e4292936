"""The released runs under results/: they load, evaluate, resume, and RESULTS.md is generated from them."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from metarl import checkpoint
from metarl.config import load_config
from metarl.run import build_family, build_learner

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "locomotion"
RUNS = sorted(p for p in RESULTS.glob("*__*__*") if p.is_dir()) if RESULTS.is_dir() else []
# the campaign's finished runs: those with the 40-task analysis it writes when a run reaches its budget
FINISHED = [p for p in RUNS if (p / "eval" / "analysis_40_0.json").is_file()]
# every released run under results/ (the campaign, the probes, the sweeps): each has a checkpoint pointer
ALL_RUNS = sorted(p.parent.parent for p in (ROOT / "results").glob("*/*__*__*/checkpoints/latest"))
TINY = ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2", "--set", "env.horizon=10",
        "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial", "--eval-tasks", "3", "--no-estimate"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def shipped_family(prefix: str) -> str:
    """The family of the shipped config that ``reproduce.py`` runs under the directory prefix ``prefix``."""
    script = load("reproduce")
    return load_config(script.CONFIGS / {**script.FAMILY_CONFIGS, **script.METAWORLD}[prefix]).env.family


def test_there_are_committed_runs():
    assert RUNS, "results/locomotion holds the campaign's runs"


def test_every_results_group_with_runs_is_checked():
    groups = {p.parent.name for p in ALL_RUNS}
    assert {"locomotion", "depth", "outer", "metaworld"} <= groups
    assert set(RUNS) <= set(ALL_RUNS)


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_campaign_run_has_the_campaign_protocol(run):
    cfg = load_config(run / "config.yaml")
    method = run.name.split("__")[1]
    assert cfg.env.kwargs["action_scale"] == 0.1 and cfg.env.horizon == 100
    assert (cfg.algo.meta_batch_size, cfg.algo.episodes_per_task, cfg.algo.first_order) == (40, 20, False)
    assert cfg.policy.adapt == ("head" if method == "anil" else "all")


@pytest.mark.parametrize("run", ALL_RUNS, ids=[f"{p.parent.name}/{p.name}" for p in ALL_RUNS])
def test_committed_run_loads_with_weights_only_and_matches_its_config(run):
    cfg = load_config(run / "config.yaml")
    prefix, method, seed = run.name.split("__")  # a family, or a Meta-World benchmark (ML1-reach, ML10)
    assert cfg.env.family == shipped_family(prefix)
    assert (cfg.seed, cfg.name) == (int(seed), method)
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("iter_*.pt"))
    path = checkpoint.latest(run / "checkpoints")
    earlier = sorted(f"{d.name}.pt" for d in (run / "eval").glob("iter_*") if d.is_dir())
    # the latest checkpoint, and one per budget the run finished before it was extended; nothing else
    assert ckpts == sorted({path.name, *earlier})
    learner = build_learner(cfg, build_family(cfg))
    want = {k: v.shape for k, v in learner.state_dict().items()}
    for name in ckpts:
        state = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert int(state["iteration"]) == int(name[len("iter_"):-len(".pt")])
        got = {k: v.shape for k, v in state["meta"].items()}
        assert got == want
        learner.load_state_dict(state["meta"])  # strict: no missing or unexpected entries
        assert all(bool(torch.isfinite(v).all()) for v in state["meta"].values())
    assert (run / "scalars.csv").stat().st_size > 0
    assert not list(run.glob("events.out.tfevents.*")), "event files are not committed"


def test_results_md_locomotion_section_is_generated_from_the_artifacts():
    report = load("locomotion_report")
    assert report.main(["--check", "--no-plots"]) == 0, "run: python experiments/locomotion_report.py"


def test_report_counts_only_runs_evaluated_at_their_full_budget(tmp_path):
    report = load("locomotion_report")
    for seed, (done, ev_iter, ret) in {1: (4, 4, 10.0), 2: (4, 4, 20.0), 3: (2, 2, 999.0)}.items():
        d = tmp_path / f"HalfCheetahDir__maml__{seed}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "config.yaml").write_text("iterations: 4\nenv: {horizon: 100}\n")
        (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
        (d / "eval").mkdir()
        ev = {"iteration": ev_iter, "mean": [1.0, ret, ret + 1, ret + 2]}
        (d / "eval" / "curve_40_3_0.json").write_text(json.dumps(ev))
    md = tmp_path / "R.md"
    md.write_text("# R\n")
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| HalfCheetahDir | MAML |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2:5] == ["10.0", "20.0", "in flight (2/4)"]
    assert cells[5] == "**15.0 ± 7.1 [10.0, 20.0]**"  # mean ± sample std [bootstrap CI] of 10 and 20; not seed 3
    assert cells[6:9] == ["1.0", "16.0", "17.0"]
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--check"]) == 0
    (tmp_path / "HalfCheetahDir__maml__3" / "checkpoints" / "latest").write_text("iter_000004.pt\n")
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--check"]) == 1


def test_a_further_family_gets_rows_once_it_has_runs_with_the_maml_papers_figures(tmp_path):
    report = load("locomotion_report")
    md = tmp_path / "R.md"
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    assert "| AntDir |" not in md.read_text()  # no Ant run: the HalfCheetah rows only, as before
    assert "| HalfCheetahVel | ANIL | not started | not started | not started |" in md.read_text()
    d = tmp_path / "AntDir__maml__2"
    (d / "checkpoints").mkdir(parents=True)
    (d / "eval").mkdir()
    (d / "config.yaml").write_text("iterations: 4\nenv: {horizon: 100}\n")
    (d / "checkpoints" / "latest").write_text("iter_000004.pt\n")
    tasks = [{"direction": 1}, {"direction": -1}]
    per_task = [[1.0, 3.0], [50.0, 30.0], [0.0, 0.0], [0.0, 0.0]]
    ev = {"iteration": 4, "mean": [2.0, 40.0, 41.0, 42.0], "per_task": per_task, "tasks": tasks}
    (d / "eval" / "curve_40_3_0.json").write_text(json.dumps(ev))
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    text = md.read_text()
    rows = {tuple(c.strip() for c in ln.split("|")[1:3]): [c.strip() for c in ln.split("|")[3:-1]]
            for ln in text.splitlines() if ln.startswith("| AntDir |")}
    assert list(rows) == [("AntDir", "MAML"), ("AntDir", "ANIL")]
    maml = rows[("AntDir", "MAML")]
    assert maml[:3] == ["not started", "40.0", "not started"]
    assert maml[3] == "**40.0 (1 seed)**"
    assert maml[-2:] == ["–", "8.7 / 499.1 / 500.7 / 499.1"]  # no ANIL paper figure; MAML paper fig. 5
    assert rows[("AntDir", "ANIL")][:4] == ["not started"] * 3 + ["**–**"]
    assert "AntDir by goal direction" in text and "| MAML | 2 | backward | 1 | +3.0 | +30.0 | +0.0 |" in text
    assert f"| `{tmp_path}/AntDir__maml__2` | 4/4 |" in text


def test_extended_runs_keep_their_first_budget_in_the_headline_and_get_a_table_of_their_own(tmp_path):
    report = load("locomotion_report")

    def curve(iteration, ret):
        return json.dumps({"iteration": iteration, "mean": [1.0, ret, ret + 1, ret + 2]})

    # seed 1: finished 4, extended to 6 and finished; seed 2: finished 4, extension in flight at 5;
    # seed 3: finished 4, never extended
    for seed, (budget, done, first, last) in {1: (6, 6, 10.0, 40.0), 2: (6, 5, 20.0, None),
                                              3: (4, 4, 30.0, None)}.items():
        d = tmp_path / f"HalfCheetahDir__maml__{seed}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "config.yaml").write_text(f"iterations: {budget}\nenv: {{horizon: 100}}\n")
        (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
        (d / "eval").mkdir()
        if budget > 4:
            (d / "eval" / "iter_000004").mkdir()
            (d / "eval" / "iter_000004" / "curve_40_3_0.json").write_text(curve(4, first))
        else:
            (d / "eval" / "curve_40_3_0.json").write_text(curve(4, first))
        if last is not None:
            (d / "eval" / "curve_40_3_0.json").write_text(curve(done, last))
    md = tmp_path / "R.md"
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in md.read_text().splitlines()
            if ln.startswith("| HalfCheetahDir | MAML |")]
    assert len(rows) == 2, md.read_text()
    headline, longer = rows
    assert headline[2:6] == ["10.0", "20.0", "30.0", "**20.0 ± 10.0 [10.0, 30.0]**"]  # all three at 4
    assert longer[2:5] == ["40.0 (at 6)", "in flight (5/6)", "not extended"]
    assert longer[5] == "**40.0 (1 seed)**"
    state = {ln.split("|")[1].strip(): ln.split("|")[-2].strip() for ln in md.read_text().splitlines()
             if ln.startswith("| `")}
    assert [v for k, v in sorted(state.items())] == ["4, 6", "4", "4"]  # evaluated at


def test_feature_reuse_table_averages_finished_analysed_runs_only(tmp_path):
    report = load("locomotion_report")
    layers = ["body.0", "body.1", "head"]
    for seed, (done, cka_head, gain_head) in {1: (4, 0.5, 30.0), 2: (4, 0.7, 50.0), 3: (2, 0.0, 999.0)}.items():
        d = tmp_path / f"HalfCheetahDir__anil__{seed}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "eval").mkdir()
        (d / "config.yaml").write_text("iterations: 4\nenv: {horizon: 100}\n")
        (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
        analysis = {"iteration": done,
                    "similarity": {"layers": layers, "cka": [1.0, 0.9, cka_head], "relative_change": [0.0, 0.1, 0.4]},
                    "freeze_ablation": {"step0": {"mean": -5.0}, "variants": {
                        "all": {"gain": gain_head + 1}, "head_only": {"gain": gain_head}, "body_only": {"gain": 0.0},
                        "none": {"gain": 0.0}}}}
        (d / "eval" / "analysis_40_0.json").write_text(json.dumps(analysis))
    md = tmp_path / "R.md"
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| HalfCheetahDir | ANIL | 2 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "body.0 / body.1 / head"
    assert cells[4] == "1.000 ± 0.000 / 0.900 ± 0.000 / 0.600 ± 0.141"  # seed 3 (unfinished) left out
    assert cells[6] == "−5.0 ± 0.0"
    assert cells[7:10] == ["41.0 ± 14.1", "40.0 ± 14.1", "0.0 ± 0.0"]
    assert not any(ln.startswith("| HalfCheetahDir | MAML |") and "body.0" in ln for ln in md.read_text().splitlines())


def test_direction_split_averages_each_directions_tasks_of_finished_runs(tmp_path):
    report = load("locomotion_report")
    tasks = [{"direction": 1}, {"direction": -1}, {"direction": 1}]
    per_task = [[10.0, -20.0, 30.0], [100.0, 5.0, 200.0], [0.0, 0.0, 0.0], [110.0, -7.0, 210.0]]
    for seed, done in {1: 4, 2: 2}.items():
        d = tmp_path / f"HalfCheetahDir__anil__{seed}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "eval").mkdir()
        (d / "config.yaml").write_text("iterations: 4\nenv: {horizon: 100}\n")
        (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
        ev = {"iteration": done, "mean": [0.0] * 4, "per_task": per_task, "tasks": tasks}
        (d / "eval" / "curve_40_3_0.json").write_text(json.dumps(ev))
    md = tmp_path / "R.md"
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--no-plots"]) == 0
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| ANIL | ")]
    assert rows == ["| ANIL | 1 | forward | 2 | +20.0 | +150.0 | +160.0 |",  # tasks 0 and 2
                    "| ANIL | 1 | backward | 1 | −20.0 | +5.0 | −7.0 |"]  # seed 2 is unfinished


def _params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))["meta"]


@pytest.mark.integration
def test_campaign_continues_from_committed_artifacts_in_a_fresh_clone(tmp_path):
    """Train 2 of 4 iterations, commit what the repository keeps, clone, rerun: same parameters as 4 straight."""
    script = load("reproduce")
    straight = tmp_path / "straight"
    args = ["locomotion", "--families", "HalfCheetahDir", "--seeds", "1", *TINY]
    assert script.main([*args, "--iterations", "4", "--root", str(straight)]) == 0

    repo = tmp_path / "repo"
    (repo / "results").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    assert script.main([*args, "--iterations", "2", "--root", str(repo / "results" / "locomotion")]) == 0
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "artifacts"], cwd=repo, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    committed = subprocess.run(["git", "ls-files"], cwd=clone, check=True, capture_output=True, text=True).stdout
    assert "events.out.tfevents" not in committed and "scalars.csv" in committed

    results_md = (ROOT / "RESULTS.md").read_text()
    assert script.main([*args, "--iterations", "4", "--root", str(clone / "results" / "locomotion")]) == 0
    assert (ROOT / "RESULTS.md").read_text() == results_md, "a campaign elsewhere leaves RESULTS.md alone"
    assert "HalfCheetahDir__maml__1" in (clone / "results" / "locomotion" / "report.md").read_text()
    for method in ("maml", "anil"):
        a = _params(straight / f"HalfCheetahDir__{method}__1")
        b = _params(clone / "results" / "locomotion" / f"HalfCheetahDir__{method}__1")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (method, k)
        rows_a = (straight / f"HalfCheetahDir__{method}__1" / "scalars.csv").read_text().splitlines()
        rows_b = (clone / "results" / "locomotion" / f"HalfCheetahDir__{method}__1" / "scalars.csv").read_text()
        rows_b = rows_b.splitlines()
        assert [r.split(",")[:3] for r in rows_a] == [r.split(",")[:3] for r in rows_b]  # iteration, pre, post


@pytest.mark.integration
def test_evaluate_and_analyze_work_on_a_committed_run_without_training(tmp_path):
    run = tmp_path / FINISHED[0].name  # a copy: evaluate logs into its run directory, which must stay as committed
    shutil.copytree(FINISHED[0], run)
    from metarl.cli import main  # in this process: the commands are the same, the imports are paid once

    out = tmp_path / "curve.json"
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "2", "--out", str(out)]) == 0
    curve = json.loads(out.read_text())
    assert len(curve["mean"]) == 2 and curve["num_tasks"] == 2
    assert main(["analyze", str(run), "--tasks", "2", "--episodes", "2", "--max-states", "50",
                 "--out-dir", str(tmp_path / "analysis")]) == 0
    assert list((tmp_path / "analysis").glob("*.json"))
    # analyze's own output in the run (eval/analysis.json) leaves the campaign's 40-task analysis alone
    released = {p.name: p.read_bytes() for p in (run / "eval").glob("*.json")}
    assert "analysis_40_0.json" in released and "analysis.json" not in released
    assert main(["analyze", str(run), "--tasks", "2", "--episodes", "2", "--max-states", "50"]) == 0
    assert json.loads((run / "eval" / "analysis.json").read_text())["similarity"]["num_tasks"] == 2
    assert {p.name: p.read_bytes() for p in (run / "eval").glob("*.json") if p.name in released} == released


OUTER_TABLES = sorted((ROOT / "results").glob("*/outer_table.md"))


@pytest.mark.parametrize("table", OUTER_TABLES, ids=[p.parent.name for p in OUTER_TABLES])
def test_outer_tables_are_generated_from_the_artifacts(table):
    """Every committed ``outer_table.md`` is what ``reproduce.py outer --report-only`` writes from its runs."""
    assert load("reproduce").outer_report(table.parent, plot=False) == table.read_text()


def test_results_md_anil2019_section_is_generated_from_the_artifacts():
    report = load("anil2019_report")
    assert report.main(["--check", "--no-plots"]) == 0, "run: python experiments/anil2019_report.py"


@pytest.mark.parametrize("which", ["cavia", "rules"])
def test_results_md_cavia_and_rules_sections_are_generated_from_the_artifacts(which):
    """The committed table and RESULTS.md's section are what ``rules_report.py`` writes from the released runs
    (their learned-rule tables read the checkpoints)."""
    assert load("rules_report").main([which, "--check"]) == 0, f"run: python experiments/rules_report.py {which}"


def test_results_md_depth_section_is_generated_from_the_artifacts():
    """``results/depth/depth.md`` and RESULTS.md's depth section are what ``depth_report.py --results RESULTS.md``
    writes from the sweep's runs."""
    report = load("depth_report")
    text = report.table(report.collect(ROOT / "results" / "depth", 40, 0), 40, 0)
    assert (ROOT / "results" / "depth" / "depth.md").read_text() == text, "run: python experiments/depth_report.py"
    assert report.section(text, "results/depth/depth.png") in (ROOT / "RESULTS.md").read_text(), \
        "run: python experiments/depth_report.py --results RESULTS.md"
