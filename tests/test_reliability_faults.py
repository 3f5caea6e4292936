"""Faults from a family during ``metarl train`` (issue 35, classes 3 and 9): NaN observations reject the
updates they would poison and then stop the run with one line naming the family and the iteration; a
``step`` that raises (even an exception whose ``__str__`` raises) stops it with one line naming the family
and the exception, a checkpoint of the last completed iteration, and a run that resumes to the
uninterrupted result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from envs.navigation import Navigation2DEnv
from metarl import checkpoint
from metarl.config import load_config
from metarl.sampling.worker import finite_actions, nonfinite_rows
from metarl.trainer import Trainer
from tests.helpers_limits import run_main, set_args

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


class NaNObservationNavigation(Navigation2DEnv):
    """Navigation2D whose observations are NaN after the first step (fault injection)."""

    batched = None  # the loop-over-envs path: every observation comes from step()

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        return np.full_like(np.asarray(obs, dtype=np.float32), np.nan), reward, term, trunc, info


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no")


class FailingStepNavigation(Navigation2DEnv):
    """Navigation2D whose ``step`` raises an unprintable exception while the file ``fail_marker`` exists and
    holds N, once N resets have happened in this process (fault injection; sampler workers see the file too)."""

    batched = None
    resets = 0

    def __init__(self, *args, fail_marker: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_marker = fail_marker

    def reset(self, *, seed=None, options=None):
        type(self).resets += 1
        return super().reset(seed=seed, options=options)

    def step(self, action):
        if self.fail_marker and os.path.exists(self.fail_marker):
            if type(self).resets > int(Path(self.fail_marker).read_text()):
                raise Unprintable()
        return super().step(action)


envs.register_family("FaultNaNObservations", NaNObservationNavigation, horizon=5)
envs.register_family("FaultFailingStep", FailingStepNavigation, horizon=5)


def sets(*items: str) -> list[str]:
    return set_args(TINY, *items)


def params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))["meta"]


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_a_non_finite_action_never_reaches_the_simulator_and_marks_its_row():
    actions = np.array([[0.1, 0.2], [np.nan, 0.0], [np.inf, 1.0]], dtype=np.float32)
    bad = nonfinite_rows(actions)
    assert bad is not None and bad.tolist() == [False, True, True]
    safe = finite_actions(actions, bad)
    assert np.isfinite(safe).all() and safe.dtype == actions.dtype and np.array_equal(safe[0], actions[0])
    good = actions[:1]
    assert nonfinite_rows(good) is None and finite_actions(good, None) is good


def test_nan_observations_reject_every_update_then_stop_naming_the_family_and_iteration(tmp_path):
    run = tmp_path / "run"
    code, err = run_main(["train", NAV, "--run-dir", str(run), "--no-progress",
                          *sets("env.family=FaultNaNObservations", "iterations=5",
                                "algo.max_consecutive_rejections=2")])
    assert code == 1, err[-2000:]
    assert "Traceback" not in err and "actions contain NaN" not in err
    ours = [ln for ln in err.splitlines() if ln.startswith("metarl:")]
    assert len(ours) == 1 and ours[0].startswith("metarl: training stopped: 2 consecutive updates rejected")
    assert "family FaultNaNObservations" in ours[0] and "iteration 1" in ours[0]
    # every update was rejected: the checkpoint holds the initial parameters
    init = Trainer(load_config(NAV, [*TINY, "env.family=FaultNaNObservations"]), tmp_path / "init").learner
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["iteration"] == 2 and state["rejected_steps"] == 2
    for k, v in init.state_dict().items():
        assert torch.equal(state["meta"][k], v), k
    assert all(torch.isfinite(v).all() for v in state["meta"].values())


@pytest.mark.parametrize("backend", ["serial", "local"])
def test_a_step_that_raises_stops_training_with_one_line_and_the_run_resumes(backend, tmp_path):
    """A family whose ``step`` raises (an exception whose ``__str__`` raises, too) in iteration 1: exit 1, one
    line naming the family and the exception, a checkpoint of iteration 1; without the fault, ``--resume``
    ends with the parameters of an uninterrupted run."""
    extra = ["sampler.workers=2"] if backend == "local" else []
    marker = tmp_path / "fail"
    extra.append(f"env.kwargs.fail_marker={marker}")
    argv = lambda run: ["train", NAV, "--run-dir", str(run), "--no-progress",  # noqa: E731
                        *sets("env.family=FaultFailingStep", "iterations=3", f"sampler.backend={backend}",
                              *extra)]
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert run_main(argv(ref))[0] == 0
    # serial: 8 resets an iteration (4 envs, train and valid batches); local workers count their own resets
    marker.write_text("8" if backend == "serial" else "0")
    FailingStepNavigation.resets = 0
    code, err = run_main(argv(run))
    assert code == 1, err[-2000:]
    assert "Traceback" not in err
    ours = [ln for ln in err.splitlines() if ln.startswith("metarl:")]
    assert len(ours) == 1, err
    assert ours[0].startswith("metarl: training stopped: family FaultFailingStep failed during the rollouts: ")
    assert "Unprintable" in ours[0] and f"--resume {run}" in ours[0]
    done = 1 if backend == "serial" else 0
    assert checkpoint.load(checkpoint.latest(run / "checkpoints"))["iteration"] == done
    assert json.loads((run / "manifest.json").read_text())["sessions"][-1]["status"] == "failed"
    marker.unlink()
    code, err = run_main(["train", "--resume", str(run), "--no-progress"])
    assert code == 0, err[-2000:]
    assert_same(params(run), params(ref))
