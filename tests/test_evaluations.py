"""Evaluations on a registry (``metarl evaluate --protocol NAME``, ``metarl analyze``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from metarl.evaluations import EVALUATIONS, CurveSettings, EvaluationError, settings_for
from metarl.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
NAV = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TOY = ROOT / "tests" / "algos" / "toy_eval.py"
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "policy.hidden_sizes=[4]",
        "sampler.backend=serial", "iterations=1"]


def test_the_builtins_are_registered_with_documented_settings():
    assert {"adaptation", "shots", "analysis", *PROTOCOLS} <= set(EVALUATIONS)
    for name, ev in EVALUATIONS.items():
        assert ev.name == name
        for f in dataclasses.fields(ev.Settings):
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, (name, f)


def test_settings_take_the_options_they_know_and_defaults_for_the_rest():
    s = settings_for("adaptation", {"tasks": 7, "steps": None, "shots": [1, 2], "max_states": 5})
    assert s == CurveSettings(tasks=7)
    assert settings_for("metaworld", {"tasks": None}).tasks is None  # every test task
    with pytest.raises(EvaluationError, match=r"^--protocol: unknown evaluation 'nope' \(one of adaptation, "):
        settings_for("nope", {})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ev") / "run"
    args = [a for kv in TINY for a in ("--set", kv)]
    r = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV), "--run-dir", str(run_dir),
                        "--no-progress", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return run_dir


@pytest.mark.integration
def test_a_module_evaluation_runs_by_name(trained):
    r = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(trained), "--module", str(TOY),
                        "--protocol", "toy", "--tasks", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads((trained / "eval" / "toy.json").read_text())
    assert result["tasks"] == 2 and result["iteration"] == 1
    assert r.stdout.startswith("return before adaptation")


@pytest.mark.integration
def test_an_unknown_evaluation_exits_2_with_one_line_and_writes_nothing(trained):
    before = sorted(p.name for p in (trained / "eval").glob("*")) if (trained / "eval").exists() else []
    r = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(trained), "--protocol", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown evaluation 'nope'" in r.stderr
    after = sorted(p.name for p in (trained / "eval").glob("*")) if (trained / "eval").exists() else []
    assert after == before
