"""The evolution-strategies outer loop (``algo.name: es``): CMA-ES and OpenES.

Both searches are deterministic for a seed and continue exactly from their
checkpointed state; OpenES's gradient estimate is unbiased within its
standard error; the learner scores candidates by their post-adaptation
return through the sampler and moves only what it searches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.algos import ESLearner, Rollouts
from metarl.algos.es import CMASearch, ESSettings, OpenES, centered_ranks, openes_gradient
from metarl.config import ConfigError, load_config
from metarl.run import build_family, build_learner, build_sampler, mean_return

NAV = "experiments/configs/navigation2d.yaml"
NAV_ABS = str(Path(__file__).resolve().parents[1] / NAV)
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "policy.hidden_sizes=[4]",
        "sampler.backend=serial", "algo.name=es", "es.population=4"]
CENTER = np.array([0.5, -1.0, 2.0])


def quadratic(x: np.ndarray) -> float:
    return -float(np.sum((x - CENTER) ** 2))


def run_search(make, iterations: int, stop_at: int | None = None):
    """Candidates and means of ``iterations`` generations; with ``stop_at`` the search is rebuilt from its
    state after that many (a resumed run)."""
    search = make()
    seen = []
    for i in range(iterations):
        if stop_at is not None and i == stop_at:
            state = {k: v.clone() for k, v in search.state().items()}
            search = make()
            if isinstance(search, OpenES):
                search.mean = np.zeros(3)  # a resumed learner starts from its checkpointed vector: load sets it
            search.load(state)
        x = search.ask(i)
        mean = search.tell(x, np.array([quadratic(c) for c in x]))
        seen.append((x.copy(), np.array(mean).copy()))
    return seen


SEARCHES = {
    "cma": lambda: CMASearch(np.zeros(3), 0.3, 6, seed=4),
    "openes": lambda: OpenES(np.zeros(3), ESSettings(method="openes", population=6, sigma=0.2, lr=0.1), seed=4),
}


@pytest.mark.parametrize("name", sorted(SEARCHES))
def test_search_is_deterministic_and_resumes_exactly(name):
    a = run_search(SEARCHES[name], 8)
    b = run_search(SEARCHES[name], 8)
    c = run_search(SEARCHES[name], 8, stop_at=5)
    for (xa, ma), (xb, mb), (xc, mc) in zip(a, b, c):
        assert np.array_equal(xa, xb) and np.array_equal(ma, mb)
        assert np.array_equal(xa, xc) and np.array_equal(ma, mc)
    assert quadratic(a[-1][1]) > quadratic(np.zeros(3))  # it climbs


def test_openes_gradient_matches_the_true_gradient_within_its_standard_error():
    theta, sigma, pairs = np.array([1.0, 0.0, -2.0]), 0.1, 4000
    noise = np.random.default_rng(0).standard_normal((pairs, 3))
    fitness = np.array([quadratic(theta + sigma * e) for e in noise] + [quadratic(theta - sigma * e) for e in noise])
    grad, stderr = openes_gradient(noise, fitness, sigma)
    true = -2.0 * (theta - CENTER)
    assert np.all(np.abs(grad - true) <= 4 * stderr), (grad, true, stderr)
    assert np.all(stderr > 0) and np.all(stderr < 0.2 * np.abs(true).max())


def test_centered_ranks():
    assert np.allclose(centered_ranks(np.array([3.0, -1.0, 10.0])), [0.0, -0.5, 0.5])


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"^es.population: must be in \[2, 10000\], got 1$"):
        load_config(NAV, ["algo.name=es", "algo.inner_update=meta_sgd", "es.population=1"])
    with pytest.raises(ConfigError, match=r"^es.population: must be even with method openes"):
        load_config(NAV, ["algo.name=es", "algo.inner_update=meta_sgd", "es.method=openes", "es.population=5"])
    with pytest.raises(ConfigError, match=r"^es.params: searches the inner-update rule's meta-parameters, and "
                                          r"algo.inner_update: sgd has none"):
        load_config(NAV, ["algo.name=es", "algo.inner_update=sgd", "es.params=rule"])
    assert load_config(NAV, ["algo.name=es", "es.params=all", "es.method=openes"]).es.params == "all"


def one_step(sets: list[str], iteration: int = 0):
    cfg = load_config(NAV, TINY + sets)
    family = build_family(cfg)
    learner = build_learner(cfg, family)
    assert isinstance(learner, ESLearner)
    tasks = family.sample_tasks(2, np.random.default_rng(iteration))
    with build_sampler(cfg, family, learner.policy) as sampler:
        train = sampler.sample(tasks, learner.policy.params(), 2, 11)
        adv = learner.advantages(train)
        adapted = {k: v.detach() for k, v in learner.adapt(train, adv).items()}
        valid = sampler.sample(tasks, adapted, 2, 12)
        before = {k: v.detach().clone() for k, v in learner.meta_params().items()}
        result = learner.step(train, valid, adapted, adv,
                              rollouts=Rollouts(sampler.sample, tasks, 2, iteration, 99))
    return learner, before, result, mean_return(valid)


@pytest.mark.parametrize("method", ["cma", "openes"])
def test_rule_search_moves_only_the_rule_and_is_deterministic(method):
    sets = ["algo.inner_update=meta_sgd", f"es.method={method}"]
    a, before, result, _ = one_step(sets)
    b, _, result_b, _ = one_step(sets)
    assert not result.rejected and np.isfinite(result.scalars["es/fitness_mean"])
    assert result.scalars == result_b.scalars
    for k, v in a.meta_params().items():
        moved = not torch.equal(v.detach(), before[k])
        assert moved == k.startswith("inner_lr/"), k
        assert torch.equal(v.detach(), b.meta_params()[k].detach()), k


def test_all_search_moves_the_policy_and_its_state_round_trips():
    learner, before, result, _ = one_step(["es.params=all", "es.method=openes"])
    assert not torch.equal(learner.policy.params()["head.weight"].detach(), before["head.weight"])
    state = learner.extra_state()
    assert set(state) == {"mean", "adam_m", "adam_v", "adam_t"} and int(state["adam_t"]) == 1
    fresh, *_ = one_step(["es.params=all", "es.method=openes"], iteration=0)
    fresh.load_extra_state(state)
    assert np.array_equal(fresh.search.mean, learner.search.mean)


def test_cma_refuses_a_search_larger_than_it_handles():
    with pytest.raises(ValueError, match=r"es.method: cma searches at most 1000 numbers"):
        one_step(["es.params=all", "policy.hidden_sizes=[64, 64]"])


@pytest.mark.parametrize("method", ["cma", "openes"])
def test_a_run_resumes_exactly_through_the_trainer(tmp_path, method):
    from metarl.trainer import Trainer

    sets = TINY + ["algo.inner_update=meta_sgd", f"es.method={method}", "log.checkpoint_every=1"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir()
    resumed.mkdir()
    Trainer(load_config(NAV, sets + ["iterations=4"]), straight).train()
    Trainer(load_config(NAV, sets + ["iterations=2"]), resumed).train()
    trainer = Trainer(load_config(resumed / "config.yaml", ["iterations=4"]), resumed, resume=True)
    assert trainer.learner.extra_state().keys() == ({"x0", "history"} if method == "cma" else
                                                    {"mean", "adam_m", "adam_v", "adam_t"})
    trainer.train()
    from metarl.rundir import RunDir

    a, b = RunDir(straight).latest_state(), RunDir(resumed).latest_state()
    for k in a["meta"]:
        assert torch.equal(a["meta"][k], b["meta"][k]), k
    for k in a["extra"]:
        assert torch.equal(a["extra"][k], b["extra"][k]), k


@pytest.mark.integration
@pytest.mark.parametrize("sets, message", [
    (["es.population=1", "algo.inner_update=meta_sgd"], "es.population: must be in [2, 10000], got 1"),
    (["algo.inner_update=sgd", "es.params=rule"], "es.params: searches the inner-update rule's meta-parameters"),
])
def test_bad_es_input_exits_2_with_one_line_before_anything_is_written(tmp_path, sets, message):
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    args = [a for kv in ["algo.name=es", *sets] for a in ("--set", kv)]
    r = subprocess.run([sys.executable, "-m", "metarl", "train", NAV, "--run-dir", str(run_dir), *args],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not run_dir.exists()


@pytest.mark.integration
def test_cma_on_too_many_numbers_exits_2_before_anything_is_written(tmp_path):
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "metarl", "train", NAV, "--run-dir", str(run_dir), "--set",
                        "algo.name=es", "--set", "algo.inner_update=meta_sgd"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "es.method: cma searches at most 1000 numbers" in lines[0]
    assert not run_dir.exists()


def test_init_from_starts_a_new_run_and_is_not_read_again(tmp_path, monkeypatch):
    """``es.init_from`` (a relative path) sets a new run's policy from another run's checkpoint; evaluating or
    resuming the ES run later, from another directory or after that run is gone, does not read it again."""
    import shutil

    from helpers_limits import run_main, set_args, time_limit

    from metarl.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    base = TINY + ["log.checkpoint_every=1", "algo.inner_update=meta_sgd"]
    with time_limit(120):
        code, err = run_main(["train", NAV_ABS, "--run-dir", "source",
                              *set_args(base, "algo.name=maml_trpo", "iterations=1", "seed=3")])
        assert code == 0, err
        code, err = run_main(["train", NAV_ABS, "--run-dir", "es",
                              *set_args(base, "iterations=1", "es.init_from=source")])
        assert code == 0, err
    source = RunDir(tmp_path / "source").latest_state()["meta"]
    fresh = build_learner(load_config(NAV_ABS, base), build_family(load_config(NAV_ABS, base)))
    policy = [k for k in fresh.policy.params()]
    es_start = torch.load(tmp_path / "es" / "checkpoints" / "iter_000001.pt", weights_only=False)["meta"]
    for k in policy:  # es.params: rule leaves the policy where init_from put it
        assert torch.equal(es_start[k], source[k]), k
    assert not all(torch.equal(fresh.policy.params()[k].detach(), source[k]) for k in policy)

    shutil.rmtree(tmp_path / "source")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with time_limit(120):
        code, err = run_main(["evaluate", str(tmp_path / "es"), "--tasks", "2", "--steps", "1", "--episodes", "2"])
        assert code == 0, err
        code, err = run_main(["train", "--resume", str(tmp_path / "es"), "--iterations", "2"])
        assert code == 0, err
    assert RunDir(tmp_path / "es").done_iterations() == 2


def test_a_missing_init_from_stops_a_new_run_before_anything_is_written(tmp_path, monkeypatch):
    from helpers_limits import run_main, set_args

    monkeypatch.chdir(tmp_path)
    code, err = run_main(["train", NAV_ABS, "--run-dir", "es",
                          *set_args(TINY, "algo.inner_update=meta_sgd", "es.init_from=nowhere")])
    assert code == 2 and err.strip() == "metarl: error: es.init_from: no checkpoint at nowhere"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("searched", ["rule", "all"])
def test_the_candidates_roll_out_together_with_the_episodes_each_would_get_alone(searched, monkeypatch):
    """All candidates' rollouts go to the sampler in one call (per train and valid batch), the task list
    repeated per candidate, as many candidates per call as the sampler has workers: each candidate's fitness
    equals, to the bit, its post-adaptation return from calls of its own on the iteration's tasks and seeds
    (common random numbers), in any number of calls."""
    import metarl.algos.base as algos_base

    cfg = load_config(NAV, TINY + ["algo.inner_update=meta_sgd", f"es.params={searched}"])
    family = build_family(cfg)
    learner = build_learner(cfg, family)
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    rng = np.random.default_rng(5)
    x0 = learner.vector()
    metas = [learner.with_vector(x0 + 0.3 * rng.standard_normal(x0.shape)) for _ in range(3)]
    with build_sampler(cfg, family, learner.policy) as sampler:
        calls = []

        def counted(*a, **kw):
            calls.append(len(a[0]))
            return sampler.sample(*a, **kw)

        rollouts = Rollouts(counted, tasks, 2, 4, 99, steps_per_episode=8, workers=3)
        train = sampler.sample(tasks, learner.policy.params(), 2, 11)
        adv = learner.advantages(train)
        fitness = learner.fitnesses(metas, train, adv, rollouts)
        assert calls == ([9] if searched == "rule" else [9, 9])  # 3 candidates x 3 tasks in each call
        alone = []
        for meta in metas:
            policy, _ = learner._split(meta)
            batch, batch_adv = train, adv
            if searched == "all":
                batch = sampler.sample(tasks, policy, 2, rollouts.seed(0))
                batch_adv = learner.advantages(batch)
            adapted = {k: v.detach() for k, v in learner.adapt(batch, batch_adv, meta).items()}
            alone.append(float(sampler.sample(tasks, adapted, 2, rollouts.seed(1)).episode_returns().mean()))
        assert fitness.tolist() == alone
        assert len(set(alone)) == 3  # the candidates differ
        for workers, limit, per_call in ((2, 10**6, [6, 3]), (3, 2 * 3 * 8 * 2, [6, 3]), (1, 10**6, [3, 3, 3])):
            monkeypatch.setattr(algos_base, "MAX_STEPS_PER_CALL", limit)  # steps per call: 2 x 3 x 8 per candidate
            rollouts.workers = workers
            calls.clear()
            assert learner.fitnesses(metas, train, adv, rollouts).tolist() == alone
            assert calls == (per_call if searched == "rule" else per_call * 2)
