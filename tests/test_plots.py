"""Adaptation-curve CSV/PNG/TensorBoard outputs and learning-curve plots from
the event files of real short Navigation2D runs.  Needs matplotlib (the
``plot`` extra): these tests fail, not skip, without it."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from metarl import plots
from metarl.analysis.representation import freeze_ablation, representation_similarity
from metarl.config import load_config
from metarl.evaluation import adaptation_curve
from metarl.run import build_sampler
from metarl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
SMALL = ["algo.meta_batch_size=4", "algo.episodes_per_task=4", "env.horizon=20", "policy.hidden_sizes=[8,8]",
         "sampler.backend=serial", "iterations=3", "log.checkpoint_every=3"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = path.read_bytes()
    assert data[:8] == plots.PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert len(data) > 1000 and data[-8:-4] == b"IEND"
    return width, height


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three 3-iteration runs: MAML seeds 1 and 2, ANIL seed 1; MAML seed 1 evaluated."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, extra in (("maml1", ["seed=1"]), ("maml2", ["seed=2"]), ("anil1", ["seed=1", "policy.adapt=head"])):
        cfg = load_config(NAV_CONFIG, SMALL + extra)
        run_dir = root / name
        run_dir.mkdir()
        trainer = Trainer(cfg, run_dir)
        results = trainer.train()
        out[name] = {"dir": run_dir, "cfg": cfg, "trainer": trainer, "scalars": [r.scalars for r in results]}
    t = out["maml1"]["trainer"]
    with build_sampler(out["maml1"]["cfg"], t.family, t.learner.policy) as sampler:
        curve = adaptation_curve(t.learner, t.family, sampler, num_tasks=3, steps=2, episodes_per_task=4, seed=0)
    curve.update(run_dir=str(out["maml1"]["dir"]), iteration=3)
    (out["maml1"]["dir"] / "eval").mkdir()
    (out["maml1"]["dir"] / "eval" / "adaptation.json").write_text(json.dumps(curve))
    out["curve"] = curve
    return out


# -- adaptation outputs -------------------------------------------------------------------------

@pytest.mark.integration
def test_write_adaptation_outputs_csv_matches_the_result_and_png_is_valid(runs):
    curve = runs["curve"]
    out_dir = runs["maml1"]["dir"] / "eval"
    paths = plots.write_adaptation_outputs(curve, out_dir, "adaptation")
    assert paths == {"csv": out_dir / "adaptation.csv", "png": out_dir / "adaptation.png"}
    with open(paths["csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "mean", "stderr", "task_0", "task_1", "task_2"]
    assert len(rows) == 1 + 3
    for k, row in enumerate(rows[1:]):
        assert int(row[0]) == curve["steps"][k]
        assert float(row[1]) == curve["mean"][k]
        assert float(row[2]) == curve["stderr"][k]
        assert [float(v) for v in row[3:]] == curve["per_task"][k]
        assert float(row[1]) == pytest.approx(np.mean([float(v) for v in row[3:]]), rel=1e-6)
    width, height = png_size(paths["png"])
    assert width > 300 and height > 200
    # rewriting replaces the files and leaves no temporary files behind
    plots.write_adaptation_outputs(curve, out_dir, "adaptation")
    assert sorted(p.name for p in out_dir.iterdir()) == ["adaptation.csv", "adaptation.json", "adaptation.png"]


def test_write_adaptation_outputs_rejects_inconsistent_results(tmp_path):
    bad = {"steps": [0, 1], "mean": [1.0], "stderr": [0.1, 0.2], "per_task": [[1.0], [2.0]]}
    with pytest.raises(ValueError, match="must match"):
        plots.write_adaptation_outputs(bad, tmp_path, "x")
    with pytest.raises(ValueError, match="lacks"):
        plots.write_adaptation_outputs({"steps": [0]}, tmp_path, "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_log_adaptation_curve_is_read_back_from_tensorboard(runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    curve = runs["curve"]
    plots.log_adaptation_curve(curve, run_dir)
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    # the curve is a text table at the checkpoint's iteration, not a series on an inner-step axis
    (event,) = acc.Tensors("eval/adaptation/text_summary")
    table = event.tensor_proto.string_val[0].decode()
    for k, m, s in zip(curve["steps"], curve["mean"], curve["stderr"], strict=True):
        assert f"|{k}|{m:.3f}|{s:.3f}|" in table
    assert not acc.Tags()["scalars"]
    with pytest.raises(ValueError, match="not a directory"):
        plots.log_adaptation_curve(curve, tmp_path / "missing")


# -- learning curves -------------------------------------------------------------------------------

@pytest.mark.integration
def test_read_scalars_returns_what_the_trainer_logged(runs):
    logged = plots.read_scalars(runs["maml1"]["dir"])
    for tag in plots.LEARNING_TAGS:
        steps, values = logged[tag]
        assert steps.tolist() == [0, 1, 2]
        np.testing.assert_allclose(values, [s[tag] for s in runs["maml1"]["scalars"]], rtol=1e-6)
    with pytest.raises(ValueError, match="no scalar 'nope/tag'"):
        plots.read_scalars(runs["maml1"]["dir"], ["nope/tag"])


@pytest.mark.integration
def test_group_runs_puts_seeds_of_one_config_together(runs):
    dirs = [runs["maml1"]["dir"], runs["anil1"]["dir"], runs["maml2"]["dir"]]
    groups = plots.group_runs(dirs)
    assert [g.run_dirs for g in groups] == [[dirs[0], dirs[2]], [dirs[1]]]
    assert [g.seeds for g in groups] == [[1, 2], [1]]
    assert [g.label for g in groups] == ["policy.adapt=all", "policy.adapt=head"]
    labelled = plots.group_runs(dirs, labels=["MAML", "ANIL", "MAML"])
    assert [(g.label, len(g.run_dirs)) for g in labelled] == [("MAML", 2), ("ANIL", 1)]
    split = plots.group_runs(dirs, labels=["a", "b", "c"])
    assert [len(g.run_dirs) for g in split] == [1, 1, 1]
    with pytest.raises(ValueError, match="2 labels for 3"):
        plots.group_runs(dirs, labels=["a", "b"])


def test_aggregate_curves_mean_and_std_over_seeds():
    a = (np.array([0, 1, 2]), np.array([1.0, 2.0, 3.0]))
    b = (np.array([0, 1]), np.array([3.0, 6.0]))
    steps, mean, std = plots.aggregate_curves([a, b])
    assert steps.tolist() == [0, 1, 2]
    np.testing.assert_allclose(mean, [2.0, 4.0, 3.0])
    np.testing.assert_allclose(std, [np.std([1, 3], ddof=1), np.std([2, 6], ddof=1), 0.0])


@pytest.mark.integration
def test_plot_runs_writes_a_png_with_an_adaptation_panel_when_evaluated(runs, tmp_path):
    two_seeds = [runs["maml1"]["dir"], runs["maml2"]["dir"]]
    out = plots.plot_runs(two_seeds + [runs["anil1"]["dir"]], tmp_path / "figs" / "runs.png")
    assert out == tmp_path / "figs" / "runs.png"
    wide = png_size(out)
    # without eval/adaptation.json there is one panel only
    narrow = png_size(plots.plot_runs([runs["maml2"]["dir"]], tmp_path / "one.png", labels=["seed 2"]))
    assert wide[0] > 1.5 * narrow[0] and wide[1] == narrow[1]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["runs.png"]


def test_plot_runs_rejects_directories_without_event_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(ValueError, match="no TensorBoard event files"):
        plots.plot_runs([empty], tmp_path / "out.png")
    with pytest.raises(ValueError, match="not a directory"):
        plots.plot_runs([tmp_path / "missing"], tmp_path / "out.png")
    with pytest.raises(ValueError, match="no run directories"):
        plots.plot_runs([], tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


# -- analysis figures -------------------------------------------------------------------------------

@pytest.mark.integration
def test_plot_similarity_and_ablation_from_real_results(runs, tmp_path):
    t = runs["anil1"]["trainer"]
    with build_sampler(runs["anil1"]["cfg"], t.family, t.learner.policy) as sampler:
        sim = representation_similarity(t.learner, t.family, sampler, num_tasks=2, episodes_per_task=3, seed=0)
        ablation = freeze_ablation(t.learner, t.family, sampler, num_tasks=2, episodes_per_task=3, seed=0)
    # ANIL adapts the head only: the body's representations are unchanged, the head's are not
    assert sim["adapted_params"] == ["head.weight", "head.bias"]
    body = [i for i, name in enumerate(sim["layers"]) if name.startswith("body")]
    assert body and len(body) == len(sim["layers"]) - 1
    for i in body:
        assert sim["cka"][i] == pytest.approx(1.0, abs=1e-6) and sim["relative_change"][i] == 0.0
    assert sim["relative_change"][-1] > 0
    # adapting nothing reproduces step 0 exactly (common random numbers)
    assert ablation["variants"]["none"]["per_task"] == ablation["step0"]["per_task"]
    assert ablation["variants"]["none"]["gain"] == 0.0
    assert ablation["variants"]["head_only"]["per_task"] != ablation["step0"]["per_task"]
    png_size(plots.plot_similarity(sim, tmp_path / "sim.png"))
    png_size(plots.plot_freeze_ablation(ablation, tmp_path / "ablation.png"))
    with pytest.raises(ValueError, match="lacks 'cka'"):
        plots.plot_similarity({"layers": ["head"]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
