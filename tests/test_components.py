"""Registered components own their settings: an outer loop, an inner-update rule, a sampler backend.

A component with a ``Settings`` dataclass owns a config section: ``--set
section.key=v`` reaches it, its ``validate`` checks it (exit 2, one line),
the run's ``config.yaml`` holds it, and a component loaded with ``--module``
is settable the same way. The module is recorded in the run, so later
commands (evaluate, resume) work without ``--module``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from metarl import config as config_module
from metarl.adaptation import adapt
from metarl.algos import ALGOS, MAMLTRPO
from metarl.config import ConfigError, load_config, to_yaml
from metarl.inner_updates import INNER_UPDATES, InnerUpdate, register_inner_update
from metarl.sampling import BACKENDS, register_backend
from tests.helpers_core import random_batch, tiny_policy

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TOY_RULE = ROOT / "tests" / "algos" / "toy_rule.py"
TOY_OUTER = ROOT / "tests" / "algos" / "toy_fomaml.py"
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


def metarl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metarl", *args], capture_output=True, text=True, cwd=cwd)


def sets(*items: str) -> list[str]:
    return [a for kv in items for a in ("--set", kv)]


# -- in-process: the contract -------------------------------------------------------

@dataclass
class _ScaleSettings:
    scale: float = 2.0
    """Step multiplier."""

    def validate(self, need) -> None:
        need(self.scale > 0, "scale", self.scale, "must be > 0")


class _ScaledSGD(InnerUpdate):
    Settings = _ScaleSettings
    section = "scaled"

    def step(self, learned):
        return self.settings.scale * self.inner_lr


@pytest.fixture
def scaled_rule():
    register_inner_update("scaled", _ScaledSGD)
    try:
        yield
    finally:
        del INNER_UPDATES["scaled"]


def test_a_rule_with_settings_is_configured_from_its_own_section(scaled_rule):
    cfg = load_config(NAV_CONFIG, ["algo.inner_update=scaled", "scaled.scale=0.5"])
    assert cfg.scaled.scale == 0.5
    written = yaml.safe_load(to_yaml(cfg))
    assert written["scaled"] == {"scale": 0.5} and "proximal" not in written  # selected sections only
    assert load_config(NAV_CONFIG, ["algo.inner_update=scaled"]).scaled.scale == 2.0  # its default
    policy = tiny_policy(seed=3)
    learner = ALGOS[cfg.algo.name].from_config(cfg, policy, list(policy.params()))
    assert isinstance(learner.rule, _ScaledSGD) and learner.rule.settings.scale == 0.5
    batch = random_batch(n=2, obs_dim=3, act_dim=2)
    adv = torch.randn(batch.rewards.shape)
    got = learner.adapt(batch, adv)
    want = adapt(policy, policy.params(), batch, adv, 0.5 * cfg.algo.inner_lr, 1, True, list(policy.params()))
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_a_rules_section_is_validated_by_the_rule(scaled_rule):
    with pytest.raises(ConfigError, match=r"^scaled.scale: must be > 0, got -1.0$"):
        load_config(NAV_CONFIG, ["algo.inner_update=scaled", "scaled.scale=-1"])
    with pytest.raises(ConfigError, match=r"^unknown key scaled.scal \(did you mean scaled.scale\?\)$"):
        load_config(NAV_CONFIG, ["algo.inner_update=scaled", "scaled.scal=1"])


def test_unknown_sections_name_the_nearest_one():
    with pytest.raises(ConfigError, match=r"^unknown key trop \(did you mean trpo\?\)$"):
        load_config(NAV_CONFIG, ["trop.max_kl=0.1"])


def test_the_outer_loops_section_is_written_only_when_selected():
    trpo = yaml.safe_load(to_yaml(load_config(NAV_CONFIG)))
    promp = yaml.safe_load(to_yaml(load_config(NAV_CONFIG, ["algo.name=promp", "proximal.lr=0.002"])))
    assert "trpo" in trpo and "proximal" not in trpo
    assert promp["proximal"]["lr"] == 0.002 and "trpo" not in promp
    assert load_config(NAV_CONFIG, ["proximal.lr=2e-4"]).proximal.lr == 2e-4  # settable, unselected


def test_two_components_sharing_a_section_need_one_settings_class(scaled_rule):
    @dataclass
    class Other:
        x: int = 1

    class Clash(InnerUpdate):
        Settings = Other
        section = "scaled"

    register_inner_update("clash", Clash)
    try:
        with pytest.raises(ConfigError, match="two components declare section 'scaled'"):
            config_module.component_sections()
    finally:
        del INNER_UPDATES["clash"]


def test_a_backend_with_settings_receives_its_section():
    from metarl.sampling import PolicySpec, SerialSampler, make_sampler

    @dataclass
    class EchoSettings:
        tag: str = "a"
        """A label."""

    seen = {}

    def echo(family, spec, settings=None, **_):
        seen["settings"] = settings
        return SerialSampler(family, spec)

    echo.Settings = EchoSettings
    register_backend("echo", echo)
    try:
        cfg = load_config(NAV_CONFIG, ["sampler.backend=echo", "echo.tag=b"] + TINY[:4])
        from metarl.run import build_family, build_learner, build_sampler

        family = build_family(cfg)
        learner = build_learner(cfg, family)
        with build_sampler(cfg, family, learner.policy):
            pass
        assert seen["settings"] == EchoSettings("b")
        # a backend without Settings gets none
        with make_sampler("serial", family, PolicySpec.of(learner.policy), settings=EchoSettings("c")) as plain:
            assert isinstance(plain, SerialSampler)
    finally:
        del BACKENDS["echo"]


def test_old_spellings_are_migrated_with_a_note(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("algo:\n  learn_inner_lr: true\ntrpo:\n  max_consecutive_rejections: 7\n")
    notes: list[str] = []
    cfg = load_config(old, notes=notes)
    assert cfg.algo.inner_update == "meta_sgd" and cfg.algo.learn_inner_lr is True
    assert cfg.algo.max_consecutive_rejections == 7
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert "learn_inner_lr" in notes[0] and "max_consecutive_rejections" in notes[1]
    assert "learn_inner_lr" not in to_yaml(cfg) and "max_consecutive_rejections: 7" in to_yaml(cfg)


def test_every_registered_rule_builds_and_adapts():
    policy = tiny_policy(seed=1)
    batch = random_batch(n=2, obs_dim=3, act_dim=2)
    adv = torch.randn(batch.rewards.shape)
    for name in INNER_UPDATES:
        learner = MAMLTRPO(policy, policy.head_names(), inner_update=name)
        adapted = learner.adapt(batch, adv)
        assert set(adapted) == set(policy.params()), name
        assert set(learner.state_dict()) == set(learner.meta_params()), name


# -- through the command line, with --module ------------------------------------------

@pytest.mark.integration
def test_a_module_rule_trains_evaluates_and_resumes_without_the_module(tmp_path):
    run_dir = tmp_path / "run"
    train = metarl("train", str(NAV_CONFIG), "--module", str(TOY_RULE), "--run-dir", str(run_dir), "--no-progress",
                   *sets(*TINY, "iterations=2", "algo.inner_update=toy", "toy.scale=0.5"), cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["algo"]["inner_update"] == "toy" and written["toy"] == {"scale": 0.5}
    ev = metarl("evaluate", str(run_dir), "--tasks", "2", "--steps", "1", "--episodes", "2", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert (run_dir / "eval" / "adaptation.json").is_file()
    resumed = metarl("train", "--resume", str(run_dir), "--iterations", "3", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "iter_000003.pt" in (run_dir / "checkpoints" / "latest").read_text()


@pytest.mark.integration
def test_a_module_outer_loop_with_its_own_setting_trains_evaluates_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    train = metarl("train", str(NAV_CONFIG), "--module", str(TOY_OUTER), "--run-dir", str(run_dir), "--no-progress",
                   *sets(*TINY, "iterations=2", "algo.name=toy_fomaml", "toy_fomaml.lr=0.05"), cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["toy_fomaml"] == {"lr": 0.05} and "trpo" not in written
    ev = metarl("evaluate", str(run_dir), "--tasks", "2", "--steps", "1", "--episodes", "2", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    resumed = metarl("train", "--resume", str(run_dir), "--iterations", "3", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.integration
def test_a_bad_module_setting_exits_2_with_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    bad = metarl("train", str(NAV_CONFIG), "--module", str(TOY_RULE), "--run-dir", str(run_dir), "--no-progress",
                 *sets(*TINY, "algo.inner_update=toy", "toy.scale=0"), cwd=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "toy.scale: must be > 0, got 0" in lines[0]
    assert not run_dir.exists()
