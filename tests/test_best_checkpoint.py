"""The best-iteration checkpoint (the MAML paper's evaluation protocol).

``checkpoints/best.pt`` holds the meta-parameters that iteration ``i`` started
from, for the ``i`` whose logged post-adaptation return is the highest so far;
it survives a resume (the best so far is not forgotten), and ``metarl evaluate
--iteration best`` evaluates it.
"""

from __future__ import annotations

import math

import torch

from metarl import checkpoint, scalars
from metarl.cli import main as cli
from metarl.config import load_config
from metarl.rundir import RunDir
from metarl.trainer import Trainer

SETS = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=15", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=2", "algo.inner_lr=0.3"]
N = 6


def best_of(run_dir) -> tuple[int, float]:
    it, post = scalars.read(run_dir, ["returns/post_adapt"])["returns/post_adapt"]
    k = int(post.argmax())
    return int(it[k]), float(post[k])


def test_best_checkpoint_is_the_highest_post_adaptation_iteration(tmp_path):
    starts: dict[int, dict[str, torch.Tensor]] = {}
    trainer = Trainer(load_config(None, SETS + [f"iterations={N}"]), tmp_path)
    # what every iteration started from: the state after the previous one (the initial one for iteration 0)
    starts[0] = trainer.learner.state_dict()
    trainer.train(on_iteration=lambda r: starts.__setitem__(r.iteration + 1, trainer.learner.state_dict()))
    it, post = best_of(tmp_path)
    state = RunDir(tmp_path).state_at("best")
    assert state["iteration"] == it
    assert math.isclose(state["best_return"], post, rel_tol=1e-6)
    for k, v in starts[it].items():
        assert torch.equal(state["meta"][k], v), k
    assert (tmp_path / "checkpoints" / checkpoint.BEST).is_file()
    assert checkpoint.latest(tmp_path / "checkpoints").name == checkpoint.file_name(N)  # latest is not moved


def test_best_checkpoint_survives_resume(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir()
    resumed.mkdir()
    Trainer(load_config(None, SETS + [f"iterations={N}"]), straight).train()
    Trainer(load_config(None, SETS + ["iterations=2"]), resumed).train()
    first = RunDir(resumed).state_at("best")
    Trainer(load_config(resumed / "config.yaml", [f"iterations={N}"]), resumed, resume=True).train()
    a, b = RunDir(straight).state_at("best"), RunDir(resumed).state_at("best")
    assert (a["iteration"], a["best_return"]) == (b["iteration"], b["best_return"])
    assert all(torch.equal(a["meta"][k], b["meta"][k]) for k in a["meta"])
    assert b["best_return"] >= first["best_return"]
    it, post = best_of(resumed)
    assert it == b["iteration"] and math.isclose(post, b["best_return"], rel_tol=1e-6)


def test_evaluate_best_writes_its_own_file(tmp_path, capsys):
    Trainer(load_config(None, SETS + ["iterations=3"]), tmp_path).train()
    assert cli(["evaluate", str(tmp_path), "--iteration", "best", "--tasks", "2", "--steps", "1"]) == 0
    import json

    result = json.loads((tmp_path / "eval" / "adaptation_best.json").read_text())
    assert result["checkpoint"] == "best" and result["iteration"] == RunDir(tmp_path).state_at("best")["iteration"]
    assert not (tmp_path / "eval" / "adaptation.json").exists()


def test_evaluate_best_without_one_exits_2(tmp_path, capsys):
    Trainer(load_config(None, SETS + ["iterations=1"]), tmp_path).train()
    (tmp_path / "checkpoints" / checkpoint.BEST).unlink()
    assert cli(["evaluate", str(tmp_path), "--iteration", "best", "--tasks", "2", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best.pt" in err[0]
    assert not (tmp_path / "eval").exists()
