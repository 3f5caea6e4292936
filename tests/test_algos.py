"""The outer-loop slot: every registered meta-learner keeps the contract, and a
one-file outer loop passed with ``--module`` trains and evaluates through the CLI.

A new entry of ``metarl.algos.ALGOS`` is checked by the parametrized tests
here without further code (see README, "Adding an outer loop").
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl import run
from metarl.algos import ALGOS, MetaLearner, Rollouts, StepResult
from metarl.config import load_config
from metarl.episodes import EpisodeBatch
from metarl.rundir import RunDir
from metarl.sampling import SerialSampler
from metarl.sampling.worker import PolicySpec

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TOY = ROOT / "tests" / "algos" / "toy_fomaml.py"
TINY = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=10", "policy.hidden_sizes=[8]",
        "sampler.backend=serial"]


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """The toy outer loop of tests/algos/toy_fomaml.py in ALGOS while these tests run."""
    spec = importlib.util.spec_from_file_location("toy_fomaml_under_test", TOY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield
    ALGOS.pop("toy_fomaml", None)
    sys.modules.pop(spec.name, None)


def algo_names() -> list[str]:
    return sorted(set(ALGOS) | {"toy_fomaml"})


# what an outer loop needs besides TINY (ES searches a learned rule's meta-parameters)
EXTRA = {"es": ["algo.inner_update=meta_sgd", "es.population=4"], "rl2": ["policy.kind=gru"]}


def one_meta_batch(name: str, seed: int = 1):
    """A learner for ``algo.name=name`` and one meta-batch: train, advantages, adapted params, valid.

    An outer loop that rolls out candidates of its own (``needs_rollouts``) gets the sampler and the
    batch's tasks bound to its ``step`` (``rollouts=``)."""
    cfg = load_config(NAV_CONFIG, TINY + [f"algo.name={name}", f"seed={seed}"] + EXTRA.get(name, []))
    family = run.build_family(cfg)
    learner = run.build_learner(cfg, family)
    sampler = SerialSampler(family, PolicySpec.of(learner.policy))
    tasks = family.sample_tasks(3, run.stream_rng(seed, run.TASKS, 0))
    train = sampler.sample(tasks, learner.policy.params(), 3, 11)
    train_adv = learner.advantages(train)
    adapted = {k: v.detach() for k, v in learner.adapt(train, train_adv).items()}
    valid = sampler.sample(tasks, adapted, 3, 12)
    if learner.needs_rollouts:
        learner.step = functools.partial(learner.step, rollouts=Rollouts(sampler.sample, tasks, 3, 0, 13))
    return learner, train, train_adv, adapted, valid


def snapshot(learner: MetaLearner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.meta_params().items()}


@pytest.mark.parametrize("name", algo_names())
def test_step_updates_and_returns_namespaced_finite_scalars(name):
    learner, train, train_adv, adapted, valid = one_meta_batch(name)
    before = snapshot(learner)
    result = learner.step(train, valid, adapted, train_adv)
    assert isinstance(result, StepResult) and not result.rejected
    assert result.scalars and all("/" in k and isinstance(v, float) for k, v in result.scalars.items())
    assert all(math.isfinite(v) for v in result.scalars.values())
    assert set(learner.rejected_scalars()) == set(result.scalars)  # the same columns when a step is refused
    after = snapshot(learner)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", algo_names())
def test_non_finite_episodes_are_rejected_and_leave_meta_parameters_unchanged(name):
    learner, train, train_adv, adapted, valid = one_meta_batch(name)
    before = snapshot(learner)
    bad = EpisodeBatch(valid.obs, valid.actions, valid.rewards.clone(), valid.mask)
    bad.rewards[0, 0, 0] = float("nan")
    assert learner.step(train, bad, adapted, train_adv).rejected
    after = snapshot(learner)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", algo_names())
def test_step_is_deterministic_and_state_dict_round_trips(name):
    a, *batch_a = one_meta_batch(name)
    b, *batch_b = one_meta_batch(name)
    ra = a.step(batch_a[0], batch_a[3], batch_a[2], batch_a[1])
    rb = b.step(batch_b[0], batch_b[3], batch_b[2], batch_b[1])
    assert {k: v for k, v in ra.scalars.items() if not k.startswith("time/")} == \
        {k: v for k, v in rb.scalars.items() if not k.startswith("time/")}
    fresh, *_ = one_meta_batch(name, seed=2)
    fresh.load_state_dict(a.state_dict())
    assert all(torch.equal(v, snapshot(b)[k]) for k, v in snapshot(fresh).items())
    meta = list(a.meta_params())
    assert list(a.state_dict())[: len(meta)] == meta  # the meta-parameters first; an outer loop's own state after


def test_train_adv_defaults_to_the_learners_own_advantages():
    a, train, train_adv, adapted, valid = one_meta_batch("maml_trpo")
    b, *_ = one_meta_batch("maml_trpo")
    ra, rb = a.step(train, valid, adapted, train_adv), b.step(train, valid, adapted)
    assert ra.scalars["trpo/surrogate_after"] == rb.scalars["trpo/surrogate_after"]


def test_unknown_algo_name_is_a_config_error():
    from metarl.config import ConfigError

    with pytest.raises(ConfigError, match="algo.name"):
        load_config(NAV_CONFIG, ["algo.name=nope"])


@pytest.mark.integration
def test_one_file_outer_loop_trains_two_iterations_and_evaluates_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    sets = [a for kv in TINY + ["iterations=2", "algo.name=toy_fomaml"] for a in ("--set", kv)]
    train = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV_CONFIG), "--module", str(TOY),
                            "--run-dir", str(run_dir), "--no-progress", *sets],
                           capture_output=True, text=True, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    with open(run_dir / "scalars.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert {"toy/loss", "toy/grad_norm", "toy/rejected_steps", "returns/post_adapt"} <= set(rows[0])
    assert not any(k.startswith("trpo/") for k in rows[0])
    assert RunDir(run_dir).done_iterations() == 2
    ev = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(run_dir), "--module", str(TOY),
                         "--tasks", "2", "--steps", "1", "--episodes", "2"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert (run_dir / "eval" / "adaptation.json").is_file()
    # the run recorded its module: later commands need no --module (metarl.rundir)
    recorded = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(run_dir), "--tasks", "2", "--steps",
                               "1", "--episodes", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    (run_dir / "modules.json").unlink()  # a run directory from before modules were recorded
    without = subprocess.run([sys.executable, "-m", "metarl", "evaluate", str(run_dir)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert without.returncode == 2 and "algo.name" in without.stderr
