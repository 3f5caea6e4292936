"""Issue 36, items 3, 4, 6 and 7: ``metarl config`` and ``--print-config``, plain progress lines through a
pipe, the TensorBoard layout, descriptions, hparams and constants read back with tensorboard's own reader,
and ``metarl plot``'s default output path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from metarl import cli, plots, tblog
from metarl.config import from_dict, load_config, to_dict
from metarl.configdoc import dotted_keys, field_doc, key_value
from metarl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


# -- item 3: metarl config / train --print-config ----------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    [], ["algo.name=promp", "algo.inner_update=kronecker", "env.kwargs={}"],
    ["algo.name=es", "es.params=all", "sampler.workers=2", "policy.hidden_sizes=[8]"]])
def test_config_printout_round_trips_through_load_and_set(overrides, tmp_path, capsys):
    sets = [a for o in overrides for a in ("--set", o)]
    assert cli.main(["config", NAV, *sets]) == 0
    printed = capsys.readouterr().out
    loaded = load_config(NAV, overrides)
    # the effective config: the selected components' sections only (navigation2d.yaml also names
    # proximal, which maml_trpo does not use), as the run's config.yaml holds it
    expected = from_dict(to_dict(loaded))
    assert to_dict(expected) == to_dict(loaded)
    path = tmp_path / "printed.yaml"
    path.write_text(printed)
    assert load_config(path) == expected  # the printout is that config
    assert list(yaml.safe_load(printed)) == list(to_dict(expected))  # in the order a config is written
    # each key's docstring is its comment
    doc = field_doc(type(expected.algo), "inner_lr")[1]
    assert f"  # {doc.splitlines()[0]}" in printed.splitlines()

    assert cli.main(["config", NAV, *sets, "--keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [key_value(k, v) for k, v in dotted_keys(expected)]
    assert load_config(None, lines) == expected  # --set of every printed key=value reproduces it


def test_config_keys_of_the_selected_components_only(capsys):
    assert cli.main(["config", NAV, "--keys"]) == 0
    keys = [line.split("=", 1)[0] for line in capsys.readouterr().out.splitlines()]
    assert "trpo.max_kl" in keys and not any(k.startswith("proximal.") for k in keys)
    assert cli.main(["config", NAV, "--set", "algo.name=promp", "--keys"]) == 0
    keys = [line.split("=", 1)[0] for line in capsys.readouterr().out.splitlines()]
    assert "proximal.clip_eps" in keys and not any(k.startswith("trpo.") for k in keys)


def test_config_bad_override_is_one_line(capsys):
    assert cli.main(["config", NAV, "--set", "algo.gamma=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algo.gamma" in err[0]


def test_train_print_config_prints_the_same_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", NAV, "--set", "iterations=3", "--run-dir", str(run), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert cli.main(["config", NAV, "--set", "iterations=3"]) == 0
    assert printed == capsys.readouterr().out
    assert not run.exists() and list(tmp_path.iterdir()) == []
    assert cli.main(["train", NAV, "--seeds", "2", "--print-config"]) == 2


# -- item 4: progress lines through a pipe --------------------------------------------------------------------

@pytest.mark.integration
def test_train_prints_plain_lines_when_stdout_is_a_pipe(tmp_path):
    run = tmp_path / "run"
    sets = [a for o in [*TINY, "iterations=3"] for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "metarl", "train", NAV, *sets, "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("iteration ")]
    assert [line.split(":")[0] for line in lines] == ["iteration 1/3", "iteration 2/3", "iteration 3/3"]
    for line in lines:
        for part in ("pre-adapt return ", "post-adapt ", "gain ", " s/it", "ETA "):
            assert part in line, line
    assert lines[-1].endswith("ETA 0:00:00")
    assert "\r" not in proc.stdout + proc.stderr  # no progress bar in a log file
    csv_pre = [float(r.split(",")[1]) for r in (run / "scalars.csv").read_text().splitlines()[1:]]
    assert [f"pre-adapt return {x:.2f}," in line for x, line in zip(csv_pre, lines, strict=True)] == [True] * 3

    run2 = tmp_path / "run2"
    sets = [a for o in [*TINY, "iterations=3"] for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "metarl", "train", NAV, *sets, "--run-dir", str(run2),
                           "--no-progress", "--log-every", "2"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("iteration ")]
    assert lines == ["iteration 2/3", "iteration 3/3"]  # every 2nd, and the last


def test_progress_line_and_eta():
    s = {"returns/pre_adapt": -10.0, "returns/post_adapt": -7.5}
    line = cli.progress_line(9, 100, s, 2.0)
    assert line == ("iteration 10/100: pre-adapt return -10.00, post-adapt -7.50 (gain +2.50), 2.00 s/it, "
                    "ETA 0:03:00")


# -- item 6: TensorBoard ----------------------------------------------------------------------------------------

def _accumulator(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_layout_descriptions_hparams_and_constants(tmp_path):
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(NAV, [*TINY, "iterations=2"])
    Trainer(cfg, run).train()
    acc = _accumulator(run)

    # the custom-scalars layout: returns before and after on one chart, the gain, the time breakdown
    (config_tag,) = acc.PluginTagToContent("custom_scalars")
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(config_tag)[0].tensor_proto.string_val[0])
    charts = {(c.title, ch.title): list(ch.multiline.tag) for c in layout.category for ch in c.chart}
    assert layout.category[0].title == "headline"
    assert ["returns/pre_adapt", "returns/post_adapt"] in charts.values()
    assert ["returns/post_minus_pre"] in charts.values()
    assert any(c == "time" and "time/sampling_s" in tags for (c, _), tags in charts.items())

    # every scalar tag carries its description
    tags = acc.Tags()["scalars"]
    assert "returns/post_adapt" in tags
    for tag in tags:
        meta = acc.SummaryMetadata(tag)
        assert meta.summary_description == tblog.description(tag) != "", tag
    assert acc.SummaryMetadata("returns/pre_adapt").summary_description.startswith("mean return")

    # constants once, as text; scalars.csv keeps the column
    assert "sampler/workers" not in tags
    text = acc.Tensors("constants/text_summary")
    assert len(text) == 1 and "|sampler/workers|1|" in text[0].tensor_proto.string_val[0].decode()
    assert "sampler/workers" in (run / "scalars.csv").read_text().splitlines()[0].split(",")

    # hparams: the selected components' keys only, booleans and strings as such
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = start.hparams
    assert hp["algo.first_order"].WhichOneof("kind") == "bool_value" and hp["algo.first_order"].bool_value is False
    assert hp["algo.normalize_advantages"].bool_value is True
    assert hp["algo.name"].string_value == "maml_trpo" and hp["algo.gamma"].number_value == pytest.approx(0.99)
    assert hp["sampler.workers"].string_value == "null"
    assert any(k.startswith("trpo.") for k in hp) and not any(k.startswith("proximal.") for k in hp)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    types = {i.name: i.type for i in exp.hparam_infos}
    assert types["algo.first_order"] == api_pb2.DATA_TYPE_BOOL and types["algo.name"] == api_pb2.DATA_TYPE_STRING


def test_adaptation_curve_is_a_text_table_at_the_checkpoint_iteration(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    curve = {"steps": [0, 1, 2], "mean": [-10.0, -8.0, -7.25], "stderr": [0.5, 0.25, 0.125],
             "per_task": [[-10.0], [-8.0], [-7.25]], "iteration": 7, "num_tasks": 1}
    plots.log_adaptation_curve(curve, run)
    acc = _accumulator(run)
    (event,) = acc.Tensors("eval/adaptation/text_summary")
    assert event.step == 7
    table = event.tensor_proto.string_val[0].decode()
    assert "|2|-7.250|0.125|" in table and "1 held-out tasks" in table
    assert not acc.Tags()["scalars"]  # no series on an inner-step axis


def test_every_logged_tag_pattern_has_a_description():
    for group in tblog.TAGS.values():
        for tag, meaning in group:
            assert meaning and tblog.description(tag.replace("*", "x")) == meaning


# -- item 7: plots --------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_plot_writes_to_the_first_runs_eval_dir_by_default(tmp_path, capsys):
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        Trainer(load_config(NAV, [*TINY, "iterations=2", f"seed={seed}"]), run).train()
        runs.append(run)
    assert cli.main(["plot", *map(str, runs)]) == 0
    out = runs[0] / "eval" / "plot.png"
    assert out.is_file() and out.read_bytes().startswith(plots.PNG_SIGNATURE)
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert not (runs[1] / "eval" / "plot.png").exists()


def test_freeze_ablation_figure_draws_paired_gains_with_labelled_bars(tmp_path, monkeypatch):
    step0 = [-10.0, -20.0, -30.0, -40.0]
    result = {"step0": {"mean": -25.0, "stderr": 6.45, "per_task": step0},
              "variants": {"none": {"mean": -25.0, "stderr": 6.45, "per_task": step0, "gain": 0.0,
                                    "gain_stderr": 0.0},
                           "all": {"mean": -22.0, "stderr": 6.0, "per_task": [-8.0, -16.0, -28.0, -36.0],
                                   "gain": 3.0, "gain_stderr": 0.58}},
              "num_tasks": 4}
    drawn = {}
    real = plots.save_png

    def capture(fig, out):
        (ax,) = fig.axes
        drawn["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        drawn["points"] = ax.lines[1].get_ydata().tolist() if len(ax.lines) > 1 else []
        drawn["caption"] = [ax.get_title()]
        return real(fig, out)

    monkeypatch.setattr(plots, "save_png", capture)
    out = plots.plot_freeze_ablation(result, tmp_path / "freeze_ablation.png")
    assert out.read_bytes().startswith(plots.PNG_SIGNATURE)
    assert any("paired gain" in t and "95%" in t and "CI" in t for t in drawn["legend"])
    assert np.allclose(sorted(drawn["points"]), [0.0, 3.0])  # gains, not returns
    assert any("standard error" in t for t in drawn["caption"])
    json.dumps(result)  # the figure did not alter its input


def test_protocol_scalars_carry_descriptions(tmp_path):
    from metarl.protocols import write_protocol_outputs

    run = tmp_path / "run"
    run.mkdir()
    result = {"protocol": "metaworld", "success_rate": 0.5, "success_stderr": 0.1, "return_post": 12.0,
              "per_task": []}
    write_protocol_outputs(result, run / "eval" / "metaworld.json", run, iteration=4)
    acc = _accumulator(run)
    for tag in ("eval/metaworld_success", "eval/metaworld_success_stderr", "eval/metaworld_return_post"):
        (event,) = acc.Scalars(tag)
        assert event.step == 4
        assert acc.SummaryMetadata(tag).summary_description == tblog.description(tag) != ""
