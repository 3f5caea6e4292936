"""metarl evaluate --inner-lr and --shots."""

from __future__ import annotations

import json

import pytest

from metarl import cli
from metarl.config import load_config
from metarl.trainer import Trainer

TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=3", "env.horizon=8", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "iterations=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalopts") / "run"
    d.mkdir()
    Trainer(load_config("experiments/configs/navigation2d.yaml", TINY), d).train()
    return d


def _eval(run, out, *extra):
    assert cli.main(["evaluate", str(run), "--tasks", "3", "--steps", "2", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_inner_lr_overrides_the_trained_step_size(run, tmp_path):
    default = _eval(run, tmp_path / "a.json")
    same = _eval(run, tmp_path / "b.json", "--inner-lr", "0.1")  # the config's inner_lr
    other = _eval(run, tmp_path / "c.json", "--inner-lr", "0.37")
    assert default["mean"] == same["mean"] and same["inner_lr"] == 0.1 and default["inner_lr"] is None
    assert other["mean"][0] == default["mean"][0]  # step 0 does not adapt
    assert other["mean"][1] != default["mean"][1] and other["mean"][2] != default["mean"][2]


def test_shots_curve(run, tmp_path, capsys):
    curve = _eval(run, tmp_path / "a.json")
    out = tmp_path / "shots.json"
    assert cli.main(["evaluate", str(run), "--tasks", "3", "--shots", "3", "1", "2", "--out", str(out)]) == 0
    shots = json.loads(out.read_text())
    assert shots["shots"] == [1, 2, 3] and len(shots["mean"]) == 3 and len(shots["per_task"][0]) == 3
    assert shots["before"] == pytest.approx(curve["mean"][0])  # the same tasks and step-0 episodes
    assert len(set(shots["mean"])) == 3, "different amounts of adaptation data give different policies"
    assert (tmp_path / "shots.png").read_bytes()[:4] == b"\x89PNG"
    assert "shots" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [(["--inner-lr", "-1"], "finite number > 0"),
                                        (["--inner-lr", "nan"], "finite number > 0"),
                                        (["--shots", "0"], "positive"),
                                        (["--out", "{run}/config.yaml/x.json"], "cannot write")])
def test_bad_evaluate_options_exit_2(run, capsys, args, match):
    args = [a.replace("{run}", str(run)) for a in args]
    assert cli.main(["evaluate", str(run), "--tasks", "2", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.mark.parametrize("command", [["evaluate"], ["evaluate", "--shots", "2"], ["analyze", "--episodes", "2"]])
def test_a_command_loads_the_run_once(run, tmp_path, monkeypatch, command):
    from metarl.rundir import RunDir

    calls = []
    real = RunDir.state_at  # every load_run reads its checkpoint through this, however it was imported

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(RunDir, "state_at", counting)
    name, *extra = command
    out = ["--out", str(tmp_path / "x.json")] if name == "evaluate" else ["--out-dir", str(tmp_path)]
    assert cli.main([name, str(run), "--tasks", "2", *out, *extra]) == 0
    assert len(calls) == 1


@pytest.mark.parametrize("shots", [False, True])
def test_a_diverged_adaptation_is_named_in_one_warning_and_plots(run, tmp_path, capsys, monkeypatch, shots):
    """A task whose adapted parameters become non-finite: its return is NaN (so is the mean), the result
    counts it per point, one warning names where it began, and the PNG is still written."""
    import math

    from metarl import evaluation

    real = evaluation.adapt_step

    def poisoned(learner, params, batch, inner_lr):
        adapted = real(learner, params, batch, inner_lr)
        out = {k: v.clone() for k, v in adapted.items()}
        for v in out.values():  # task 1 diverges (per-task parameters: the task axis first)
            v[1] = math.inf
        return out

    monkeypatch.setattr(evaluation, "adapt_step", poisoned)
    out = tmp_path / "e.json"
    extra = ["--shots", "1", "2"] if shots else ["--steps", "2"]
    assert cli.main(["evaluate", str(run), "--tasks", "3", "--inner-lr", "0.2", "--out", str(out), *extra]) == 0
    result = json.loads(out.read_text())
    assert result["diverged"] == ([1, 1] if shots else [0, 1, 1])
    first = result["per_task"][-1]
    assert math.isnan(first[1]) and math.isfinite(first[0]) and math.isfinite(first[2])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "adaptation diverged" in line]
    where = "shots 1" if shots else "step 1"
    assert warnings == [f"metarl: warning: from {where}, adaptation diverged on 1 of 3 tasks (non-finite "
                        "parameters): their returns are NaN, and so is the mean; --inner-lr 0.2 is too large for "
                        "this policy"]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_finite_adaptation_warns_nothing(run, tmp_path, capsys):
    result = _eval(run, tmp_path / "a.json")
    assert result["diverged"] == [0, 0, 0]
    assert "adaptation diverged" not in capsys.readouterr().err
