"""``log.wandb``: the TensorBoard scalars mirrored to an offline W&B run, and a one-line error without wandb.

The offline run is read back from its ``.wandb`` file (a LevelDB-style log of
protobuf records: 32 KiB blocks, each record a 7-byte header of CRC, length
and type), so the test checks what W&B would upload, not that ``init`` was
called.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import struct
from pathlib import Path

import pytest

from metarl import cli
from metarl.config import ConfigError, load_config
from metarl.trainer import Trainer

NAV = "experiments/configs/navigation2d.yaml"
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


def wandb_records(path: Path):
    """The protobuf payloads of a ``.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk
        else:  # zero padding at the end of the file
            break


def mirrored(offline_run: Path) -> tuple[dict[int, dict[str, float]], dict[str, object], str]:
    """(history by global_step, config, run name) of an offline W&B run directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = offline_run.glob("run-*.wandb")
    history: dict[int, dict[str, float]] = {}
    config: dict[str, object] = {}
    name = ""
    for payload in wandb_records(log):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            step = int(row["global_step"])
            history.setdefault(step, {}).update({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind in ("config", "run"):
            for item in (rec.config if kind == "config" else rec.run.config).update:
                value = json.loads(item.value_json)
                config[item.key or "/".join(item.nested_key)] = value.get("value", value) if isinstance(
                    value, dict) else value
            name = rec.run.display_name if kind == "run" else name
    return history, config, name


needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed")


@needs_wandb
@pytest.mark.integration
@pytest.mark.parametrize("resume", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["one_run", "resume_is_a_second_run"])  # each W&B run takes ~10 s to open and close
def test_offline_mirror_holds_every_scalar(tmp_path, monkeypatch, resume):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    run = tmp_path / "Navigation2D__wb__1"
    run.mkdir()
    cfg = load_config(NAV, [*TINY, "iterations=2", "log.wandb=true", "log.wandb_project=metarl-test"])
    Trainer(cfg, run).train()
    if resume:
        cfg3 = load_config(NAV, [*TINY, "iterations=3", "log.wandb=true", "log.wandb_project=metarl-test"])
        Trainer(cfg3, run, resume=True).train()
    import psutil

    left = [p.name() for p in psutil.Process().children(recursive=True) if "wandb" in " ".join(p.cmdline())]
    assert not left, f"wandb processes outlive the run: {left}"

    with (run / "scalars.csv").open() as f:
        rows = {int(r["iteration"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == ([0, 1, 2] if resume else [0, 1])
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == (2 if resume else 1), runs  # one W&B run per invocation, grouped by the run directory
    mirrors = [mirrored(r) for r in runs]
    first = mirrors[0]
    assert sorted(first[0]) == [0, 1] and first[2] == run.name
    if resume:
        second = mirrors[1]
        assert sorted(second[0]) == [2] and second[2] == f"{run.name} (from iteration 2)"
    for history, _, _ in mirrors:
        for step, logged in history.items():
            for key in ("returns/pre_adapt", "returns/post_adapt", "time/iteration_s"):
                assert logged[key] == pytest.approx(float(rows[step][key]), rel=1e-6), (step, key)
    assert first[1]["algo.inner_lr"] == cfg.algo.inner_lr and first[1]["env.family"] == "Navigation2D"
    # TensorBoard is still the record: its event files stay in the run directory itself
    assert list(run.glob("events.out.tfevents.*"))


def test_missing_wandb_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    target = tmp_path / "run"
    for argv in (["train", NAV, "--set", "log.wandb=true", "--run-dir", str(target)],
                 ["train", NAV, "--seeds", "2", "--set", "log.wandb=true", "--run-dir", str(target)]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert cli.main(argv) == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and "log.wandb" in lines[0] and "pip install wandb" in lines[0], lines
        assert not target.exists()
    with pytest.raises(ConfigError, match="log.wandb"):
        Trainer(load_config(NAV, [*TINY, "log.wandb=true"]), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_resume_of_a_wandb_run_without_wandb_is_a_one_line_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    Trainer(load_config(NAV, [*TINY, "iterations=1"]), run).train()
    text = (run / "config.yaml").read_text().replace("wandb: false", "wandb: true")
    (run / "config.yaml").write_text(text)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    before = sorted(p.name for p in run.rglob("*"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["train", "--resume", str(run), "--iterations", "2"]) == 2
    assert "log.wandb" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert sorted(p.name for p in run.rglob("*")) == before


@pytest.mark.parametrize("item, key", [("log.wandb_mode=cloud", "log.wandb_mode"),
                                       ("log.wandb_project= ", "log.wandb_project"),
                                       ("log.wandb=maybe", "log.wandb")])
def test_bad_wandb_keys_name_the_key(item, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(NAV, [item])
