"""Reliability: malformed configs, kill -9 and resume, non-finite values, write failures."""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from envs.navigation import Navigation2DEnv
from metarl import checkpoint
from metarl.cli import main
from metarl.config import Config, load_config, section_classes
from metarl.trainer import Trainer, TrainingError
from tests.helpers_limits import TINY_SETS, time_limit, tiny_cli_sets

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = ROOT / "experiments" / "configs" / "navigation2d.yaml"
SMALL = ["algo.meta_batch_size=4", "algo.episodes_per_task=4", "env.horizon=20", "policy.hidden_sizes=[8]",
         "sampler.backend=serial"]

# -- malformed configs (property-based) -------------------------------------------------

BASE = yaml.safe_load(NAV_CONFIG.read_text())
TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
NOT_A_NUMBER = st.one_of(TEXT, st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, st.integers(), max_size=1))
NOT_SCALAR = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, st.integers(), max_size=1))
# range checks: key path -> strategy of well-typed values that must be rejected
OUT_OF_RANGE = {
    ("iterations",): st.one_of(st.integers(max_value=-1), st.floats(0.1, 0.9)),
    ("seed",): st.integers(max_value=-1),
    ("name",): st.one_of(st.just(""), st.just("a/b")),
    ("env", "family"): TEXT.map(lambda s: "No" + s),
    ("env", "horizon"): st.integers(max_value=0),
    ("policy", "hidden_sizes"): st.one_of(st.just([]), st.lists(st.integers(max_value=0), min_size=1, max_size=3)),
    ("policy", "activation"): TEXT.filter(lambda s: s not in ("tanh", "relu")),
    ("policy", "adapt"): TEXT.filter(lambda s: s not in ("all", "head")),
    ("algo", "meta_batch_size"): st.integers(max_value=0),
    ("algo", "episodes_per_task"): st.integers(max_value=0),
    ("algo", "inner_lr"): st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    ("algo", "inner_steps"): st.integers(max_value=-1),
    ("algo", "gamma"): st.one_of(st.floats(1.01, 10), st.floats(-5, 0)),
    ("algo", "gae_lambda"): st.one_of(st.floats(1.01, 10), st.floats(-5, -0.01)),
    ("trpo", "max_kl"): st.floats(-1, 0),
    ("trpo", "cg_iters"): st.integers(max_value=0),
    ("trpo", "cg_damping"): st.floats(-5, -1e-6),
    ("trpo", "ls_backtrack"): st.one_of(st.floats(1.0, 3.0), st.floats(-1.0, 0.0)),
    ("trpo", "ls_max_steps"): st.integers(max_value=0),
    ("trpo", "cg_subsample"): st.one_of(st.floats(1.01, 2.0), st.floats(-1.0, 0.0)),
    ("trpo", "hvp_chunk_tasks"): st.integers(max_value=0),
    ("algo", "max_consecutive_rejections"): st.integers(max_value=0),
    ("sampler", "backend"): TEXT.filter(lambda s: s not in ("serial", "local", "ray")),
    ("sampler", "workers"): st.integers(max_value=0),
    ("log", "checkpoint_every"): st.integers(max_value=0),
}


def config_keys() -> dict[tuple[str, ...], object]:
    """Every config key path and its annotation, from the config dataclasses."""
    out: dict[tuple[str, ...], object] = {}

    def walk(cls: type, prefix: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], (*prefix, f.name))
            else:
                out[(*prefix, f.name)] = hints[f.name]

    walk(Config, ())
    for section in ("trpo", "proximal"):  # the built-in outer loops' own sections
        walk(section_classes()[section], (section,))
    return out


def wrong_type(tp: object) -> st.SearchStrategy:
    """Values of the wrong type for annotation ``tp`` (``X | None`` as ``X``; None is valid there)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return wrong_type(args[0])
    if tp is bool:
        return st.one_of(TEXT, st.integers(0, 5), NOT_SCALAR)
    if tp is int:
        return st.one_of(NOT_A_NUMBER, st.floats(0.1, 0.9).map(lambda x: x + 2), st.booleans())
    if tp is float:
        return st.one_of(NOT_A_NUMBER, st.just(float("nan")), st.just(float("inf")), st.booleans())
    if tp is str:
        return st.one_of(NOT_SCALAR, st.integers())
    if typing.get_origin(tp) is list:
        return st.one_of(TEXT, st.dictionaries(TEXT, st.integers(), max_size=1),
                         st.lists(TEXT, min_size=1, max_size=2))
    if typing.get_origin(tp) is dict:
        return st.one_of(TEXT, st.lists(st.integers(), min_size=1, max_size=2))
    raise AssertionError(f"no invalid values for annotation {tp}; add them to wrong_type")


KEYS = config_keys()
INVALID = {k: st.one_of(wrong_type(tp), OUT_OF_RANGE[k]) if k in OUT_OF_RANGE else wrong_type(tp)
           for k, tp in KEYS.items()}
SECTIONS = sorted({k[0] for k in KEYS if len(k) == 2})


def test_every_range_check_names_a_config_key():
    assert set(OUT_OF_RANGE) <= set(KEYS)
    assert {"gae_lambda", "cg_damping", "hvp_chunk_tasks", "ls_max_steps", "inner_steps",
            "max_consecutive_rejections", "init_log_std"} <= {k[-1] for k in INVALID}


@st.composite
def malformed_configs(draw) -> str:
    kind = draw(st.sampled_from(["value", "unknown_key", "yaml", "top_level"]))
    data = tiny_base()
    if kind == "value":
        path = draw(st.sampled_from(sorted(INVALID)))
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(INVALID[path])
    elif kind == "unknown_key":
        section = draw(st.sampled_from([None, *SECTIONS]))
        node = data if section is None else data[section]
        key = draw(TEXT.filter(lambda k: k not in node)) + "_x"
        node[key] = draw(st.integers())
    elif kind == "yaml":
        return yaml.safe_dump(data) + draw(st.sampled_from(["algo: [1, 2\n", "  - : :\n\t{{\n", "a: b: c\n"]))
    else:
        return yaml.safe_dump(draw(st.one_of(st.lists(st.integers(), min_size=1), TEXT.map(lambda s: s + " x"))))
    return yaml.safe_dump(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=malformed_configs())
def test_malformed_configs_exit_2_with_one_line_and_no_run_directory(text):
    assert_text_rejected(text)


def tiny_base() -> dict:
    data = yaml.safe_load(NAV_CONFIG.read_text())
    for item in TINY_SETS:  # should validation regress, the run it starts is tiny
        *path, key = item.split("=")[0].split(".")
        (data[path[0]] if path else data)[key] = yaml.safe_load(item.split("=", 1)[1])
    return data


def assert_rejected(data: dict) -> None:
    assert_text_rejected(yaml.safe_dump(data))


def assert_text_rejected(text: str) -> None:
    """``metarl train`` on a config holding ``text``: exit 2, one stderr line, no run directory."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bad.yaml"
        cfg.write_text(text)
        run_dir = Path(tmp) / "run"
        r, err = run_main(["train", str(cfg), "--run-dir", str(run_dir), "--no-progress"])
        assert r == 2, text
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("metarl: error: ") and "Traceback" not in err
        assert not run_dir.exists()


@pytest.mark.parametrize("key", sorted(KEYS), ids=".".join)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_config_key_rejects_wrong_types_and_out_of_range_values(key, data):
    strategies = [wrong_type(KEYS[key])] + ([OUT_OF_RANGE[key]] if key in OUT_OF_RANGE else [])
    for strategy in strategies:
        cfg = tiny_base()
        node = cfg
        for part in key[:-1]:
            node = node[part]
        node[key[-1]] = data.draw(strategy)
        assert_rejected(cfg)


def run_main(argv: list[str]) -> tuple[int, str]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), time_limit(30):
        code = main(argv)
    return code, buf.getvalue()


def test_valid_base_config_is_accepted():
    assert load_config(NAV_CONFIG).env.family == "Navigation2D"


# -- write failures (kill -9, signals and resume: tests/test_resume_signals.py) ------------------------

def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = load_config(NAV_CONFIG, SMALL + ["iterations=3", "log.checkpoint_every=1"])
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # second checkpoint: half-written, then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(TrainingError, match="No space left on device.*previous checkpoint is intact"):
        trainer.train()
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert checkpoint.latest(ckpt_dir).name == "iter_000001.pt"
    assert checkpoint.load(checkpoint.latest(ckpt_dir))["iteration"] == 1
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_run_directory_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, err = run_main(["train", str(NAV_CONFIG), *tiny_cli_sets(), "--run-dir", str(blocker / "run"),
                          "--no-progress"])
    assert code == 2 and "cannot write run directory" in err and len(err.strip().splitlines()) == 1


# -- non-finite values ---------------------------------------------------------------------

class NaNRewardNavigation(Navigation2DEnv):
    """Navigation2D whose reward is NaN when the goal's x exceeds a threshold (fault injection)."""

    batched = None  # use the default loop-over-envs path, so the fault reaches the sampler as is
    nan_above = 0.3

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        if self._goal[0] > self.nan_above:
            reward = float("nan")
        return obs, reward, term, trunc, info


class AlwaysNaNNavigation(NaNRewardNavigation):
    """Every reward is NaN."""

    nan_above = -1.0


envs.register_family("NaNRewardNavigation", NaNRewardNavigation, horizon=20)
envs.register_family("AlwaysNaNNavigation", AlwaysNaNNavigation, horizon=20)


def test_nan_rewards_reject_steps_and_the_run_continues(tmp_path):
    cfg = load_config(NAV_CONFIG, SMALL + ["env.family=NaNRewardNavigation", "iterations=6"])
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    before = {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()}
    results = trainer.train()
    rejected = [r for r in results if np.isnan(r.scalars["trpo/surrogate_before"])
                or r.scalars["trpo/rejected_steps"] > (results[r.iteration - 1].scalars["trpo/rejected_steps"]
                                                       if r.iteration else 0)]
    assert 0 < len(rejected) < len(results)
    assert results[-1].scalars["trpo/rejected_steps"] == len(rejected)
    after = trainer.learner.meta_params()
    assert any(not torch.equal(after[k].detach(), before[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())


def test_persistent_nan_stops_cleanly_with_the_last_good_checkpoint(tmp_path):
    cfg = load_config(NAV_CONFIG, SMALL + ["env.family=AlwaysNaNNavigation", "iterations=10",
                                           "trpo.max_consecutive_rejections=3"])
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    initial = {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()}
    with pytest.raises(TrainingError, match="3 consecutive updates rejected"):
        trainer.train()
    state = checkpoint.load(checkpoint.latest(tmp_path / "run" / "checkpoints"))
    assert state["iteration"] == 3 and state["rejected_steps"] == 3
    for k, v in initial.items():
        assert torch.equal(state["meta"][k], v)


def test_nan_loss_rejects_the_update_and_leaves_parameters_unchanged(tmp_path, monkeypatch):
    cfg = load_config(NAV_CONFIG, SMALL + ["iterations=2"])
    (tmp_path / "run").mkdir()
    trainer = Trainer(cfg, tmp_path / "run")
    learner = trainer.learner
    real = learner.objective
    calls = {"n": 0}

    def nan_once(meta, *args, create_graph=True):
        calls["n"] += 1
        loss, kl = real(meta, *args, create_graph=create_graph)
        return (loss * float("nan"), kl) if calls["n"] == 1 else (loss, kl)

    monkeypatch.setattr(learner, "objective", nan_once)
    before = {k: v.detach().clone() for k, v in learner.meta_params().items()}
    trainer.sampler = __import__("metarl.run", fromlist=["build_sampler"]).build_sampler(
        cfg, trainer.family, learner.policy)
    first = trainer.run_iteration(0)
    assert first.scalars["trpo/rejected_steps"] == 1 and first.scalars["trpo/accepted"] == 0
    for k, v in learner.meta_params().items():
        assert torch.equal(v.detach(), before[k])
    second = trainer.run_iteration(1)
    assert second.scalars["trpo/accepted"] == 1 and trainer.consecutive_rejections == 0


def test_nan_actions_never_reach_the_simulator():
    family = envs.make_family("HalfCheetahVel")
    env = family.make_vector(family.sample_tasks(2, np.random.default_rng(0)))
    env.reset([0, 1])
    bad = np.zeros((2, env.act_dim))
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        env.step(bad)


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    from metarl.fileio import atomic_write

    mask = os.umask(0)
    os.umask(mask)
    path = atomic_write(tmp_path / "a.txt", "x")
    assert path.read_text() == "x"
    assert (path.stat().st_mode & 0o777) == 0o666 & ~mask  # as open() would create it, not mkstemp's 0600


def test_checkpoint_names_round_trip_and_anything_else_is_not_one():
    for it in (0, 7, 500, 1_234_567):
        name = checkpoint.file_name(it)
        assert checkpoint.iteration_of(name) == it
        assert checkpoint.iteration_of(name[: -len(".pt")]) == it  # the stem names eval/iter_NNNNNN/ too
    for bad in ("iter_5.pt", "iter_00050.pt", "iter_000500.pth", "latest", "iter_-00001.pt", "x_iter_000500.pt"):
        assert checkpoint.iteration_of(bad) is None, bad


def test_latest_iteration_reads_the_pointer_alone(tmp_path):
    assert checkpoint.latest_iteration(tmp_path) == 0  # no pointer: nothing trained yet
    (tmp_path / "latest").write_text("iter_000730.pt\n")
    assert checkpoint.latest_iteration(tmp_path) == 730  # the file itself need not be here (reports, synthetic runs)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.latest(tmp_path)
    for bad in ("iter_730.pt", "../iter_000730.pt", "latest"):
        (tmp_path / "latest").write_text(bad)
        with pytest.raises(checkpoint.CheckpointError, match="must name a checkpoint file"):
            checkpoint.latest_iteration(tmp_path)


def test_kept_budgets_are_the_eval_iter_directories_by_iteration(tmp_path):
    from metarl.rundir import RunDir

    assert RunDir(tmp_path).kept_budgets() == {}  # no eval/ at all
    for name in ("iter_001000", "iter_000500", "iter_5", "latest"):
        (tmp_path / "eval" / name).mkdir(parents=True)
    (tmp_path / "eval" / "iter_000700").write_text("{}")  # a file, not a kept budget's directory
    got = RunDir(tmp_path).kept_budgets()
    assert list(got) == [500, 1000] and got[500] == tmp_path / "eval" / "iter_000500"
