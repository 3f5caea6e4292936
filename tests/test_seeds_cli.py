"""metarl train --seeds: one stable run directory per seed; finished seeds are skipped, interrupted ones resumed."""

from __future__ import annotations

import torch

from metarl import checkpoint, cli

TINY = ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2", "--set", "env.horizon=5",
        "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial", "--set", "log.checkpoint_every=1",
        "--no-progress"]
CONFIG = "experiments/configs/navigation2d.yaml"


def _meta(run):
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))


def test_seeds_train_each_seed_then_skip_and_resume(tmp_path, capsys):
    root = tmp_path / "runs"
    assert cli.main(["train", CONFIG, "--seeds", "2", "--run-dir", str(root), "--set", "iterations=2", *TINY]) == 0
    s1, s2 = _meta(root / "seed1"), _meta(root / "seed2")
    assert s1["iteration"] == s2["iteration"] == 2
    assert not torch.equal(s1["meta"]["head.weight"], s2["meta"]["head.weight"]), "different seeds differ"
    # seed 2 interrupted after iteration 1: drop its last checkpoint
    (root / "seed2" / "checkpoints" / "latest").write_text("iter_000001.pt\n")
    capsys.readouterr()
    assert cli.main(["train", CONFIG, "--seeds", "1", "2", "--run-dir", str(root), "--set", "iterations=2",
                     *TINY]) == 0
    err = capsys.readouterr().err
    assert "seed 1: finished (2 iterations)" in err and "seed 2: resuming at iteration 1" in err
    again = _meta(root / "seed2")
    assert again["iteration"] == 2
    for k, v in s2["meta"].items():
        assert torch.equal(v, again["meta"][k]), k  # the resumed seed ends where the uninterrupted one did
    # a grown budget extends every seed
    assert cli.main(["train", CONFIG, "--seeds", "2", "--run-dir", str(root), "--set", "iterations=3", *TINY]) == 0
    assert _meta(root / "seed1")["iteration"] == _meta(root / "seed2")["iteration"] == 3


def test_seeds_bad_input(tmp_path, capsys):
    for args, match in ((["--seeds", "0"], "number of seeds"), (["--seeds", "1", "1"], "repeated"),
                        (["--seeds", "2", "--seed", "3"], "exclude")):
        assert cli.main(["train", CONFIG, *args, "--run-dir", str(tmp_path / "r"), *TINY]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0]
    assert not (tmp_path / "r").exists()
