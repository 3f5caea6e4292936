"""RL²'s evaluations and plots: the trial curve over episodes 1..N (``metarl evaluate --steps N``) with the hidden
state carried across all N episodes, Meta-World's protocol as one trial, and ``metarl plot`` of ``trials.json``
beside a MAML run's ``adaptation.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import run
from metarl.config import load_config
from metarl.evaluations import metaworld_trials, sample_trials, split_episodes
from metarl.policies import trial_inputs
from metarl.rundir import LoadedRun
from metarl.sampling.worker import trial_draws

ROOT = Path(__file__).resolve().parents[1]
NAV = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TINY = ["algo.name=rl2", "policy.kind=gru", "algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=6",
        "policy.hidden_sizes=[8]", "policy.gru_size=6", "sampler.backend=serial"]


def loaded_run(sets=(), config=NAV) -> LoadedRun:
    cfg = load_config(config, TINY + list(sets))
    family = run.build_family(cfg)
    learner = run.build_learner(cfg, family)
    with torch.no_grad():  # a policy whose memory matters: larger recurrent weights than the initialisation's
        learner.policy.gru.weight_hh.mul_(4.0)
    return LoadedRun(cfg, family, learner, 0)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metarl", *args], capture_output=True, text=True)


def train_tiny(run_dir: Path, sets=()) -> None:
    args = [a for kv in TINY + ["iterations=1", *sets] for a in ("--set", kv)]
    r = cli("train", str(NAV), "--run-dir", str(run_dir), "--no-progress", *args)
    assert r.returncode == 0, r.stderr


# -- trials of N episodes ----------------------------------------------------------------------------

def test_a_trial_of_n_episodes_carries_the_hidden_state_across_all_of_them():
    loaded = loaded_run()
    policy, horizon, n, seed = loaded.learner.policy, loaded.cfg.env.horizon, 4, 5
    tasks = run.held_out_tasks(loaded.family, 3, 0)
    batch = sample_trials(loaded, tasks, 2, n, seed)
    assert batch.obs.shape[:3] == (3, n * horizon, 2) and policy.episodes_per_trial == 2  # the policy unchanged
    # the means the worker sampled around, from each trial's own noise
    act = batch.actions.shape[-1]
    noise = torch.stack([torch.stack([torch.from_numpy(trial_draws(seed, i, j, n, horizon, act)[1])
                                      for j in range(2)], dim=1) for i in range(3)])
    sampled = batch.actions - torch.exp(policy.log_std.detach()) * noise
    x = trial_inputs(batch.obs, batch.actions, batch.rewards, batch.mask, horizon)
    with torch.no_grad():
        for i in range(3):  # a manual rollout: the whole N-episode trial through the GRU from a zero state
            carried, _, _ = policy(x[i], None, None, batch.mask[i])
            torch.testing.assert_close(carried, sampled[i], rtol=1e-5, atol=1e-5)
            last = (n - 1) * horizon  # episode N's first step
            fresh, _, _ = policy(x[i, last:])  # the same inputs from a zero state: a fresh trial
            assert not torch.allclose(fresh[0], sampled[i, last], atol=1e-3)
    assert bool((x[:, horizon::horizon, :, -1] == 1).all())  # every later episode starts flagged done


def test_split_episodes_takes_episode_k_from_steps_k_h_to_k_plus_one_h():
    values = torch.arange(2 * 3 * 4 * 1, dtype=torch.float32).reshape(2, 3 * 4, 1)
    parts = split_episodes(values, 3)
    assert parts.shape == (2, 3, 4, 1)
    torch.testing.assert_close(parts[1, 2, :, 0], values[1, 8:12, 0])


@pytest.mark.integration
def test_evaluate_steps_n_gives_episodes_1_to_n_of_one_trial_and_defaults_to_k(tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(run_dir)
    r = cli("evaluate", str(run_dir), "--tasks", "3")
    assert r.returncode == 0, r.stderr
    default = json.loads((run_dir / "eval" / "trials.json").read_text())
    assert default["steps"] == [1, 2] and default["episodes_per_trial"] == 2
    r = cli("evaluate", str(run_dir), "--tasks", "3", "--steps", "5", "--episodes", "3",
            "--out", str(tmp_path / "five.json"))
    assert r.returncode == 0, r.stderr
    five = json.loads((tmp_path / "five.json").read_text())
    assert five["steps"] == [1, 2, 3, 4, 5] and five["episodes_per_trial"] == 5
    assert five["trained_episodes_per_trial"] == 2 and five["episodes_per_task"] == 3
    assert np.asarray(five["per_task"]).shape == (5, 3)
    assert five["tasks"] == default["tasks"]  # the same held-out tasks whatever the trial length
    assert [int(x) for x in r.stdout.split()[4::3]] == [1, 2, 3, 4, 5]
    for bad, message in ((["--steps", "0"], "--steps: must be >= 1"),
                         (["--steps", "101"], "--steps 101: must be <= 100"),
                         (["--tasks", "40", "--episodes", "10000", "--steps", "100"], "episodes per trial")):
        r = cli("evaluate", str(run_dir), *bad, "--out", str(tmp_path / "bad.json"))
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
        assert not (tmp_path / "bad.json").exists()


# -- Meta-World's protocol as one trial ------------------------------------------------------------

def test_metaworld_protocol_as_one_trial_scores_the_last_episodes():
    pytest.importorskip("metaworld")
    loaded = loaded_run(["env.horizon=20", "env.kwargs.env_name=reach-v3"],
                        ROOT / "experiments" / "configs" / "metaworld_ml1_reach.yaml")
    tasks = loaded.family.test_tasks()[:2]
    result = metaworld_trials(loaded, tasks, seed=0, adaptation_episodes=2, evaluation_episodes=1)
    batch = sample_trials(loaded, tasks, 1, 3, run.derive_seed(0, 8, 0))  # the protocol's seed stream
    live = split_episodes(batch.mask, 3)
    returns = (split_episodes(batch.rewards, 3) * live).sum(2)[..., 0].double()
    assert [row["return_post"] for row in result["per_task"]] == pytest.approx(returns[:, 2].tolist())
    assert [row["return_pre"] for row in result["per_task"]] == pytest.approx(returns[:, :2].mean(1).tolist())
    assert result["adaptation_steps"] == 0 and result["trial_episodes"] == 3 and result["num_tasks"] == 2
    assert 0.0 <= result["success_rate"] <= 1.0


# -- plots ------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_plot_draws_an_rl2_curve_beside_a_maml_run_and_refuses_a_bad_trials_file(tmp_path):
    rl2, maml = tmp_path / "rl2", tmp_path / "maml"
    train_tiny(rl2)
    sets = ["iterations=1", "algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=6",
            "policy.hidden_sizes=[8]", "sampler.backend=serial"]
    assert cli("train", str(NAV), "--run-dir", str(maml), "--no-progress",
               *[a for kv in sets for a in ("--set", kv)]).returncode == 0
    assert cli("evaluate", str(rl2), "--tasks", "2", "--steps", "3").returncode == 0
    assert cli("evaluate", str(maml), "--tasks", "2", "--steps", "1").returncode == 0
    from metarl import plots

    assert plots.learning_tags(plots._read_config(rl2))[1] == ("rl2/return_episode_2", "episode 2")
    out = tmp_path / "both.png"
    r = cli("plot", str(rl2), str(maml), "--labels", "RL²", "MAML", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == plots.PNG_SIGNATURE
    (rl2 / "eval" / "trials.json").write_text(json.dumps({"steps": [1, 2], "mean": [0.0]}))
    r = cli("plot", str(rl2), "--out", str(tmp_path / "bad.png"))
    lines = [ln for ln in r.stderr.strip().splitlines() if not ln.startswith("WARNING tensorboard")]
    assert r.returncode == 2 and len(lines) == 1 and "trials.json" in lines[0], r.stderr
    assert not (tmp_path / "bad.png").exists()
