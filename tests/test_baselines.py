"""Baselines of the MAML paper's comparison: pretrained (no inner loop in training),
random initialisation, and the oracle (task parameters in the observation)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.oracle import OracleFamily, task_features
from metarl.cli import main
from metarl.config import load_config
from metarl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
SMALL = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=15", "policy.hidden_sizes=[8]",
         "sampler.backend=serial"]


def test_task_features_flatten_in_sorted_key_order():
    assert task_features({"goal": (0.1, -0.2)}).tolist() == pytest.approx([0.1, -0.2])
    assert task_features({"velocity": 1.5}).tolist() == [1.5]
    scales = {"scales": {"b": [1.0, 2.0], "a": np.array([[3.0]])}}
    assert task_features(scales).tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(TypeError, match="numeric"):
        task_features({"name": "left"})


@pytest.mark.parametrize("name", ["Navigation2D", "HalfCheetahVel", "AntGoal"])
def test_oracle_family_appends_task_to_single_and_batched_observations(name):
    plain = envs.make_family(name)
    oracle = OracleFamily.wrap(envs.make_family(name))
    tasks = oracle.sample_tasks(3, np.random.default_rng(0))
    k = task_features(tasks[0]).shape[0]
    assert oracle.obs_dim == plain.obs_dim + k
    env = oracle.make_env(tasks[1])
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs[-k:], task_features(tasks[1]))
    vec = oracle.make_vector(tasks)
    obs_b = vec.reset([4, 5, 6])
    assert obs_b.shape == (3, oracle.obs_dim)
    np.testing.assert_array_equal(obs_b[1], obs)
    a = np.zeros((3, vec.act_dim))
    obs_b, rewards, _ = vec.step(a)
    obs_s, r_s, *_ = env.step(a[1])
    np.testing.assert_array_equal(obs_b[1], obs_s)
    assert rewards[1] == r_s
    np.testing.assert_array_equal(obs_b[:, -k:], np.stack([task_features(t) for t in tasks]))


def test_oracle_env_through_gymnasium_make_is_unchanged():
    env = gymnasium.make("metarl/Navigation2D-v0", task={"goal": (0.1, 0.2)})
    assert env.observation_space.shape == (2,)


def test_pretrained_random_and_oracle_runs_train_and_evaluate(tmp_path, monkeypatch):
    import metarl.run

    batches: list = []

    def recording_sampler(*args):
        sampler = build_sampler(*args)
        sample = sampler.sample

        def record(tasks, params, b, seed):
            batches.append((list(tasks), sample(tasks, params, b, seed)))
            return batches[-1][1]

        sampler.sample = record
        return sampler

    build_sampler = metarl.run.build_sampler
    monkeypatch.setattr(metarl.run, "build_sampler", recording_sampler)
    runs = {}
    for name, extra in {"pretrained": ["algo.inner_steps=0", "iterations=2"],
                        "random": ["iterations=0"],
                        "oracle": ["algo.inner_steps=0", "env.oracle=true", "iterations=2"]}.items():
        cfg = load_config(NAV, SMALL + extra + [f"name={name}"])
        run = tmp_path / name
        run.mkdir()
        batches.clear()
        before = {k: v.detach().clone() for k, v in Trainer(cfg, run).learner.policy.params().items()}
        trainer = Trainer(cfg, run)
        results = trainer.train()
        assert len(batches) == len(results)  # one batch per iteration: no adaptation, no valid batch
        for res, (tasks, batch) in zip(results, batches):
            s = res.scalars
            # the mean episode return, summed by hand over the steps that happened
            rewards, mask = batch.rewards.numpy(), batch.mask.numpy()
            returns = [sum(float(rewards[i, t, e]) for t in range(rewards.shape[1]) if mask[i, t, e])
                       for i in range(rewards.shape[0]) for e in range(rewards.shape[2])]
            assert s["returns/pre_adapt"] == pytest.approx(np.mean(returns), rel=1e-6)
            assert s["returns/post_adapt"] == s["returns/pre_adapt"]
            assert s["trpo/accepted"] == 1.0
            if cfg.env.oracle:  # the policy saw each task's goal
                goals = np.array([t["goal"] for t in tasks], dtype=np.float32)
                seen = batch.mask.numpy().astype(bool)
                want = np.broadcast_to(goals[:, None, None, :], batch.obs[..., -2:].shape)
                np.testing.assert_array_equal(batch.obs[..., -2:].numpy()[seen], want[seen])
        moved = any(not torch.equal(v.detach(), before[k]) for k, v in trainer.learner.policy.params().items())
        assert moved == bool(results)  # the pretrained and oracle runs trained; random did not
        assert main(["evaluate", str(run), "--tasks", "3", "--steps", "1", "--episodes", "2"]) == 0
        runs[name] = json.loads((run / "eval" / "adaptation.json").read_text())
    # the same held-out tasks for every method evaluated with the same seed
    assert runs["pretrained"]["tasks"] == runs["random"]["tasks"] == runs["oracle"]["tasks"]
    assert all(len(r["mean"]) == 2 for r in runs.values())
