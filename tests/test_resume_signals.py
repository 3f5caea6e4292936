"""Resume from any moment, run directories, signals, hung workers and full disks.

The kill -9 test draws its kill times uniformly over a whole run, start-up
included (``METARL_KILL_TRIALS`` sets the number of trials; CI runs 1; trial 1 of
every 3 is a run extended with ``--resume --iterations``, so ``METARL_KILL_TRIALS=2``
or more covers it; docs/reliability.md records a long run).
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metarl import checkpoint, rundir
from metarl.config import load_config
from metarl.rundir import RunDir
from metarl.trainer import Trainer, TrainingError
from tests.helpers_limits import run_main
from tests.helpers_processes import alive, children, sampler_workers

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=10", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TIMEOUT = 180


def train_cmd(run_dir: Path, iterations: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "metarl", "train", NAV, "--run-dir", str(run_dir), "--no-progress"]
    for s in [*TINY, f"iterations={iterations}", *extra]:
        cmd += ["--set", s]
    return cmd


def resume_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "metarl", "train", "--resume", str(run_dir), "--no-progress", *extra]


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))["meta"]


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: object) -> None:
    assert sorted(got) == sorted(want), what
    for k in want:
        assert torch.equal(got[k], want[k]), (what, k)


def logged_steps(run_dir: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars("returns/post_adapt")]


def run_quietly(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this test started (the run and any workers it spawned)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def launch_and_kill(cmd: list[str], delay: float) -> bool:
    """Start ``cmd`` in a new process group, SIGKILL the group after ``delay`` s; True if it was still running."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        try:
            proc.wait(timeout=delay)
            return False
        except subprocess.TimeoutExpired:
            return True
    finally:
        kill_group(proc)


def continue_run(cmd: list[str], run_dir: Path, *extra: str) -> None:
    """After a kill: resume if the run directory has its config, else start again (nothing was written yet)."""
    if (run_dir / "config.yaml").is_file():
        r = run_quietly(resume_cmd(run_dir, *extra))
    else:
        r = run_quietly(cmd)
    assert r.returncode == 0, r.stderr[-3000:]


ITERATIONS = 12


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    run = tmp_path_factory.mktemp("ref") / "reference"
    start = time.monotonic()
    r = run_quietly(train_cmd(run, ITERATIONS))
    assert r.returncode == 0, r.stderr[-3000:]
    return run, time.monotonic() - start


def kill_trials(reference: tuple[Path, float], tmp_path: Path, trials: int, seed: int = 1234) -> dict[str, int]:
    """``trials`` runs killed at uniform moments over a whole run (start-up included), then continued.

    Trials 1, 4, 7, ... are runs of half the budget, killed, then extended with
    ``--resume --iterations``, killed again during that, then resumed.
    """
    ref_dir, wall = reference
    expected = final_params(ref_dir)
    rng = random.Random(seed)
    counts = {"trials": 0, "killed": 0, "before_config": 0, "before_first_checkpoint": 0, "resume_extend": 0}
    for trial in range(trials):
        run = tmp_path / f"killed{trial}"
        extend = trial % 3 == 1
        first = train_cmd(run, ITERATIONS // 2 if extend else ITERATIONS)
        killed = launch_and_kill(first, rng.uniform(0.0, wall))
        counts["killed"] += killed
        if killed and not (run / "config.yaml").is_file():
            counts["before_config"] += 1
        elif killed and checkpoint.latest(run / "checkpoints") is None:
            counts["before_first_checkpoint"] += 1
        if extend:
            if not (run / "config.yaml").is_file():
                continue_run(first, run)
            counts["killed"] += launch_and_kill(resume_cmd(run, "--iterations", str(ITERATIONS)),
                                                rng.uniform(0.0, wall))
            counts["resume_extend"] += 1
            continue_run(first, run, "--iterations", str(ITERATIONS))
        else:
            continue_run(first, run)
        assert_same(final_params(run), expected, trial)
        assert logged_steps(run) == list(range(ITERATIONS))
        assert not rundir.stale_temporaries(run)
        counts["trials"] += 1
    return counts


@pytest.mark.integration
def test_kill_9_anywhere_in_the_run_then_resume_gives_the_uninterrupted_result(reference, tmp_path):
    trials = int(os.environ.get("METARL_KILL_TRIALS", "1"))
    counts = kill_trials(reference, tmp_path, trials)
    assert counts["trials"] == trials
    print(f"kill -9 trials: {counts}; all resumed bit-identical")


def signal_trials(reference: tuple[Path, float], tmp_path: Path, trials: int, signum: int,
                  seed: int = 99) -> dict[str, int]:
    """``trials`` runs sent ``signum``, then continued to the end: even trials at a uniform moment over the
    whole run (start-up included), odd ones at a uniform moment in the first 0.5 s after training began."""
    ref_dir, wall = reference
    expected = final_params(ref_dir)
    rng = random.Random(seed)
    counts = {"trials": 0, "signalled": 0, "exit_code_ok": 0, "checkpointed": 0, "during_start_up": 0,
              "before_handler": 0, "after_work": 0}
    for trial in range(trials):
        run = tmp_path / f"sig{trial}"
        cmd = train_cmd(run, ITERATIONS)
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            if trial % 2:
                deadline = time.monotonic() + TIMEOUT
                while proc.poll() is None and not (run / "scalars.csv").exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                time.sleep(rng.uniform(0.0, wall))
            if proc.poll() is None:
                proc.send_signal(signum)
                counts["signalled"] += 1
                _, err = proc.communicate(timeout=TIMEOUT)
                if proc.returncode == -signum and not run.exists():  # before Python ran metarl's code at all:
                    counts["before_handler"] += 1                      # the default action, nothing written
                elif proc.returncode in (0, -signum) and RunDir(run).done_iterations() == ITERATIONS:
                    # after the work: the command had returned, and Python's shutdown resets the
                    # handlers to the default action (or the signal was never acted on)
                    counts["after_work"] += 1
                else:
                    assert proc.returncode == 128 + signum and "Traceback" not in err, (trial, proc.returncode, err)
                counts["exit_code_ok"] += 1
                if "resume with" in err and (run / "manifest.json").exists():
                    counts["checkpointed"] += checkpoint.latest(run / "checkpoints") is not None
                else:
                    counts["during_start_up"] += 1
        finally:
            kill_group(proc)
        continue_run(cmd, run)
        assert_same(final_params(run), expected, trial)
        assert logged_steps(run) == list(range(ITERATIONS))
        counts["trials"] += 1
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_trials_exit_cleanly_and_resume_identically(reference, tmp_path, signum):
    trials = int(os.environ.get("METARL_SIGNAL_TRIALS", "20"))
    counts = signal_trials(reference, tmp_path, trials, signum)
    assert counts["trials"] == trials and counts["exit_code_ok"] == counts["signalled"]
    print(f"{signal.Signals(signum).name} trials: {counts}; all resumed bit-identical")


@pytest.mark.integration
@pytest.mark.parametrize("where", [pytest.param("before_rename", marks=pytest.mark.slow), "before_latest"])
def test_kill_inside_the_first_checkpoint_write_resumes_identically(reference, tmp_path, where):
    """SIGKILL from inside the first checkpoint's write: after the fsync'ed temporary file is complete but
    before its rename, or after the rename but before ``latest`` points at it."""
    run = tmp_path / "run"
    inject = f"""
import os, signal, sys
real = os.replace
def replace(src, dst, *a, **k):
    name = os.path.basename(str(dst))
    if {where!r} == "before_rename" and name == "iter_000001.pt":
        os.kill(os.getpid(), signal.SIGKILL)
    if {where!r} == "before_latest" and name == "latest":
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)
os.replace = replace
from metarl.cli import main
sys.exit(main(sys.argv[1:]))
"""
    cmd = train_cmd(run, ITERATIONS)
    r = subprocess.run([sys.executable, "-c", inject, *cmd[3:]], env=ENV, capture_output=True, timeout=TIMEOUT)
    assert r.returncode == -signal.SIGKILL
    ckpt = run / "checkpoints"
    if where == "before_rename":
        assert rundir.stale_temporaries(run)  # the interrupted write's temporary file
    else:
        assert (ckpt / "iter_000001.pt").is_file() and not (ckpt / "latest").exists()
    done = run_quietly(resume_cmd(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(final_params(run), final_params(reference[0]), where)
    assert logged_steps(run) == list(range(ITERATIONS))
    assert not rundir.stale_temporaries(run)


def test_a_run_without_checkpoint_resumes_from_0_and_stale_files_go(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    cfg = load_config(NAV, TINY + ["iterations=2"])
    Trainer(cfg, ref).train()
    run.mkdir()
    Trainer(cfg, run)  # writes config.yaml, as the command line does first
    (run / "events.out.tfevents.1.host.1.0").write_bytes(b"stale")
    (run / "scalars.csv").write_text("iteration,x\n0,1\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / ".iter_000001.pt.abc.tmp").write_bytes(b"partial")
    (run / ".config.yaml.xyz.tmp").write_bytes(b"")
    code, err = run_main(["train", "--resume", str(run), "--no-progress"])
    assert code == 0, err
    assert_same(final_params(run), final_params(ref), "resume from 0")
    assert not rundir.stale_temporaries(run)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert logged_steps(run) == [0, 1]


def test_iterations_below_the_current_iteration_is_an_error_and_config_is_kept(tmp_path):
    run = tmp_path / "run"
    assert run_main(["train", NAV, "--run-dir", str(run), "--no-progress",
                     *sum((["--set", s] for s in TINY + ["iterations=2"]), [])])[0] == 0
    before = (run / "config.yaml").read_bytes()
    code, err = run_main(["train", "--resume", str(run), "--iterations", "1"])
    assert code == 2 and "below" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.yaml").read_bytes() == before
    assert run_main(["train", "--resume", str(run), "--iterations", "3", "--no-progress"])[0] == 0
    assert load_config(run / "config.yaml").iterations == 3
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["iteration"] == 3


def _create(base: str, queue: multiprocessing.Queue) -> None:
    queue.put(str(rundir.create_unique(Path(base))))


def test_concurrent_creations_get_distinct_directories(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(str(tmp_path / "runs" / "same"), queue)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    made = sorted(queue.get(timeout=5) for _ in procs)
    assert len(set(made)) == 8
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["same"] + [f"same-{i}" for i in range(2, 9)]


def test_default_run_directories_never_collide(tmp_path, monkeypatch):
    import metarl.rundir

    monkeypatch.chdir(tmp_path)
    real = time.strftime
    monkeypatch.setattr(metarl.rundir.time, "strftime", lambda fmt, *t: real(fmt, time.gmtime(0)))  # same second
    sets = sum((["--set", s] for s in TINY + ["iterations=0"]), [])
    for _ in range(3):
        assert run_main(["train", NAV, "--no-progress", *sets])[0] == 0
    dirs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(dirs) == 3 and dirs[1:] == [dirs[0] + "-2", dirs[0] + "-3"]
    for d in dirs:
        assert len(list((tmp_path / "runs" / d).glob("events.out.tfevents.*"))) == 1


def test_force_starts_clean_and_keeps_other_files(tmp_path, monkeypatch):
    import metarl.cli

    run = tmp_path / "run"
    sets = sum((["--set", s] for s in TINY + ["iterations=2"]), [])
    assert run_main(["train", NAV, "--run-dir", str(run), "--no-progress", *sets])[0] == 0
    (run / "eval").mkdir()
    (run / "eval" / "adaptation.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    seen: dict[str, list[str]] = {}

    def stop_before_training(cfg, run_dir, resume, progress):  # as if killed before the first checkpoint
        seen["files"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
        return 130

    monkeypatch.setattr(metarl.cli, "_run_training", stop_before_training)
    assert run_main(["train", NAV, "--run-dir", str(run), "--force", "--seed", "7", *sets])[0] == 130
    assert seen["files"] == ["config.yaml", "notes.txt"]
    monkeypatch.undo()
    assert run_main(["train", "--resume", str(run), "--no-progress"])[0] == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    Trainer(load_config(NAV, TINY + ["iterations=2", "seed=7"]), fresh).train()
    assert_same(final_params(run), final_params(fresh), "--force then resume")


# -- full disk in the TensorBoard writer ------------------------------------------------------

def test_tensorboard_enospc_is_a_clean_error_and_the_run_resumes(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    ref, run = tmp_path / "ref", tmp_path / "run"
    sets = sum((["--set", s] for s in TINY + ["iterations=3"]), [])
    assert run_main(["train", NAV, "--run-dir", str(ref), "--no-progress", *sets])[0] == 0
    real = SummaryWriter.add_scalar

    def full_disk(self, tag, value, step=None, *a, **k):
        if step == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tag, value, step, *a, **k)

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    code, err = run_main(["train", NAV, "--run-dir", str(run), "--no-progress", *sets])
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err
    assert lines[-1].startswith("metarl: training stopped: cannot write logs") and "No space left" in lines[-1]
    assert [ln for ln in lines if ln.startswith("metarl:")] == lines[-1:]
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["iteration"] == 2
    monkeypatch.undo()
    assert run_main(["train", "--resume", str(run), "--no-progress"])[0] == 0
    assert_same(final_params(run), final_params(ref), "after ENOSPC")


def test_writer_enospc_in_the_trainer_is_a_training_error(tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "flush", full)
    (tmp_path / "run").mkdir()
    with pytest.raises(TrainingError, match="No space left on device.*previous checkpoint is intact"):
        Trainer(load_config(NAV, TINY + ["iterations=2"]), tmp_path / "run").train()


# -- hung workers ---------------------------------------------------------------------------------

def test_a_stopped_worker_is_replaced_within_the_hang_timeout():
    import numpy as np

    from metarl import run

    cfg = load_config(NAV, TINY + ["sampler.backend=local", "sampler.workers=1", "sampler.hang_timeout=2"])
    family = run.build_family(cfg)
    learner = run.build_learner(cfg, family)
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    sampler = run.build_sampler(cfg, family, learner.policy)
    stopped = None
    try:
        assert sampler.timeout == 2
        first = sampler.sample(tasks, learner.policy.params(), 2, seed=5)  # workers are ready after this
        stopped = sampler.pids()[0]
        os.kill(stopped, signal.SIGSTOP)
        start = time.monotonic()
        again = sampler.sample(tasks, learner.policy.params(), 2, seed=5)
        elapsed = time.monotonic() - start
        assert elapsed < 2 + 60, elapsed  # the timeout, plus a replacement's start-up
        assert elapsed >= 2
        assert sampler.stats()["worker_restarts"] == 1
        assert sampler.pids()[0] != stopped
        assert torch.equal(first.rewards, again.rewards)
    finally:
        sampler.close()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)


def test_hang_timeout_default_and_null():
    assert load_config(NAV).sampler.hang_timeout == 300
    assert load_config(NAV, ["sampler.hang_timeout=null"]).sampler.hang_timeout is None


# -- signals ------------------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_mid_run_checkpoints_exits_and_leaves_no_workers(tmp_path, signum):
    run = tmp_path / "run"
    cmd = train_cmd(run, 100000, "sampler.backend=local", "sampler.workers=1", "log.checkpoint_every=1000")
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # a few iterations logged
            rows = (run / "scalars.csv").read_text().count("\n") if (run / "scalars.csv").exists() else 0
            if rows >= 2:
                break
            time.sleep(0.1)
        workers = [c for c in sampler_workers(proc.pid) if alive(c)]
        assert proc.poll() is None and len(workers) >= 1
        workers += [c for c in children(proc.pid) if alive(c)]  # and the fork server, if any
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signum, err
        assert "Traceback" not in err and "resume with: metarl train --resume" in err
        state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
        assert 1 <= state["iteration"] < 100000
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if alive(p)]
    finally:
        kill_group(proc)


@pytest.mark.integration
@pytest.mark.parametrize("moment", ["imports", pytest.param("worker_start", marks=pytest.mark.slow)])
def test_ctrl_c_at_start_up_is_one_line_then_resume_works(tmp_path, moment):
    run = tmp_path / "run"
    cmd = train_cmd(run, 1, *(["sampler.backend=local", "sampler.workers=1"] if moment == "worker_start" else []))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        if moment == "imports":
            time.sleep(0.5)
        else:  # a worker process exists: the training loop has begun (it builds the sampler)
            while time.monotonic() < deadline and proc.poll() is None and not sampler_workers(proc.pid):
                time.sleep(0.01)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("run directory:")]
    if moment == "imports":  # start-up: one line, nothing to save
        assert len(lines) == 1 and "interrupted" in lines[0], err
    else:  # the loop owns a checkpoint: it is written (iteration 0) and the resume command is shown
        assert len(lines) == 2 and "checkpoint written at iteration 0" in lines[0], err
        assert lines[1].startswith("interrupted; resume with: metarl train --resume"), err
    continue_run(cmd, run)
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["iteration"] == 1
