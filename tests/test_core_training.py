"""Training loop, checkpoints/resume, CLI and config errors on Navigation2D."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from metarl import checkpoint
from metarl.cli import main
from metarl.config import ConfigError, load_config
from metarl.rundir import load_run
from metarl.trainer import Trainer
from tests.helpers_limits import time_limit, tiny_cli_sets

SMALL = ["algo.meta_batch_size=4", "algo.episodes_per_task=4", "env.horizon=20", "policy.hidden_sizes=[8]",
         "sampler.backend=serial"]
ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")


def small_config(iterations: int = 3, extra: list[str] | None = None):
    return load_config(NAV_CONFIG, SMALL + [f"iterations={iterations}", "log.checkpoint_every=2"] + (extra or []))


def meta_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()}


# -- Navigation2D ------------------------------------------------------------------

def test_navigation2d_passes_env_checker_and_rewards_by_hand():
    env = gymnasium.make("metarl/Navigation2D-v0", task={"goal": (0.3, -0.2)})
    check_env(env.unwrapped, skip_render_check=True)
    raw = env.unwrapped
    obs, _ = raw.reset(seed=0)
    assert obs.dtype == np.float32 and np.all(obs == 0)
    obs, r, term, trunc, info = raw.step(np.array([0.5, -0.05]))  # x clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, -0.05], atol=1e-7)
    assert r == pytest.approx(-np.hypot(0.1 - 0.3, -0.05 + 0.2))
    assert r == sum(v for k, v in info.items() if k.startswith("reward_"))
    assert not term and not trunc
    raw.step(np.array([0.1, -0.1]))
    obs, r, term, *_ = raw.step(np.array([0.1, -0.05]))
    assert term and r == pytest.approx(0.0, abs=1e-12)
    assert raw.get_task() == {"goal": (0.3, -0.2)}


def test_navigation2d_batched_matches_single_envs_exactly():
    family = envs.make_family("Navigation2D")
    tasks = family.sample_tasks(5, np.random.default_rng(3))
    batched = family.make_vector(tasks)
    singles = [family.make_env(t) for t in tasks]
    seeds = list(range(5))
    obs_b = batched.reset(seeds)
    obs_s = np.stack([e.reset(seed=s)[0] for e, s in zip(singles, seeds)])
    assert np.array_equal(obs_b, obs_s)
    rng = np.random.default_rng(0)
    for _ in range(60):
        a = rng.uniform(-0.15, 0.15, size=(5, 2))
        ob, rb, tb = batched.step(a)
        outs = [e.step(a[i]) for i, e in enumerate(singles)]
        assert np.array_equal(ob, np.stack([o[0] for o in outs]))
        assert np.array_equal(rb, np.array([o[1] for o in outs]))
        assert np.array_equal(tb, np.array([o[2] for o in outs]))


def test_navigation2d_task_errors_and_bad_actions():
    family = envs.make_family("Navigation2D")
    with pytest.raises(envs.TaskError, match="missing"):
        family.make_env({})
    with pytest.raises(envs.TaskError, match="outside"):
        family.make_env({"goal": (2.0, 0.0)})
    env = family.make_env({"goal": (0.1, 0.1)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    tasks_a = family.sample_tasks(4, np.random.default_rng(7))
    assert tasks_a == family.sample_tasks(4, np.random.default_rng(7))
    assert all(-0.5 <= c <= 0.5 for t in tasks_a for c in t["goal"])


# -- training -----------------------------------------------------------------------

def test_same_seed_gives_identical_runs_and_other_seed_differs(tmp_path):
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        (tmp_path / name).mkdir()
        trainer = Trainer(small_config(2, [f"seed={seed}"]), tmp_path / name)
        results = trainer.train()
        runs.append(([r.scalars["returns/post_adapt"] for r in results], meta_params(trainer)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[0][0] != runs[2][0]


def test_resume_matches_uninterrupted_run_and_tensorboard_has_no_duplicate_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "full").mkdir()
    full = Trainer(small_config(4), tmp_path / "full")
    full.train()

    (tmp_path / "part").mkdir()
    part = Trainer(small_config(4), tmp_path / "part")
    part.cfg.iterations = 3  # stops after 3; checkpoints at 2 and 3
    part.train()
    # simulate a crash after the checkpoint at iteration 2: drop the later one
    ckpt_dir = tmp_path / "part" / "checkpoints"
    (ckpt_dir / "iter_000003.pt").unlink()
    (ckpt_dir / "latest").write_text("iter_000002.pt\n")
    resumed = Trainer(small_config(4), tmp_path / "part", resume=True)
    assert resumed.start_iteration == 2
    resumed.train()
    a, b = meta_params(full), meta_params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)

    acc = EventAccumulator(str(tmp_path / "part"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("returns/post_adapt")]
    assert sorted(set(steps)) == [0, 1, 2, 3]
    full_acc = EventAccumulator(str(tmp_path / "full"))
    full_acc.Reload()
    # by step (the newest write of each), not by position: two event files written in the same second sort by
    # their writer counter as text, so their order in the accumulator is not the order they were written in
    def by_step(events):
        return {e.step: e.value for e in sorted(events, key=lambda e: e.wall_time)}

    assert by_step(acc.Scalars("returns/post_adapt"))[3] == pytest.approx(
        by_step(full_acc.Scalars("returns/post_adapt"))[3])


def test_checkpoints_are_weights_only_and_refuse_pickled_code(tmp_path):
    (tmp_path / "run").mkdir()
    Trainer(small_config(2), tmp_path / "run").train()
    path = checkpoint.latest(tmp_path / "run" / "checkpoints")
    state = checkpoint.load(path)
    assert state["iteration"] == 2 and "body.0.weight" in state["meta"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    bad = tmp_path / "bad.pt"
    torch.save({"meta": Evil()}, bad)
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        checkpoint.load(bad)
    assert not (tmp_path / "pwned").exists()


def test_training_improves_post_adaptation_return_on_navigation(tmp_path):
    cfg = load_config(NAV_CONFIG, ["algo.meta_batch_size=10", "algo.episodes_per_task=10", "env.horizon=50",
                                   "iterations=8", "sampler.backend=serial"])
    (tmp_path / "run").mkdir()
    results = Trainer(cfg, tmp_path / "run").train()
    first, last = results[0].scalars, results[-1].scalars
    assert last["returns/post_adapt"] > first["returns/post_adapt"] + 10
    assert all(r.scalars["trpo/kl"] <= cfg.trpo.max_kl + 1e-9 for r in results)


# -- CLI ------------------------------------------------------------------------------

TAGS = ["returns/pre_adapt", "returns/post_adapt", "returns/post_minus_pre", "trpo/kl", "trpo/line_search_steps",
        "trpo/surrogate_before", "trpo/surrogate_after", "time/iteration_s", "time/sampling_s", "time/outer_s",
        "time/env_steps_per_s"]


def cli_sets(iterations: int = 2) -> list[str]:
    out = []
    for s in SMALL + [f"iterations={iterations}"]:
        out += ["--set", s]
    return out


def test_cli_train_writes_tags_checkpoints_and_evaluate_writes_json(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", NAV_CONFIG, *cli_sets(), "--run-dir", str(run), "--no-progress"]) == 0
    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in TAGS:
        assert tag in tags, tag
        assert len(acc.Scalars(tag)) == 2
    assert (run / "config.yaml").is_file()
    assert checkpoint.latest(run / "checkpoints").name == "iter_000002.pt"

    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "2", "--episodes", "2"]) == 0
    result = json.loads((run / "eval" / "adaptation.json").read_text())
    assert result["steps"] == [0, 1, 2]
    assert len(result["mean"]) == 3 and len(result["stderr"]) == 3
    assert np.asarray(result["per_task"]).shape == (3, 3)
    assert result["mean"][0] == pytest.approx(np.mean(result["per_task"][0]))
    out = capsys.readouterr().out
    assert "mean return" in out
    assert (run / "eval" / "adaptation.csv").read_text().startswith("step,")
    assert (run / "eval" / "adaptation.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["analyze", str(run), "--tasks", "2", "--episodes", "2", "--max-states", "50"]) == 0
    analysis = json.loads((run / "eval" / "analysis.json").read_text())
    assert analysis["similarity"]["layers"] == ["body.0", "head"]
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.jpg")]) == 2

    # resume extends the run
    assert main(["train", "--resume", str(run), "--iterations", "3", "--no-progress"]) == 0
    assert checkpoint.latest(run / "checkpoints").name == "iter_000003.pt"
    cfg, _, _, it = load_run(run)
    assert it == 3 and cfg.iterations == 3


@pytest.mark.parametrize("args,message", [
    (["train", NAV_CONFIG, "--set", "algo.inner_lrr=0.1"], "unknown key algo.inner_lrr (did you mean algo.inner_lr?)"),
    (["train", NAV_CONFIG, "--set", "algo.inner_lr=-1"], "algo.inner_lr: must be > 0, got -1.0"),
    (["train", NAV_CONFIG, "--set", "trpo.max_kl=0"], "trpo.max_kl: must be > 0, got 0.0"),
    (["train", NAV_CONFIG, "--set", "algo.meta_batch_size=0"], "algo.meta_batch_size: must be >= 1, got 0"),
    (["train", NAV_CONFIG, "--set", "policy.hidden_sizes=abc"], "policy.hidden_sizes: expected a list, got 'abc'"),
    (["train", NAV_CONFIG, "--set", "env.family=Navigation3D"], "env.family: unknown family 'Navigation3D'"),
    (["train", "does/not/exist.yaml"], "config file not found: does/not/exist.yaml"),
    (["train", NAV_CONFIG, "--seed", "-3"], "expected a non-negative integer, got '-3'"),
    (["evaluate", "no/such/run"], "is not a run directory"),
    (["train", "--resume", "no/such/run"], "is not a run directory"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    if args[:2] == ["train", NAV_CONFIG]:  # tiny sizes first: the override under test comes later and wins
        args = [*args[:2], *tiny_cli_sets(), *args[2:]]
    with time_limit(30):
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_malformed_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: {inner_lr: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_existing_run_dir_is_not_overwritten_without_force(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    assert main(["train", NAV_CONFIG, *cli_sets(1), "--run-dir", str(run), "--no-progress"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["keep.txt"]


def test_console_script_lists_tasks():
    out = subprocess.run([sys.executable, "-m", "metarl", "tasks"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    for name in ("Navigation2D", "HalfCheetahVel", "AntDir"):
        assert name in out


SWIMMER = str(ROOT / "experiments" / "families" / "swimmer_vel.py")


@pytest.mark.integration
def test_module_family_trains_with_worker_processes(tmp_path):
    """A family from a --module file reaches spawned workers (pickled by value)."""
    run = tmp_path / "run"
    sets = ["env.family=SwimmerVel", "env.kwargs={}", "iterations=1", "env.horizon=10", "algo.meta_batch_size=2",
            "algo.episodes_per_task=2", "sampler.backend=local", "sampler.workers=2"]
    cmd = [sys.executable, "-m", "metarl", "train", NAV_CONFIG, "--module", SWIMMER, "--run-dir", str(run),
           "--no-progress"] + [a for s in sets for a in ("--set", s)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert checkpoint.latest(run / "checkpoints").name == "iter_000001.pt"
    meta = checkpoint.load(checkpoint.latest(run / "checkpoints"))["meta"]
    assert main(["check-family", "SwimmerVel", "--module", SWIMMER]) == 0  # registers it here too
    swimmer = envs.make_family("SwimmerVel")
    assert meta["body.0.weight"].shape[1] == swimmer.obs_dim != envs.make_family("Navigation2D").obs_dim
    assert meta["log_std"].shape == (swimmer.act_dim,)
    # evaluated here: this process registered the family, its fresh workers get it by value again
    assert main(["evaluate", str(run), "--module", SWIMMER, "--tasks", "2", "--steps", "1", "--episodes", "2"]) == 0
    curve = json.loads((run / "eval" / "adaptation.json").read_text())
    assert curve["steps"] == [0, 1] and len(curve["tasks"]) == 2 and "velocity" in curve["tasks"][0]
    assert np.all(np.isfinite(curve["per_task"])) and np.shape(curve["per_task"]) == (2, 2)


def test_module_option_works_before_or_after_the_command(capsys):
    assert main(["check-family", "SwimmerVel", "--module", SWIMMER]) == 0
    assert main(["--module", SWIMMER, "tasks"]) == 0
    assert "SwimmerVel" in capsys.readouterr().out
    assert main(["tasks", "--module", "no/such/file.py"]) == 2


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_both_activations_train(tmp_path, activation):
    (tmp_path / "run").mkdir()
    trainer = Trainer(small_config(1, [f"policy.activation={activation}"]), tmp_path / "run")
    policy = trainer.learner.policy
    before = {k: v.detach().clone() for k, v in policy.params().items()}
    results = trainer.train()
    assert results[0].scalars["trpo/accepted"] == 1.0
    assert any(not torch.equal(v.detach(), before[k]) for k, v in policy.params().items())
    # the trained policy computes with the configured nonlinearity
    act = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}[activation]
    obs = np.random.default_rng(0).normal(size=(5, policy.obs_dim)).astype(np.float32)
    p = {k: v.detach().numpy() for k, v in policy.params().items()}
    want = act(obs @ p["body.0.weight"].T + p["body.0.bias"]) @ p["head.weight"].T + p["head.bias"]
    np.testing.assert_allclose(policy(torch.from_numpy(obs))[0].detach().numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_lists_every_key_with_a_comment(path):
    import dataclasses
    import typing

    from metarl.config import Config

    hints = typing.get_type_hints(Config)
    expected: list[tuple[str, ...]] = []
    for f in dataclasses.fields(Config):
        tp = hints[f.name]
        expected += [(f.name, g.name) for g in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else [(f.name,)]
    cfg = load_config(path)  # valid as shipped
    for section in cfg.selected_sections():  # the selected components' own sections too
        expected += [(section, g.name) for g in dataclasses.fields(cfg.sections[section])]
    lines = path.read_text().splitlines()
    for key in expected:
        prefix = "  " if len(key) == 2 else ""
        matches = [ln for ln in lines if ln.startswith(f"{prefix}{key[-1]}:")]
        assert matches, f"{path.name} lacks {'.'.join(key)}"
        assert all("#" in ln for ln in matches), f"{path.name}: {'.'.join(key)} has no comment"


@pytest.mark.integration
def test_halfcheetah_dir_config_trains_and_logs_returns(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    config = str(ROOT / "experiments" / "configs" / "halfcheetah_dir.yaml")
    sets = ["iterations=2", "algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=20",
            "sampler.workers=2"]
    args = ["train", config, "--run-dir", str(run), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = {tag: [e.value for e in acc.Scalars(tag)] for tag in
               ("returns/pre_adapt", "returns/post_adapt", "returns/post_minus_pre", "tasks/steps_per_episode")}
    assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in scalars.values())
    # the config's family and the overrides were used: 2 tasks (a constant: logged once, in the constants
    # text), 20 steps (HalfCheetah never terminates)
    (constants,) = acc.Tensors("constants/text_summary")
    assert "|tasks/count|2|" in constants.tensor_proto.string_val[0].decode()
    assert "tasks/count" not in acc.Tags()["scalars"] and scalars["tasks/steps_per_episode"] == [20.0, 20.0]
    np.testing.assert_allclose(scalars["returns/post_minus_pre"],
                               np.subtract(scalars["returns/post_adapt"], scalars["returns/pre_adapt"]), rtol=1e-5)
    cfg, family, learner, iteration = load_run(run)
    assert (cfg.env.family, family.obs_dim, iteration) == ("HalfCheetahDir", 20, 2)
    assert learner.policy.params()["body.0.weight"].shape[1] == 20


def test_navigation2d_action_scale_reads_actions_in_units_of_the_clip_range():
    family = envs.make_family("Navigation2D", action_scale=0.1)
    env = family.make_env({"goal": (0.3, -0.2)})
    assert env.action_space.high.tolist() == pytest.approx([1.0, 1.0])
    env.reset(seed=0)
    obs, r, *_ = env.step(np.array([0.5, -3.0]))  # 0.05, then -0.3 clipped to -0.1
    np.testing.assert_allclose(obs, [0.05, -0.1], atol=1e-7)
    assert r == pytest.approx(-np.hypot(0.05 - 0.3, -0.1 + 0.2))
    vec = family.make_vector([{"goal": (0.3, -0.2)}])
    vec.reset([0])
    obs_b, r_b, _ = vec.step(np.array([[0.5, -3.0]]))
    assert np.array_equal(obs_b[0], obs) and r_b[0] == r
    with pytest.raises(ValueError, match="action_scale"):
        envs.make_family("Navigation2D", action_scale=0.0)


@pytest.mark.parametrize("adapt", ["all", "head"])
def test_adaptation_scalars_are_the_log_std_mean_and_the_mean_inner_step_norm(adapt):
    from metarl.adaptation import vpg_loss
    from metarl.algos.maml_trpo import MAMLTRPO
    from metarl.trainer import adaptation_scalars
    from tests.helpers_core import random_batch, tiny_policy

    policy = tiny_policy()
    names = list(policy.params()) if adapt == "all" else policy.head_names()
    learner = MAMLTRPO(policy, names, inner_lr=0.37)
    batch = random_batch()
    adv = learner.advantages(batch)
    got = adaptation_scalars(policy.params(), learner.adapt(batch, adv))
    # independently: θ' - θ = -lr ∇ of each task's own VPG loss, taken by autograd task by task
    norms = []
    for i in range(batch.num_tasks):
        loss = vpg_loss(policy, policy.params(), batch.tasks(i, i + 1), adv[i:i + 1]).sum()
        grads = torch.autograd.grad(loss, [policy.params()[k] for k in names])
        norms.append(0.37 * float(torch.sqrt(sum((g * g).sum() for g in grads))))
    assert got["adapt/step_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-10)
    want = sum(float(x) for x in policy.log_std.detach()) / policy.act_dim
    assert got["policy/log_std_mean"] == pytest.approx(want, rel=1e-12)


def test_training_logs_the_adaptation_scalars(tmp_path):
    from metarl import scalars

    trainer = Trainer(small_config(2, ["policy.init_log_std=-0.7"]), tmp_path / "run")
    results = trainer.train()
    first = results[0].scalars
    assert first["policy/log_std_mean"] == pytest.approx(-0.7, abs=1e-7)  # the policy iteration 0 started from
    assert results[1].scalars["policy/log_std_mean"] != first["policy/log_std_mean"]  # the outer step moved it
    assert all(r.scalars["adapt/step_norm"] > 0 and np.isfinite(r.scalars["adapt/step_norm"]) for r in results)
    logged = scalars.read(tmp_path / "run", ["adapt/step_norm", "policy/log_std_mean"])
    np.testing.assert_allclose(logged["adapt/step_norm"][1], [r.scalars["adapt/step_norm"] for r in results])
