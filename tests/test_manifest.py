"""manifest.json: every field at start and end, one session per (re)start, the version-mismatch warning."""

from __future__ import annotations

import json
import re
import socket
import sys

from metarl import cli, manifest
from metarl.config import load_config
from metarl.trainer import Trainer

TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]
FIELDS = {"versions", "git", "command", "hostname", "cpu_count", "start_time", "end_time", "status"}


def _train(run_dir, iterations, resume=False):
    cfg = load_config("experiments/configs/navigation2d.yaml", [*TINY, f"iterations={iterations}"])
    Trainer(cfg, run_dir, resume=resume).train()


def test_manifest_records_versions_code_machine_and_times(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _train(run, 1)
    data = json.loads((run / "manifest.json").read_text())
    assert FIELDS <= set(data) and len(data["sessions"]) == 1
    v = data["versions"]
    assert set(v) == {"python", "torch", "numpy", "mujoco", "gymnasium", "ray", "metaworld"}
    import mujoco
    import numpy
    import torch

    assert v["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert v["numpy"] == numpy.__version__ and v["mujoco"] == mujoco.__version__
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    assert data["git"] is None or (re.fullmatch(r"[0-9a-f]{40}", data["git"]["commit"])
                                   and isinstance(data["git"]["dirty"], bool))
    assert data["hostname"] == socket.gethostname() and data["cpu_count"] >= 1
    assert data["status"] == "finished" and data["end_time"] >= data["start_time"]
    assert isinstance(data["command"], list)


def test_resume_appends_a_session(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _train(run, 1)
    _train(run, 2, resume=True)
    data = manifest.read(run)
    assert [s["status"] for s in data["sessions"]] == ["finished", "finished"]


def test_evaluate_warns_in_one_line_when_versions_differ(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _train(run, 1)
    assert manifest.version_mismatch(run) is None
    data = manifest.read(run)
    data["versions"]["torch"] = "0.0.1"
    (run / "manifest.json").write_text(json.dumps(data))
    msg = manifest.version_mismatch(run)
    assert msg is not None and "torch 0.0.1 ->" in msg and "numpy" not in msg
    assert cli.main(["evaluate", str(run), "--tasks", "2", "--steps", "0", "--episodes", "1",
                     "--out", str(tmp_path / "e.json")]) == 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "torch 0.0.1" in warnings[0]


def test_hparams_are_written_in_the_run_directory_and_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    run.mkdir()
    _train(run, 2)
    assert not [p for p in run.iterdir() if p.is_dir() and p.name not in ("checkpoints", "eval")], "no sub-runs"
    acc = EventAccumulator(str(run))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: (v.string_value or v.number_value or v.bool_value) for k, v in start.hparams.items()}
    assert hp["env.family"] == "Navigation2D" and hp["algo.meta_batch_size"] == 2
    assert hp["policy.hidden_sizes"] == "[8]" and hp["iterations"] == 2
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == {"returns/pre_adapt", "returns/post_adapt",
                                                     "returns/post_minus_pre"}
    assert len(acc.Scalars("returns/post_adapt")) == 2  # the metrics' values live in the same run
