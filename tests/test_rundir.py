"""The run directory's one owner (:mod:`metarl.rundir`): its lifecycle, its result cache, the ``--module`` files
it records and re-imports, and every run committed under ``results/`` loading through it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metarl.cli import main
from metarl.config import load_config
from metarl.rundir import MODULES_RECORD, RunDir, clean, curve_file

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=10", "policy.hidden_sizes=[8]",
        "sampler.backend=serial"]
# every released run: a directory under results/ with a config and a checkpoint (a campaign's run that has not
# written its first checkpoint yet has a config and no checkpoints/latest)
RESULT_RUNS = sorted(p.parent for p in (ROOT / "results").glob("*/*/config.yaml")
                     if (p.parent / "checkpoints" / "latest").is_file())
# the cheapest ones, for commands that roll out: Navigation2D runs, one per results group
NAV_SAMPLE = sorted({p.parent.name: p for p in RESULT_RUNS if p.name.startswith("Navigation2D__")}.values())[:3]

TOY_FAMILY = '''
from envs import register_family
from envs.navigation import Navigation2DEnv


class ToyNavEnv(Navigation2DEnv):
    """Navigation2D under another name: a family only this file registers."""

    family = "ToyNav"


register_family("ToyNav", ToyNavEnv, horizon=100)
'''


def metarl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``metarl ARGS`` in a fresh process: nothing registered but what the run itself brings."""
    return subprocess.run([sys.executable, "-m", "metarl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def sets(*keys: str) -> list[str]:
    return [a for kv in keys for a in ("--set", kv)]


# -- lifecycle and results -------------------------------------------------------------

def test_prepare_training_starts_resumes_extends_and_skips_finished(tmp_path):
    from metarl.trainer import Trainer

    cfg = load_config(NAV_CONFIG, TINY + ["iterations=1"])
    rd = RunDir(tmp_path / "run")
    (rd.path).mkdir()
    (rd.path / "events.out.tfevents.1.stale").write_text("")  # a start that never reached a checkpoint
    plan = rd.prepare_training(cfg)
    assert (plan.action, plan.done) == ("start", None) and rd.is_run()
    assert not list(rd.path.glob("events.out.tfevents.*"))
    Trainer(plan.cfg, rd.path).train()
    assert rd.prepare_training(cfg).action == "finished" and rd.done_iterations() == 1
    rd.write_result(curve_file(3, 1, 0), {"iteration": 1, "mean": [0.0, 1.0]})
    grown = load_config(NAV_CONFIG, TINY + ["iterations=2", "algo.inner_lr=0.5"])
    plan = rd.prepare_training(grown, keep_budgets=True)
    assert (plan.action, plan.done, plan.resume) == ("resume", 1, True)
    assert (plan.cfg.iterations, plan.cfg.algo.inner_lr) == (2, cfg.algo.inner_lr)  # the run's own config
    assert plan.archived == rd.eval_dir / "iter_000001" and list(rd.kept_budgets()) == [1]


def test_cached_results_are_current_only_when_every_field_matches(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.cached("a.json") is None
    rd.write_result("a.json", {"iteration": 3, "similarity": {"num_tasks": 2}})
    assert rd.cached("a.json", iteration=3, similarity__num_tasks=2) == {"iteration": 3,
                                                                         "similarity": {"num_tasks": 2}}
    assert rd.cached("a.json", iteration=4) is None
    assert rd.cached("a.json", similarity__num_tasks=5) is None
    (rd.eval_dir / "b.json").write_text("{not json")
    assert rd.cached("b.json") is None


def test_clean_keeps_the_recorded_modules_with_the_config(tmp_path):
    module = tmp_path / "toy.py"
    module.write_text("X = 1\n")
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    (rd.config_path).write_text("iterations: 1\n")
    rd.record_modules([module])
    clean(rd.path, keep_config=True)
    assert rd.recorded_modules() == [{"path": str(module.resolve()), "copy": "modules/toy.py"}]
    clean(rd.path)
    assert not any(rd.path.iterdir())


# -- modules ---------------------------------------------------------------------------

@pytest.mark.integration
def test_a_module_family_is_recorded_and_every_later_command_reimports_it(tmp_path):
    module = tmp_path / "toy_nav.py"
    module.write_text(TOY_FAMILY)
    run = tmp_path / "run"
    trained = metarl("train", NAV_CONFIG, "--module", str(module), "--run-dir", str(run), "--no-progress",
                     *sets(*TINY, "env.family=ToyNav", "iterations=2"), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    rd = RunDir(run)
    assert rd.recorded_modules() == [{"path": str(module.resolve()), "copy": "modules/toy_nav.py"}]
    assert (run / "modules" / "toy_nav.py").read_text() == TOY_FAMILY
    # without --module: evaluate, resume (extending the budget), analyze
    ev = metarl("evaluate", str(run), "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "ev.json"), cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "ev.json").read_text())["iteration"] == 2
    resumed = metarl("train", "--resume", str(run), "--iterations", "3", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert rd.done_iterations() == 3
    analyzed = metarl("analyze", str(run), "--tasks", "2", "--episodes", "2", "--max-states", "20",
                      "--out-dir", str(tmp_path / "analysis"), cwd=tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    # a moved original: the run's copy serves
    module.rename(tmp_path / "elsewhere.py")
    ev = metarl("evaluate", str(run), "--tasks", "2", "--steps", "1", "--out", str(tmp_path / "ev2.json"),
                cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    # both gone: exit 2, one line naming the module
    (run / "modules" / "toy_nav.py").unlink()
    gone = metarl("evaluate", str(run), "--tasks", "2", "--out", str(tmp_path / "ev3.json"), cwd=tmp_path)
    err = gone.stderr.strip().splitlines()
    assert gone.returncode == 2 and len(err) == 1 and "toy_nav.py" in err[0], gone.stderr
    assert not (tmp_path / "ev3.json").exists()


@pytest.mark.integration
def test_a_broken_recorded_module_is_one_line_naming_it(tmp_path):
    module = tmp_path / "toy_nav.py"
    module.write_text(TOY_FAMILY)
    run = tmp_path / "run"
    assert main(["train", NAV_CONFIG, "--module", str(module), "--run-dir", str(run), "--no-progress",
                 *sets(*TINY, "env.family=ToyNav", "iterations=1")]) == 0
    module.write_text("raise RuntimeError('broken on purpose')\n")
    (run / "modules" / "toy_nav.py").unlink()
    done = metarl("evaluate", str(run), "--tasks", "2", cwd=tmp_path)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "toy_nav.py" in err[0] and "broken on purpose" in err[0]


@pytest.mark.integration
def test_seeds_of_a_module_family_continue_without_the_module(tmp_path):
    module = tmp_path / "toy_nav.py"
    module.write_text(TOY_FAMILY)
    base = tmp_path / "seeds"
    first = metarl("train", NAV_CONFIG, "--module", str(module), "--seeds", "1", "--run-dir", str(base),
                   "--no-progress", *sets(*TINY, "env.family=ToyNav", "iterations=1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = metarl("train", NAV_CONFIG, "--seeds", "1", "--run-dir", str(base), "--no-progress",
                   *sets(*TINY, "env.family=ToyNav", "iterations=2"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "seed 1: resuming at iteration 1" in again.stderr
    assert RunDir(base / "seed1").done_iterations() == 2


# -- every released run ----------------------------------------------------------------

def test_there_are_released_runs():
    assert len(RESULT_RUNS) > 20 and NAV_SAMPLE


@pytest.mark.parametrize("run", RESULT_RUNS, ids=[f"{p.parent.name}/{p.name}" for p in RESULT_RUNS])
def test_every_released_run_loads_through_its_run_directory(run):
    """Its config loads through the RunDir and its latest checkpoint into its learner (restore checks names and
    shapes)."""
    rd = RunDir(run)
    cfg = rd.config()
    loaded = rd.load()
    assert loaded.cfg == cfg and 0 <= loaded.iteration <= cfg.iterations
    assert loaded.iteration <= rd.latest_iteration()  # a campaign may checkpoint the run meanwhile


@pytest.mark.integration
@pytest.mark.parametrize("run", NAV_SAMPLE, ids=[f"{p.parent.name}/{p.name}" for p in NAV_SAMPLE])
def test_released_navigation_runs_evaluate(run, tmp_path):
    copy = tmp_path / run.name  # a copy: evaluate logs into its run directory, which must stay as committed
    shutil.copytree(run, copy)
    out = tmp_path / "curve.json"
    assert main(["evaluate", str(copy), "--tasks", "2", "--steps", "1", "--out", str(out)]) == 0
    curve = json.loads(out.read_text())
    assert curve["num_tasks"] == 2 and len(curve["mean"]) == 2 and curve["iteration"] == RunDir(run).done_iterations()


@pytest.mark.integration
def test_a_released_navigation_run_resumes(tmp_path):
    run = NAV_SAMPLE[0]
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    done = RunDir(copy).done_iterations()
    assert main(["train", "--resume", str(copy), "--iterations", str(done + 1), "--no-progress"]) == 0
    assert RunDir(copy).done_iterations() == done + 1
    assert not (copy / MODULES_RECORD).exists()  # an old run needs no module record


# -- the run-directory lock ---------------------------------------------------------------

def test_a_second_process_cannot_train_in_a_run_directory_another_is_training_in(tmp_path):
    """Two ``train --resume`` at once: the second exits 2 with one line naming the first (its pid) and changes
    nothing; once the first is gone (SIGTERM: its interrupt checkpoint) the run resumes, and
    ``scalars.csv`` holds every iteration once."""
    import csv
    import os
    import signal
    import time

    from metarl.trainer import Trainer

    run = tmp_path / "run"
    run.mkdir()
    Trainer(load_config(NAV_CONFIG, TINY + ["iterations=1", "log.checkpoint_every=1"]), run).train()
    argv = [sys.executable, "-m", "metarl", "train", "--resume", str(run), "--iterations", "100000", "--no-progress"]
    first = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "manifest.json").is_file() or json.loads((run / "manifest.json").read_text()).get(
                "status") != "running" or not _locked(run):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.05)
        before = sorted(p.name for p in run.iterdir())
        second = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("metarl: error: "), second.stderr
        assert f"process {first.pid}" in lines[0] and str(run) in lines[0], lines[0]
        assert first.poll() is None  # the first one goes on
        assert sorted(p.name for p in run.iterdir()) == before  # the second wrote no event file
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 143, first.stderr.read() if first.stderr else ""
    done = RunDir(run).done_iterations()
    assert done is not None and done >= 1
    assert main(["train", "--resume", str(run), "--iterations", str(done + 2), "--no-progress"]) == 0
    with open(run / "scalars.csv", newline="") as f:
        its = [int(r[0]) for r in list(csv.reader(f))[1:]]
    assert its == list(range(done + 2)), its
    assert len(list(run.glob("events.out.tfevents.*"))) >= 1


def _locked(path: Path) -> bool:
    """Whether some process holds ``path``'s ``flock`` (tried from another open file description)."""
    import fcntl
    import os

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_the_lock_is_held_once_per_process_and_released(tmp_path):
    """:meth:`RunDir.lock` again in the same process is a no-op and writes nothing; another open of the
    directory (as another process holds it) conflicts until :meth:`RunDir.unlock`; ``--force`` on a locked
    directory is refused before it removes anything."""
    import fcntl
    import os

    from metarl.rundir import RunDirBusy

    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.lock()
    rd.lock()
    assert _locked(rd.path) and not list(rd.path.iterdir())
    fd = os.open(rd.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rd.unlock()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now
        (rd.path / "config.yaml").write_text("name: x\n")
        with pytest.raises(RunDirBusy, match="in use by"):
            RunDir.create(load_config(NAV_CONFIG, TINY), rd.path, force=True)
        assert (rd.path / "config.yaml").is_file()
    finally:
        os.close(fd)
