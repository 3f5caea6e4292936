"""The reproduction script runs end to end on a tiny budget and resumes instead of retraining."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

from experiments import outer_report
from metarl.evaluation import adaptation_curve
from metarl.run import build_sampler
from metarl.rundir import RunDir, load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2", "--set", "env.horizon=10",
        "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial", "--eval-tasks", "3", "--no-estimate"]


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_resolves_to_a_valid_config_of_its_own():
    script = load_script()
    seen = {}
    for method in script.METHODS:
        cfg = script.config_for("HalfCheetahDir", method, 2, 7, [])
        assert (cfg.name, cfg.seed, cfg.iterations) == (method, 2, 0 if method == "random" else 7)
        key = (cfg.policy.adapt, cfg.algo.inner_update, cfg.algo.inner_lr, cfg.algo.inner_steps, cfg.algo.name,
               cfg.env.oracle, cfg.iterations)
        assert key not in seen, f"{method} trains the same configuration as {seen.get(key)}"
        seen[key] = method
    variants = {m: script.config_for("HalfCheetahDir", m, 1, 5, []) for m in ("anil_meta_sgd", "anil_lr_x3")}
    assert (variants["anil_meta_sgd"].policy.adapt, variants["anil_meta_sgd"].algo.learn_inner_lr) == ("head", True)
    assert (variants["anil_lr_x3"].policy.adapt, variants["anil_lr_x3"].algo.inner_lr) == ("head", 0.3)
    assert all(m.startswith(("pretrained", "random", "oracle")) or m in script.METHOD_LABELS for m in script.METHODS)


@pytest.mark.integration
def test_maml_reproduction_writes_table_and_plot_then_skips_finished_runs(tmp_path, capsys):
    script = load_script()
    assert script.main(["maml", "--iterations", "2", "--root", str(tmp_path), *TINY]) == 0
    table = (tmp_path / "maml_Navigation2D.md").read_text()
    for method in ("maml", "pretrained", "random", "oracle", "MAML (paper, fig. 5)"):
        assert f"| {method} |" in table
    assert (tmp_path / "maml_Navigation2D.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert script.main(["maml", "--iterations", "2", "--root", str(tmp_path), *TINY]) == 0
    assert "Navigation2D__maml__1: finished (2 iterations)" in capsys.readouterr().out


@pytest.mark.integration
def test_anil_reproduction_extends_the_budget_by_resuming(tmp_path, capsys):
    script = load_script()
    args = ["anil", "--families", "Navigation2D", "--seeds", "1", "2", "--root", str(tmp_path), *TINY]
    assert script.main([*args[:1], "--iterations", "1", *args[1:]]) == 0
    assert script.main([*args[:1], "--iterations", "2", *args[1:]]) == 0
    table = (tmp_path / "anil_table.md").read_text()
    assert RunDir(tmp_path / "Navigation2D__anil__2").done_iterations() == 2
    # our column: mean ± std over the seeds of the return after one step, evaluated here independently
    for method in ("maml", "anil"):
        finals = []
        for seed in (1, 2):
            cfg, family, learner, iteration = load_run(tmp_path / f"Navigation2D__{method}__{seed}")
            assert iteration == 2
            with build_sampler(cfg, family, learner.policy) as sampler:
                curve = adaptation_curve(learner, family, sampler, 3, 1, cfg.algo.episodes_per_task, seed=0)
            finals.append(curve["mean"][1])
        row = [ln for ln in table.splitlines() if ln.startswith(f"| Navigation2D | {method.upper()} |")]
        assert len(row) == 1, table
        want = f"| {statistics.mean(finals):.1f} ± {statistics.stdev(finals):.1f} (2 seeds) |".replace("-", "−")
        assert want in row[0], row[0]  # a typographic minus, as everywhere in RESULTS.md


@pytest.mark.integration
def test_depth_sweep_trains_evaluates_reports_and_skips_finished_runs(tmp_path, capsys):
    script = load_script()
    i = TINY.index("policy.hidden_sizes=[8]")
    tiny = TINY[:i - 1] + TINY[i + 1:]  # the sweep sets the architecture (--width, --depths)
    args = ["depth", "--iterations", "1", "--seeds", "1", "--depths", "1", "2", "--learned-depths", "1",
            "--width", "4", "--root", str(tmp_path), *tiny]
    assert script.main(args) == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["Navigation2D__kronecker_d1__1", "Navigation2D__maml_d1__1", "Navigation2D__maml_d2__1",
                     "Navigation2D__meta_sgd_d1__1"]
    from metarl.rundir import load_run

    cfg, _, learner, _ = load_run(tmp_path / "Navigation2D__kronecker_d1__1")
    assert cfg.algo.inner_update == "kronecker" and cfg.policy.hidden_sizes == [4] and learner.precond_params
    assert load_run(tmp_path / "Navigation2D__maml_d2__1")[0].policy.hidden_sizes == [4, 4]
    table = (tmp_path / "depth.md").read_text()
    for row in ("| MAML | 1 |", "| MAML | 2 |", "| MAML + Kronecker preconditioner | 1 |", "| Meta-SGD | 1 |"):
        assert row in table
    assert "(1 seed)" in table and "3 held-out tasks" in table
    png = (tmp_path / "depth.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    capsys.readouterr()
    assert script.main(args) == 0
    assert "Navigation2D__maml_d2__1: finished (1 iterations)" in capsys.readouterr().out
    # the report alone regenerates the same table from the artifacts
    (tmp_path / "depth.md").unlink()
    from experiments import depth_report

    assert depth_report.main(["--root", str(tmp_path), "--eval-tasks", "3", "--no-plots"]) == 0
    assert (tmp_path / "depth.md").read_text() == table


@pytest.mark.integration
@pytest.mark.parametrize(("method", "label", "key", "value"), [
    ("promp", "ProMP", "name", "promp"), ("kronecker", "MAML-TRPO + Kronecker", "inner_update", "kronecker")])
def test_outer_on_a_locomotion_family_tabulates_it_beside_the_campaigns_maml_trpo(tmp_path, capsys, method, label,
                                                                                  key, value):
    import yaml

    script = load_script()
    reference = Path(outer_report.LOCOMOTION_ROOT) / "HalfCheetahDir__maml__1"
    args = ["outer", "--families", "HalfCheetahDir", "--methods", method, "--seeds", "1", "--iterations", "2",
            "--root", str(tmp_path), *TINY]
    assert script.main(args) == 0
    saved = yaml.safe_load((tmp_path / f"HalfCheetahDir__{method}__1" / "config.yaml").read_text())
    assert saved["algo"][key] == value and saved["algo"]["name"] == ("promp" if method == "promp" else "maml_trpo")
    table = (tmp_path / "outer_table.md").read_text()
    promp = next(ln for ln in table.splitlines() if ln.startswith(f"| {label} | 1 |"))
    cells = [c.strip() for c in promp.split("|")[1:-1]]
    assert cells[2] == "2" and cells[3:] == [""] * len(outer_report.MILESTONES)  # two iterations: no milestone reached
    if (reference / "scalars.csv").exists():  # the committed campaign run: its own smoothed curve at iteration 10
        from metarl import scalars

        _, post = scalars.read(reference, ["returns/post_adapt"])["returns/post_adapt"]
        row = next(ln for ln in table.splitlines() if ln.startswith("| MAML-TRPO | 1 |"))
        assert [c.strip() for c in row.split("|")[1:-1]][3] == f"{post[:10].mean():.1f}"
    assert (tmp_path / "HalfCheetahDir_vs_maml_trpo.png").stat().st_size > 1000


@pytest.mark.integration
def test_sigterm_during_a_campaign_run_checkpoints_it_and_the_same_command_continues(tmp_path):
    """A scheduler's SIGTERM (or ``kill``) in the middle of a run writes a checkpoint at the last completed
    iteration (not the last periodic one), exits 143, and the same command resumes from there."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "HalfCheetahDir__maml__1"
    cmd = [sys.executable, str(ROOT / "experiments" / "reproduce.py"), "locomotion", "--families", "HalfCheetahDir",
           "--seeds", "1", "--iterations", "100000", "--root", str(tmp_path), *TINY,
           "--set", "log.checkpoint_every=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            csv = run / "scalars.csv"
            if csv.exists() and len(csv.read_text().splitlines()) >= 4:  # header and three iterations
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run did not log three iterations")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "run the same command to continue" in err
    script = load_script()
    done = RunDir(run).done_iterations()
    logged = len((run / "scalars.csv").read_text().splitlines()) - 1
    assert done is not None and done >= 3 and done == logged
    assert [p.name for p in (run / "checkpoints").glob("iter_*.pt")] == [f"iter_{done:06d}.pt"]
    assert script.main(["locomotion", "--families", "HalfCheetahDir", "--seeds", "1", "--iterations",
                        str(done + 1), "--root", str(tmp_path), *TINY]) == 0
    assert RunDir(run).done_iterations() == done + 1


@pytest.mark.integration
def test_extending_a_finished_run_keeps_its_evaluation_and_checkpoint_at_the_first_budget(tmp_path, capsys):
    import json

    from metarl.cli import main as cli

    script = load_script()
    args = ["locomotion", "--families", "HalfCheetahDir", "--seeds", "1", "--root", str(tmp_path), *TINY]
    assert script.main([*args, "--iterations", "1"]) == 0
    run = tmp_path / "HalfCheetahDir__anil__1"
    first = json.loads((run / "eval" / "curve_3_3_0.json").read_text())
    first_analysis = json.loads((run / "eval" / "analysis_3_0.json").read_text())
    assert first["iteration"] == first_analysis["iteration"] == 1
    capsys.readouterr()
    assert script.main([*args, "--iterations", "2"]) == 0
    assert "HalfCheetahDir__anil__1: extending from 1 to 2 iterations" in capsys.readouterr().out
    kept = run / "eval" / "iter_000001"
    assert json.loads((kept / "curve_3_3_0.json").read_text()) == first
    assert json.loads((kept / "analysis_3_0.json").read_text()) == first_analysis
    assert json.loads((run / "eval" / "curve_3_3_0.json").read_text())["iteration"] == 2
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*.pt")) == ["iter_000001.pt", "iter_000002.pt"]
    # the kept checkpoint is the one the first budget's evaluation was made from: it evaluates to the same curve
    out = tmp_path / "again.json"
    assert cli(["evaluate", str(run), "--iteration", "1", "--tasks", "3", "--steps", "3", "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["iteration"] == 1 and again["mean"] == first["mean"]
    capsys.readouterr()
    assert cli(["evaluate", str(run), "--iteration", "7", "--tasks", "3", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iteration 7" in err[0] and "it keeps: 1, 2" in err[0], err
    assert not (tmp_path / "x.json").exists()


def test_locomotion_campaign_runs_every_family_at_the_protocols_horizon(tmp_path, capsys):
    import argparse

    script = load_script()
    args = argparse.Namespace(root=str(tmp_path), seeds=[1], iterations=500, methods=["maml", "anil"], set=[],
                              families=["HalfCheetahDir", "AntDir"])
    jobs = {run.name: cfg for cfg, run in script.locomotion_jobs(args)}
    assert sorted(jobs) == ["AntDir__anil__1", "AntDir__maml__1", "HalfCheetahDir__anil__1",
                            "HalfCheetahDir__maml__1"]
    for cfg in jobs.values():  # the shipped Ant config says 200 (the MAML paper); the campaign says 100
        assert (cfg.env.horizon, cfg.env.kwargs["action_scale"], cfg.iterations) == (100, 0.1, 500)
        assert (cfg.algo.meta_batch_size, cfg.algo.episodes_per_task, cfg.algo.first_order) == (40, 20, False)
    assert jobs["AntDir__anil__1"].policy.adapt == "head" and jobs["AntDir__maml__1"].policy.adapt == "all"
    args.set = ["env.horizon=7"]  # the user's --set wins over the protocol
    assert {cfg.env.horizon for cfg, _ in script.locomotion_jobs(args)} == {7}
    with pytest.raises(SystemExit) as e:
        script.main(["locomotion", "--families", "Navigation2D", "--root", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'Navigation2D'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_plain_locomotion_command_continues_an_ant_campaign_once_it_has_started(tmp_path, monkeypatch):
    script = load_script()
    seen = []
    monkeypatch.setattr(script, "train_and_evaluate", lambda args, jobs, **kw: seen.append(
        sorted({run.name.split("__")[0] for _, run in jobs})))
    monkeypatch.setattr(script, "write_report", lambda *a: None)
    plain = ["locomotion", "--root", str(tmp_path), "--no-estimate"]
    assert script.main(plain) == 0
    started = tmp_path / "AntDir__maml__1"  # `--families AntDir` started here: a run directory with its config
    started.mkdir()
    (started / "config.yaml").write_text("iterations: 500\nenv:\n  horizon: 100\n")
    (tmp_path / "AntVel__maml__1.json").write_text("{}")  # not a run directory
    assert script.main(plain) == 0
    assert script.main([*plain, "--families", "HalfCheetahVel"]) == 0  # naming families still limits them
    assert seen == [["HalfCheetahDir", "HalfCheetahVel"], ["AntDir", "HalfCheetahDir", "HalfCheetahVel"],
                    ["HalfCheetahVel"]]


@pytest.mark.integration
def test_locomotion_methods_runs_only_the_methods_named(tmp_path, capsys):
    script = load_script()
    args = ["locomotion", "--families", "HalfCheetahDir", "--seeds", "1", "--root", str(tmp_path), *TINY]
    assert script.main([*args, "--methods", "anil", "--iterations", "1"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*__*__*")) == ["HalfCheetahDir__anil__1"]
    assert RunDir(tmp_path / "HalfCheetahDir__anil__1").done_iterations() == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        script.main([*args, "--methods", "promp"])
    assert e.value.code == 2 and "invalid choice: 'promp'" in capsys.readouterr().err


def test_outer_report_is_a_function_of_the_artifacts_with_kept_budgets_and_runs_in_flight(tmp_path):
    import json

    script = load_script()

    def run(seed, budget, done, curves, stale=None):
        d = tmp_path / f"Navigation2D__promp__{seed}"
        (d / "checkpoints").mkdir(parents=True)
        (d / "config.yaml").write_text(f"iterations: {budget}\n")
        (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
        for it, one in curves.items():
            where = d / "eval" if it == done else d / "eval" / f"iter_{it:06d}"
            where.mkdir(parents=True, exist_ok=True)
            (where / "curve_40_3_0.json").write_text(json.dumps({"iteration": it, "mean": [-1.0, one, one, one]}))
        if stale is not None:  # an evaluation of an earlier checkpoint left at the top: not the latest's
            (d / "eval" / "curve_40_3_0.json").write_text(json.dumps({"iteration": stale, "mean": [0, 99, 0, 0]}))

    run(1, 8, 8, {4: 10.0, 8: 20.0})
    run(2, 8, 6, {4: 30.0}, stale=5)
    run(3, 4, 4, {4: 50.0})
    (tmp_path / "Navigation2D__not_a_method__1").mkdir()
    text = script.outer_report(tmp_path)
    rows = {ln.split("|")[3].strip(): [c.strip() for c in ln.split("|")[4:-1]]
            for ln in text.splitlines() if ln.startswith("| Navigation2D | promp |")}
    assert rows["4"] == ["10.0", "30.0", "50.0", "**30.0 ± 20.0**", "-1.0", "30.0", "30.0"]
    assert rows["8"] == ["20.0", "in flight (6/8)", "not extended", "**20.0** (1 of 3 seeds)", "-1.0",
                         "20.0", "20.0"]
    assert list(rows) == ["4", "8"] and "99" not in text
    assert script.main(["outer", "--report-only", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "outer_table.md").read_text() == text
    assert not list(tmp_path.glob("*/scalars.csv")), "nothing was trained"


@pytest.mark.parametrize("which", ["anil", "maml", "outer", "locomotion", "depth", "metaworld", "anil2019", "cavia",
                                   "rules", "rl2"])
def test_every_subcommand_lists_its_runs_with_status_and_writes_nothing(tmp_path, capsys, which):
    assert load_script().main([which, "--root", str(tmp_path / "runs"), "--status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(" runs)") and " not started" in out[-1]
    assert not (tmp_path / "runs").exists()


def test_status_alone_lists_every_released_campaign(capsys):
    module = load_script()
    assert module.main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if not line.startswith(" ") and line.endswith("):")]
    assert headers == [f"{name} ({module.ROOTS[name]}):" for name in module.RELEASED]
    assert sum(line.endswith(" runs)") for line in out) == len(module.RELEASED)


def test_all_runs_the_queue_one_command_at_a_time_and_stops_at_the_first_failure(monkeypatch, capsys):
    from experiments import campaigns

    script = load_script()
    calls = []
    codes = iter([0, 0, 143])  # the third command is interrupted (SIGTERM)

    def call(argv):
        calls.append(argv)
        return next(codes)

    monkeypatch.setattr(script, "run_command", call)
    assert script.main(["all", "--no-estimate"]) == 143
    assert [c[2:] for c in calls] == [[*cmd, "--no-estimate"] for cmd in campaigns.CONTINUE[:3]]
    assert all(c[:2] == [script.sys.executable, str(ROOT / "experiments" / "reproduce.py")] for c in calls)
    err = capsys.readouterr().err
    assert f"reproduce.py {' '.join(campaigns.CONTINUE[2])} exited 143; run `reproduce.py all` again" in err
    # every command of the queue parses as its subcommand's arguments
    p_calls = []
    monkeypatch.setattr(script, "run_command", lambda argv: p_calls.append(argv) or 0)
    assert script.main(["all"]) == 0 and len(p_calls) == len(campaigns.CONTINUE)
    for cmd in campaigns.CONTINUE:
        with pytest.raises(SystemExit) as e:
            script.main([*cmd, "--help"])
        assert e.value.code == 0
    capsys.readouterr()


def test_all_status_prints_each_command_of_the_queue_and_trains_nothing(monkeypatch, capsys):
    from experiments import campaigns

    script = load_script()
    monkeypatch.setattr(script, "run_command", lambda *a, **k: pytest.fail("all --status started a command"))
    assert script.main(["all", "--status"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line.startswith("[")]
    assert heads == [f"[{i}/{len(campaigns.CONTINUE)}] reproduce.py {' '.join(c)}"
                     for i, c in enumerate(campaigns.CONTINUE, 1)]


COUNTING_CHILD = """
import signal, sys, time
got = []
signal.signal(signal.SIGTERM, lambda *a: got.append(1))
import os
print("ready", os.getpgid(0), flush=True)
deadline = time.time() + 20
while not got and time.time() < deadline:
    time.sleep(0.05)
time.sleep(1.0)  # a second signal would arrive here
open(sys.argv[1], "w").write(str(len(got)))
sys.exit(143 if got else 0)
"""

PARENT = """
import sys
sys.path.insert(0, sys.argv[1])
from experiments import reproduce
sys.exit(reproduce.run_command([sys.executable, "-c", sys.argv[2], sys.argv[3]]))
"""


def test_a_queued_command_gets_each_signal_once_whether_sent_to_the_queue_or_its_group(tmp_path):
    """``all`` runs each command in its own session and forwards SIGTERM: a scheduler's signal to the queue's
    process, or to its whole process group, reaches the command exactly once (a second one would interrupt
    its checkpoint), and the queue exits with the command's code."""
    import os
    import signal
    import subprocess
    import sys

    for to_group in (False, True):
        out = tmp_path / f"count_{to_group}"
        parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT), COUNTING_CHILD, str(out)],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert parent.stdout is not None
        ready, child_group = parent.stdout.readline().split()
        assert ready == "ready" and int(child_group) != parent.pid  # not in the queue's group: no second copy
        if to_group:
            os.killpg(parent.pid, signal.SIGTERM)
        else:
            parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 143
        assert out.read_text() == "1"
