"""RL²: the GRU policy, trial sampling, the PPO outer loop on whole trials, its config checks and its runs.

Pins: the functional GRU equals ``torch.nn.GRU``; a log-prob by hand; the hidden state carries across
the episodes of a trial and starts from zero in every trial; the workers' log-probs equal the
learner's recomputation (with episodes that terminate early); the PPO gradient equals finite
differences; same-seed runs are identical and a resumed run is exact; bad input exits 2 with one line.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import run
from metarl.algos import ALGOS, RL2Learner
from metarl.config import ConfigError, load_config
from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianGRUPolicy, gaussian_log_prob, gru_loop, gru_sequence, rl2_inputs, trial_inputs
from metarl.rundir import RunDir
from metarl.sampling import SerialSampler
from metarl.sampling.local import LocalSampler
from metarl.sampling.worker import PolicySpec, trial_draws
from metarl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAV = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TINY = ["algo.name=rl2", "policy.kind=gru", "algo.meta_batch_size=3", "algo.episodes_per_task=4", "env.horizon=8",
        "policy.hidden_sizes=[8]", "policy.gru_size=6", "sampler.backend=serial", "rl2.minibatches=2",
        "rl2.epochs=2"]
EARLY_END = ["env.kwargs={goal_tolerance: 0.15}"]  # some episodes reach the goal and end before the horizon


def learner_and_batch(sets=(), seed=11):
    cfg = load_config(NAV, TINY + list(sets))
    family = run.build_family(cfg)
    learner = run.build_learner(cfg, family)
    tasks = family.sample_tasks(3, run.stream_rng(cfg.seed, run.TASKS, 0))
    batch = SerialSampler(family, PolicySpec.of(learner.policy)).sample(tasks, learner.policy.params(), 4, seed)
    return cfg, family, learner, tasks, batch


def worker_means(batch: EpisodeBatch, learner: RL2Learner, seed: int, horizon: int) -> torch.Tensor:
    """The means the workers sampled around: ``actions - std * noise`` with each trial's own noise."""
    n, t, b, act = batch.actions.shape
    noise = torch.stack([torch.stack([torch.from_numpy(trial_draws(seed, i, j, t // horizon, horizon, act)[1])
                                      for j in range(b)], dim=1) for i in range(n)])  # (N, T, B, act)
    std = torch.exp(learner.policy.log_std.detach())
    return batch.actions - std * noise


# -- the policy ---------------------------------------------------------------------------------

def test_functional_forward_equals_torch_gru_with_the_same_weights():
    torch.manual_seed(0)
    policy = GaussianGRUPolicy(3, 2, (5,), "tanh", gru_size=4).double()
    p = policy.params()
    inputs = torch.randn(7, 3, policy.in_dim, dtype=torch.float64)
    h0 = torch.randn(3, 4, dtype=torch.float64)
    gru = torch.nn.GRU(5, 4).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(gru, f"{name}_l0").copy_(p[f"gru.{name}"])
        feats = policy.features(inputs)
        out, h_last = gru(feats, h0.unsqueeze(0))
        mean, log_std, h = policy(inputs, None, h0)
        torch.testing.assert_close(mean, out @ p["head.weight"].T + p["head.bias"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, h_last[0], rtol=1e-12, atol=1e-12)
        # step by step (the workers' path) gives the same sequence
        hs, means = h0, []
        for t in range(7):
            m, hs = policy.step(inputs[t], hs)
            means.append(m)
        torch.testing.assert_close(torch.stack(means), mean, rtol=1e-12, atol=1e-12)
        # the step-by-step recurrence (masked sequences, stacked weights) too
        states, h_loop = gru_loop(feats, h0, p)
        torch.testing.assert_close(states, out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_loop, h_last[0], rtol=1e-12, atol=1e-12)
    assert torch.equal(log_std, p["log_std"])


def test_the_whole_sequence_recurrence_equals_the_step_loop_to_the_bit_values_and_gradients():
    """``forward`` runs unmasked sequences with shared weights through ``torch.gru`` (faster) and the rest
    through the step loop: the two must agree to the bit, so a run's numbers do not depend on which ran."""
    torch.manual_seed(1)
    policy = GaussianGRUPolicy(4, 2, (6,), "tanh", gru_size=5)
    p = policy.params()
    x = torch.randn(9, 2, 3, 6, requires_grad=True)  # (T, N, B, features)
    h0 = torch.randn(2, 3, 5, requires_grad=True)
    leaves = [x, h0, *(p[f"gru.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))]
    cot = torch.randn(9, 2, 3, 5)
    results = []
    for recurrence in (gru_sequence, gru_loop):
        states, h = recurrence(x, h0, p)
        results.append((states, h, torch.autograd.grad((states * cot).sum() + h.square().sum(), leaves)))
    (s1, h1, g1), (s2, h2, g2) = results
    assert torch.equal(s1, s2) and torch.equal(h1, h2)
    for a, b in zip(g1, g2, strict=True):
        assert torch.equal(a, b)
    # forward takes the loop where a step is masked: the masked row keeps its state
    inputs = torch.randn(9, 3, policy.in_dim)
    mask = torch.ones(9, 3)
    mask[4:, 0] = 0
    with torch.no_grad():
        _, _, h_masked = policy(inputs, None, None, mask)
        _, _, h_short = policy(inputs[:4, :1])
        _, _, h_full = policy(inputs)
    torch.testing.assert_close(h_masked[0], h_short[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(h_masked[1:], h_full[1:])


def test_log_prob_by_hand_on_a_short_sequence():
    policy = GaussianGRUPolicy(1, 1, (1,), "tanh", gru_size=1, init_log_std=math.log(0.5)).double()
    with torch.no_grad():
        for k, v in {"body.0.weight": [0.5, 0.3, -0.2, 0.7], "body.0.bias": 0.1, "gru.weight_ih": [0.2, -0.3, 0.4],
                     "gru.weight_hh": [0.6, 0.1, -0.5], "gru.bias_ih": [0.0, 0.1, 0.2],
                     "gru.bias_hh": [0.3, 0.0, -0.1], "head.weight": 2.0, "head.bias": -0.2,
                     "log_std": math.log(0.5)}.items():
            policy.params()[k].copy_(torch.tensor(v, dtype=torch.float64).reshape(policy.params()[k].shape))
    obs, acts, rews = [0.3, -0.2], [0.1, 0.4], [-1.0, -0.5]
    def sig(x):
        return 1 / (1 + math.exp(-x))
    h, total = 0.0, 0.0
    prev_a, prev_r = 0.0, 0.0
    for t in range(2):  # input (obs, prev action, prev reward, done = 0) -> body (1 unit)
        x = math.tanh(0.5 * obs[t] + 0.3 * prev_a - 0.2 * prev_r + 0.1)
        r = sig(0.2 * x + 0.0 + 0.6 * h + 0.3)
        z = sig(-0.3 * x + 0.1 + 0.1 * h + 0.0)
        n = math.tanh(0.4 * x + 0.2 + r * (-0.5 * h - 0.1))
        h = (1 - z) * n + z * h
        mean = 2.0 * h - 0.2
        total += -0.5 * ((acts[t] - mean) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
        prev_a, prev_r = acts[t], rews[t]
    o = torch.tensor(obs, dtype=torch.float64).view(1, 2, 1, 1)
    a = torch.tensor(acts, dtype=torch.float64).view(1, 2, 1, 1)
    rw = torch.tensor(rews, dtype=torch.float64).view(1, 2, 1)
    x = trial_inputs(o, a, rw, torch.ones(1, 2, 1, dtype=torch.float64), horizon=2)
    assert x[0, 1, 0].tolist() == [obs[1], acts[0], rews[0], 0.0]  # the previous step's action and reward
    with torch.no_grad():
        mean, log_std, _ = policy(x[0])
        got = gaussian_log_prob(mean, log_std, a[0]).sum()
    assert float(got) == pytest.approx(total, abs=1e-7)  # gaussian_log_prob's log(2 pi) is a float32 constant


def test_masked_steps_leave_the_hidden_state_alone():
    torch.manual_seed(1)
    policy = GaussianGRUPolicy(2, 2, (4,), "tanh", gru_size=3).double()
    inputs = torch.randn(6, 2, policy.in_dim, dtype=torch.float64)
    mask = torch.ones(6, 2, dtype=torch.float64)
    mask[2:4, 0] = 0
    mean, _, h = policy(inputs, mask=mask)
    kept = torch.tensor([0, 1, 4, 5])
    mean0, _, h0 = policy(inputs[kept, :1])
    torch.testing.assert_close(h[0], h0[0])
    torch.testing.assert_close(mean[kept, 0], mean0[:, 0])


def test_trial_inputs_carry_the_last_live_step_and_flag_each_new_episode():
    obs = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1)
    actions = 10 + torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1)
    rewards = -torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    mask = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.float32).view(1, 6, 1)  # episode 1 ends at step 1
    rewards = rewards * mask
    x = trial_inputs(obs, actions, rewards, mask, horizon=3)[0, :, 0]
    assert x[:, 1].tolist() == [0, 10, 11, 11, 13, 14]  # previous live action
    assert x[:, 2].tolist() == [0, 0, -1, -1, -3, -4]  # previous live reward
    assert x[:, 3].tolist() == [0, 0, 0, 1, 0, 0]  # done: the first step of episode 2
    torch.testing.assert_close(x[0], rl2_inputs(obs[0, 0, 0], torch.zeros(1), torch.zeros(()), torch.zeros(())))


# -- trial sampling -----------------------------------------------------------------------------

def test_the_hidden_state_carries_over_the_episode_boundary_and_resets_between_trials():
    cfg, _, learner, _, batch = learner_and_batch()
    horizon = cfg.env.horizon
    assert batch.obs.shape[:3] == (3, 2 * horizon, 4)
    means = worker_means(batch, learner, 11, horizon)
    policy, x = learner.policy, trial_inputs(batch.obs, batch.actions, batch.rewards, batch.mask, horizon)
    with torch.no_grad():
        carried, _, _ = policy(x[0], None, None, batch.mask[0])  # task 0's trials: (T, B, act)
        fresh, _, _ = policy(x[0, horizon:])  # their episode 2 from a zero state
        first, _ = policy.step(x[:, 0], policy.initial_hidden(3, 4))  # every trial's first step: zero state
    torch.testing.assert_close(carried[horizon], means[0, horizon], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(carried, means[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fresh[0], means[0, horizon], atol=1e-3)  # so the state was not reset
    torch.testing.assert_close(first, means[:, 0], rtol=1e-5, atol=1e-5)
    assert bool((x[:, horizon, :, -1] == 1).all()) and bool((x[:, :horizon, :, -1] == 0).all())


def test_worker_log_probs_equal_the_learners_on_the_same_actions_with_early_terminations():
    cfg, _, learner, _, batch = learner_and_batch(EARLY_END)
    horizon = cfg.env.horizon
    assert 0 < float(batch.mask.mean()) < 1, "no episode ended early"
    means = worker_means(batch, learner, 11, horizon)
    log_std = learner.policy.log_std.detach()
    worker = gaussian_log_prob(means, log_std, batch.actions)
    x = trial_inputs(batch.obs, batch.actions, batch.rewards, batch.mask, horizon)
    with torch.no_grad():
        rows = learner.log_probs(learner.meta_params(), x.transpose(0, 1).reshape(2 * horizon, 12, -1),
                                 batch.actions.transpose(0, 1).reshape(2 * horizon, 12, -1),
                                 batch.mask.transpose(0, 1).reshape(2 * horizon, 12))
    mine = rows.reshape(2 * horizon, 3, 4).transpose(0, 1)
    live = batch.mask > 0
    torch.testing.assert_close(mine[live], worker[live], rtol=1e-5, atol=1e-5)


def test_serial_shards_and_local_workers_give_the_same_trials():
    _, family, learner, tasks, batch = learner_and_batch(EARLY_END)
    spec = PolicySpec.of(learner.policy)
    assert spec.kind == "gru" and spec.episodes_per_trial == 2
    params = learner.policy.params()
    with SerialSampler(family, spec, shards=5) as s, LocalSampler(family, spec, workers=2) as loc:
        for other in (s.sample(tasks, params, 4, 11), loc.sample(tasks, params, 4, 11)):
            torch.testing.assert_close(other.mask, batch.mask, rtol=0, atol=0)
            live = batch.mask > 0
            torch.testing.assert_close(other.obs[live], batch.obs[live], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(other.actions[live], batch.actions[live], rtol=1e-5, atol=1e-5)


# -- the PPO step ---------------------------------------------------------------------------------

def test_ppo_gradient_matches_finite_differences_in_float64():
    cfg, _, learner, _, batch = learner_and_batch(EARLY_END)
    learner.policy.double()
    b = EpisodeBatch(batch.obs.double(), batch.actions.double(), batch.rewards.double(), batch.mask.double())
    horizon = cfg.env.horizon
    def rows(t):
        return t.transpose(0, 1).reshape(t.shape[1], 12, *t.shape[3:])
    x, a, m = rows(trial_inputs(b.obs, b.actions, b.rewards, b.mask, horizon)), rows(b.actions), rows(b.mask)
    adv = rows(learner.advantages(b))
    meta = learner.meta_params()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # ratios inside and outside the clip range, away from its kinks
        offset = torch.where(torch.rand(m.shape, generator=gen, dtype=torch.float64) < 0.5, 0.05, 0.6)
        old = learner.log_probs(meta, x, a, m) + offset * torch.sign(torch.randn(m.shape, generator=gen,
                                                                                 dtype=torch.float64))
    loss, _ = learner.loss(meta, x, a, m, adv, old)
    grads = dict(zip(meta, torch.autograd.grad(loss, list(meta.values())), strict=True))
    eps = 1e-6
    for k in ("gru.weight_hh", "body.0.weight", "head.bias", "log_std"):
        for index in [(0,) * meta[k].dim(), tuple(s - 1 for s in meta[k].shape)]:
            with torch.no_grad():
                meta[k][index] += eps
                up = learner.loss(meta, x, a, m, adv, old)[0]
                meta[k][index] -= 2 * eps
                down = learner.loss(meta, x, a, m, adv, old)[0]
                meta[k][index] += eps
            fd = (up - down) / (2 * eps)
            torch.testing.assert_close(grads[k][index], fd, rtol=1e-6, atol=1e-9)


def test_step_moves_the_policy_adam_state_round_trips_and_no_inner_step_is_taken():
    _, _, learner, _, batch = learner_and_batch()
    adv = learner.advantages(batch)
    assert bool((adv[batch.mask == 0] == 0).all())
    adapted = learner.adapt(batch, adv)
    assert all(torch.equal(adapted[k], v) for k, v in learner.policy.params().items())
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    result = learner.step(batch, batch, adapted, adv)
    assert not result.rejected and learner.adam_step == 2 * 2  # epochs x minibatches
    assert {"rl2/return_episode_1", "rl2/return_episode_2", "rl2/clip_fraction"} <= set(result.scalars)
    state = learner.state_dict()
    assert any(not torch.equal(state[k], before[k]) for k in before if k.startswith("outer_state/adam_m/"))
    fresh = learner_and_batch()[2]
    fresh.load_state_dict(state)
    assert fresh.adam_step == 4 and all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


# -- runs -------------------------------------------------------------------------------------------

def test_same_seed_runs_are_identical_and_a_resumed_run_is_exact(tmp_path):
    sets = TINY + EARLY_END + ["log.checkpoint_every=1"]
    dirs = {name: tmp_path / name for name in ("a", "b", "resumed")}
    for d in dirs.values():
        d.mkdir()
    ra = Trainer(load_config(NAV, sets + ["iterations=3"]), dirs["a"]).train()
    rb = Trainer(load_config(NAV, sets + ["iterations=3"]), dirs["b"]).train()
    Trainer(load_config(NAV, sets + ["iterations=1"]), dirs["resumed"]).train()
    trainer = Trainer(load_config(dirs["resumed"] / "config.yaml", ["iterations=3"]), dirs["resumed"], resume=True)
    assert trainer.start_iteration == 1
    rc = trainer.train()
    def untimed(r):
        return {k: v for k, v in r.scalars.items() if not k.startswith(("time/", "sampler/"))}
    assert [untimed(r) for r in ra] == [untimed(r) for r in rb]
    assert [untimed(r) for r in ra[1:]] == [untimed(r) for r in rc]
    a, c = RunDir(dirs["a"]).latest_state(), RunDir(dirs["resumed"]).latest_state()
    assert any(k.startswith("outer_state/adam_v/") for k in a["meta"])
    for k in a["meta"]:
        assert torch.equal(a["meta"][k], c["meta"][k]), k


@pytest.mark.parametrize("sets, message", [
    (["policy.adapt=head"], "policy.adapt: must be all with algo.name: rl2"),
    (["rl2.episodes_per_trial=0"], "rl2.episodes_per_trial: must be >= 1, got 0"),
    (["algo.name=maml_trpo"], "policy.kind: must be mlp with algo.name: maml_trpo, got 'gru'"),
    (["policy.kind=mlp"], "policy.kind: must be gru with algo.name: rl2, got 'mlp'"),
    (["policy.gru_size=0"], "policy.gru_size: must be in [1, 16384], got 0"),
])
def test_bad_input_is_a_config_error(sets, message):
    with pytest.raises(ConfigError) as err:
        load_config(NAV, ["algo.name=rl2", "policy.kind=gru", *sets])
    assert message in str(err.value)


@pytest.mark.integration
@pytest.mark.parametrize("sets, message", [
    (["algo.name=rl2", "policy.kind=gru", "policy.adapt=head"], "policy.adapt: must be all with algo.name: rl2"),
    (["algo.name=rl2", "policy.kind=gru", "rl2.episodes_per_trial=0"], "rl2.episodes_per_trial: must be >= 1"),
    (["policy.kind=gru"], "policy.kind: must be mlp with algo.name: maml_trpo, got 'gru'"),
])
def test_bad_rl2_input_exits_2_with_one_line_before_anything_is_written(tmp_path, sets, message):
    run_dir = tmp_path / "run"
    args = [a for kv in sets for a in ("--set", kv)]
    r = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV), "--run-dir", str(run_dir), *args],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not run_dir.exists()


@pytest.mark.integration
def test_two_iterations_train_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    sets = ["algo.name=rl2", "policy.kind=gru", "iterations=2", "algo.meta_batch_size=4", "algo.episodes_per_task=2",
            "env.horizon=20", "sampler.workers=2"]
    args = [a for kv in sets for a in ("--set", kv)]
    r = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV), "--run-dir", str(run_dir), *args],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(run_dir / "scalars.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["iteration"] for row in rows] == ["0", "1"]
    assert {"rl2/return_episode_1", "rl2/return_episode_2", "rl2/kl", "returns/pre_adapt"} <= set(rows[0])
    assert all(np.isfinite(float(row["rl2/loss_after"])) for row in rows)
    assert RunDir(run_dir).done_iterations() == 2
    assert ALGOS["rl2"] is RL2Learner


@pytest.mark.slow
def test_ray_actors_give_the_same_trials():
    from metarl.sampling.ray_backend import RaySampler

    _, family, learner, tasks, batch = learner_and_batch(EARLY_END)
    with RaySampler(family, PolicySpec.of(learner.policy), workers=2) as ray_sampler:
        other = ray_sampler.sample(tasks, learner.policy.params(), 4, 11)
    torch.testing.assert_close(other.mask, batch.mask, rtol=0, atol=0)
    live = batch.mask > 0
    torch.testing.assert_close(other.actions[live], batch.actions[live], rtol=1e-5, atol=1e-5)


CLI_RUN = ["algo.name=rl2", "policy.kind=gru", "iterations=1", "algo.meta_batch_size=2", "algo.episodes_per_task=2",
           "env.horizon=5", "sampler.backend=serial", "policy.hidden_sizes=[4]"]


def train_tiny_run(run_dir: Path, *extra: str) -> Path:
    """A one-iteration RL² run on Navigation2D through ``metarl train`` (in a subprocess, as a user runs it)."""
    args = [a for kv in [*CLI_RUN, *extra] for a in ("--set", kv)]
    train = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV), "--run-dir", str(run_dir),
                            "--no-progress", *args], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    return run_dir


@pytest.mark.integration
@pytest.mark.parametrize("command", [["analyze"], ["evaluate", "--protocol", "adaptation"],
                                     ["evaluate", "--protocol", "transfer"]])
def test_evaluations_before_and_after_an_inner_step_refuse_rl2_with_one_line(tmp_path, command):
    run_dir = train_tiny_run(tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "metarl", command[0], str(run_dir), *command[1:]],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "rl2 takes no inner step" in lines[0]
    assert not (run_dir / "eval").exists()


@pytest.mark.integration
def test_evaluate_gives_rl2_its_curve_over_a_trials_episodes(tmp_path):
    import json

    run_dir = train_tiny_run(tmp_path / "run", "rl2.episodes_per_trial=3")
    r = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(run_dir), "--tasks", "4"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads((run_dir / "eval" / "trials.json").read_text())
    assert result["steps"] == [1, 2, 3] and len(result["per_task"]) == 3 and len(result["per_task"][0]) == 4
    assert result["mean"] == pytest.approx([sum(v) / 4 for v in result["per_task"]])
    assert r.stdout.splitlines()[0].split() == ["episode", "mean", "return", "stderr"]
    # the same held-out tasks as the gradient methods' curve (the evaluation stream, seed 0)
    from metarl.run import held_out_tasks
    from metarl.rundir import RunDir

    family = RunDir(run_dir).load().family
    assert result["tasks"] == [dict(t, goal=list(t["goal"])) for t in held_out_tasks(family, 4, 0)]


def test_the_trial_video_replays_a_workers_trial_with_the_mean_actions():
    """``metarl video`` of an RL² run: its episodes 1..N are one trial, hidden state carried, with the same
    inputs as the worker's; with the noise scaled to nothing the worker's trial is the video's."""
    from metarl.evaluations import split_episodes
    from metarl.video import trial_frames

    cfg, family, learner, tasks, _ = learner_and_batch(EARLY_END + ["rl2.episodes_per_trial=3"])
    with torch.no_grad():
        learner.policy.log_std.fill_(-30.0)  # the worker's actions are its means (Navigation2D starts at 0)
    params = {k: v.detach() for k, v in learner.policy.params().items()}
    horizon = family.horizon
    differ = []
    for task in tasks:
        batch = SerialSampler(family, PolicySpec.of(learner.policy)).sample([task], params, 1, 5)
        want = split_episodes(batch.rewards * batch.mask, 3).sum(2)[0, :, 0]
        env = family.make_env(task)
        panels, got = trial_frames(env, params, learner.policy, 0, horizon, 3, 32, 32, "t")
        env.close()
        assert len(panels) == 3 and all(len(p) == horizon for p in panels)
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), want, rtol=1e-4, atol=1e-4)
        differ.append(got[0] != got[1])
    assert any(differ), "the same start, another hidden state: another episode"


@pytest.mark.integration
def test_video_of_an_rl2_run_shows_the_episodes_of_a_trial(tmp_path):
    import numpy as np
    from helpers_limits import run_main

    from metarl.video import read_video

    run_dir = train_tiny_run(tmp_path / "run", "rl2.episodes_per_trial=3")
    out = tmp_path / "v.mp4"
    code, err = run_main(["video", str(run_dir), "--tasks", "1", "--width", "64", "--height", "64", "--out", str(out)])
    assert code == 0, err
    assert "episodes 1..3 of a trial" in err
    frames = read_video(out)
    assert frames.shape[0] == 5 and frames.shape[2] == 3 * 64  # horizon frames, three episodes side by side
    assert np.any(frames[0] != frames[-1])
    code, err = run_main(["video", str(run_dir), "--steps", "0", "--out", str(tmp_path / "w.gif")])
    assert code == 2 and err.strip().splitlines() == [
        "metarl: error: --steps 0: an RL² run's video shows episodes 1..N of a trial; N must be >= 1"]
    assert not (tmp_path / "w.gif").exists()
