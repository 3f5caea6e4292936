"""CAVIA (``policy.adapt: context``): context parameters on the policy's input, zero at every
task's start, the only parameters the inner loop adapts; the network is meta-learned.

The inner gradient against finite differences (float64), the network untouched by the inner
loop, the zero start in training, test-time adaptation and the workers, exact resumption, every
outer loop with every inner-update rule, the analysis, and a bad ``context_size``.
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume_state import K, N, assert_same_state, same_scalars, state_of

from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.algos import ALGOS
from metarl.algos.base import LR_PREFIX, PRECOND_PREFIX
from metarl.analysis.representation import analyze_run, format_report
from metarl.cli import main
from metarl.config import load_config
from metarl.episodes import EpisodeBatch
from metarl.evaluation import adaptation_curve
from metarl.inner_updates import INNER_UPDATES
from metarl.policies import GaussianMLPPolicy, stack_params
from metarl.run import build_family, build_learner, build_sampler
from metarl.rundir import load_run
from metarl.sampling import PolicySpec
from metarl.trainer import Trainer
from tests.helpers_core import random_batch

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
CAVIA_NAV = str(ROOT / "experiments" / "configs" / "cavia" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=10", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]
CONTEXT = ["policy.adapt=context", "policy.context_size=2", "algo.inner_lr=1.0"]


def cavia_policy(seed: int = 0, context_size: int = 2) -> GaussianMLPPolicy:
    """A float64 policy with a context and non-zero biases (every parameter matters)."""
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(3, 2, (5,), "tanh", init_log_std=-0.3, context_size=context_size).double()
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    return policy


def advantages(batch: EpisodeBatch) -> torch.Tensor:
    return torch.randn(batch.mask.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


# -- the policy and the inner loop ---------------------------------------------------------------

def test_the_context_is_a_zero_constant_on_the_input_and_absent_without_adapt_context():
    policy = cavia_policy()
    assert sorted(policy.params()) == ["body.0.bias", "body.0.weight", "context", "head.bias", "head.weight",
                                       "log_std"]
    assert policy.body[0].weight.shape == (5, 3 + 2)
    assert torch.equal(policy.context, torch.zeros(2, dtype=torch.float64)) and not policy.context.requires_grad
    assert adapt_names(policy, "context") == ["context"]
    # the context is the last two inputs of the first layer
    obs, ctx = torch.randn(4, 3, dtype=torch.float64), torch.tensor([0.3, -0.7], dtype=torch.float64)
    params = OrderedDict(policy.params(), context=ctx)
    w, b = policy.body[0].weight, policy.body[0].bias
    expected = policy.head_mean(torch.tanh(obs @ w[:, :3].T + (b + w[:, 3:] @ ctx)))
    torch.testing.assert_close(policy(obs, params)[0], expected)
    # without adapt: context the policy is exactly as before (existing checkpoints load unchanged)
    for mode in ("all", "head", "head_log_std"):
        cfg = load_config(NAV, TINY + [f"policy.adapt={mode}", "policy.context_size=7"])
        learner = build_learner(cfg, build_family(cfg))
        assert learner.policy.context_size == 0 and "context" not in learner.policy.params()
        assert learner.policy.body[0].weight.shape[1] == 2 and PolicySpec.of(learner.policy).context_size == 0
        assert list(learner.meta_params()) == list(GaussianMLPPolicy(2, 2, (8,)).params())
    with pytest.raises(ValueError, match="context_size > 0"):
        adapt_names(GaussianMLPPolicy(3, 2, (5,)), "context")


def test_inner_gradient_of_the_context_matches_finite_differences():
    policy = cavia_policy()
    batch = random_batch(n=3, obs_dim=3, act_dim=2)
    adv = advantages(batch)
    lr = 0.5
    meta = policy.params()
    adapted = adapt(policy, meta, batch, adv, lr, steps=1, first_order=True, names=["context"])
    grad = -adapted["context"] / lr  # the step started from zero
    assert grad.shape == (3, 2) and grad.abs().min() > 0

    def loss_at(context: torch.Tensor) -> torch.Tensor:  # per-task loss, context (N, k)
        return vpg_loss(policy, OrderedDict(meta, context=context), batch, adv)

    eps = 1e-6
    fd = torch.zeros(3, 2, dtype=torch.float64)
    with torch.no_grad():
        for j in range(2):
            e = torch.zeros(3, 2, dtype=torch.float64)
            e[:, j] = eps
            fd[:, j] = (loss_at(e) - loss_at(-e)) / (2 * eps)  # tasks are independent: one column per call
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


def test_meta_gradient_through_the_context_step_matches_finite_differences():
    """Second order: the post-adaptation loss as a function of the network (body, head, log-std)."""
    policy = cavia_policy(seed=3)
    train, valid = random_batch(n=2, obs_dim=3, act_dim=2, seed=1), random_batch(n=2, obs_dim=3, act_dim=2, seed=2)
    train_adv, valid_adv = advantages(train), advantages(valid) + 0.3
    names = [k for k in policy.params() if k != "context"]

    def outer(net: dict[str, torch.Tensor]) -> torch.Tensor:
        start = OrderedDict(net, context=torch.zeros(2, dtype=torch.float64))
        adapted = adapt(policy, start, train, train_adv, 0.7, steps=2, first_order=False, names=["context"])
        return vpg_loss(policy, adapted, valid, valid_adv).sum()

    net = OrderedDict((k, policy.params()[k].detach().clone().requires_grad_()) for k in names)
    grads = dict(zip(names, torch.autograd.grad(outer(net), list(net.values()))))
    eps = 1e-6
    for k, index in (("body.0.weight", (1, 3)), ("body.0.weight", (2, 0)), ("head.bias", (1,)), ("log_std", (0,))):
        plus = OrderedDict((n, v.detach().clone()) for n, v in net.items())
        minus = OrderedDict((n, v.detach().clone()) for n, v in net.items())
        plus[k][index] += eps
        minus[k][index] -= eps
        fd = (outer(plus) - outer(minus)) / (2 * eps)
        torch.testing.assert_close(grads[k][index], fd.detach(), rtol=1e-5, atol=1e-8)


# ES: test_es_searches_a_context_policys_rule; RL² (adapts = False) takes no inner step
GRADIENT_LOOPS = sorted(a for a in ALGOS if a != "es" and ALGOS[a].adapts)


@pytest.mark.parametrize("inner_update", INNER_UPDATES)
@pytest.mark.parametrize("algo", GRADIENT_LOOPS)
def test_only_the_context_adapts_from_zero_and_is_not_a_meta_parameter(algo, inner_update):
    cfg = load_config(NAV, TINY + CONTEXT + [f"algo.name={algo}", f"algo.inner_update={inner_update}"])
    learner = build_learner(cfg, build_family(cfg))
    policy = learner.policy
    assert learner.adapt_names == ["context"] and "context" not in learner.meta_params()
    learned = {"sgd": [], "meta_sgd": [LR_PREFIX + "context"], "kronecker": [PRECOND_PREFIX + "context/diag"]}
    rule_keys = [k for k in learner.meta_params() if "/" in k]
    if inner_update in learned:
        assert rule_keys == learned[inner_update]
    else:  # a rule whose tensors do not follow the adapted parameters (lstm, blur)
        assert rule_keys and all(k.startswith(learner.rule.prefix) for k in rule_keys)
    assert torch.equal(policy.context, torch.zeros(2)) and not policy.context.requires_grad
    b = random_batch(n=3, obs_dim=2, act_dim=2)
    batch = EpisodeBatch(b.obs.float(), b.actions.float(), b.rewards.float(), b.mask.float())
    adv = learner.advantages(batch)
    meta = learner.meta_params()
    for steps, adapted in ((0, learner.adapt(batch, adv, steps=0)), (1, learner.adapt(batch, adv)),
                           (1, learner.adapt(batch, adv, create_graph=True))):
        assert adapted["context"].shape == (3, 2)
        for k, v in meta.items():
            if not k.startswith(learner.rule.prefix or "/"):
                assert adapted[k] is v, k  # the network passes through untouched
        if steps == 0:
            assert torch.equal(adapted["context"], torch.zeros(3, 2))
    # one plain step from zero: minus the step size times the gradient at zero
    zero = OrderedDict((k, v) for k, v in meta.items() if not k.startswith(learner.rule.prefix or "/"))
    zero["context"] = torch.zeros(2)
    grad_step = -adapt(policy, zero, batch, adv, 1.0, first_order=True, names=["context"])["context"]
    torch.testing.assert_close(learner.adapt(batch, adv)["context"], -grad_step)
    # test-time adaptation from the meta-parameters (as evaluation passes them, the policy's context included)
    further = learner.adapt_further(OrderedDict(policy.params()), batch, adv)
    torch.testing.assert_close(further["context"], -grad_step)


# -- workers --------------------------------------------------------------------------------------

def test_workers_append_each_tasks_context_to_its_observations():
    cfg = load_config(NAV, TINY + CONTEXT)
    family = build_family(cfg)
    learner = build_learner(cfg, family)
    policy = learner.policy
    assert PolicySpec.of(policy).context_size == 2
    tasks = family.sample_tasks(3, np.random.default_rng(0))
    contexts = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 0.5]])
    params = stack_params(OrderedDict(policy.params()), policy.params(), 3, ["context"])
    params["context"] = contexts
    # the same policies without a context: the context folded into the first layer's bias
    plain = GaussianMLPPolicy(policy.obs_dim, policy.act_dim, policy.hidden_sizes, policy.activation)
    w = policy.body[0].weight.detach()
    folded = OrderedDict((k, v.detach()) for k, v in policy.params().items() if k != "context")
    folded["body.0.weight"] = w[:, :2]
    folded["body.0.bias"] = policy.body[0].bias.detach() + contexts @ w[:, 2:].T  # (3, hidden)
    with build_sampler(cfg, family, policy) as sampler, build_sampler(cfg, family, plain) as plain_sampler:
        got = sampler.sample(tasks, params, 3, seed=11)
        want = plain_sampler.sample(tasks, folded, 3, seed=11)
        at_zero = sampler.sample(tasks, policy.params(), 3, seed=11)
    torch.testing.assert_close(got.actions, want.actions, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.rewards, want.rewards, rtol=1e-4, atol=1e-4)
    # task 0's context is zero, as the meta-policy's; the others' contexts change their actions
    assert torch.equal(got.actions[0], at_zero.actions[0])
    assert not torch.allclose(got.actions[1:], at_zero.actions[1:])
    # the learner's forward on the sampled observations gives the sampled means (actions - noise)
    mean, _ = policy(got.flat_obs(), params)
    plain_mean, _ = plain(want.flat_obs(), folded)
    torch.testing.assert_close(mean, plain_mean, rtol=1e-4, atol=1e-4)


# -- training ---------------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize("inner_update", INNER_UPDATES)
@pytest.mark.parametrize("algo", GRADIENT_LOOPS)
def test_two_iterations_train_with_every_outer_loop_and_inner_update(tmp_path, algo, inner_update):
    cfg = load_config(NAV, TINY + CONTEXT + ["iterations=2", f"algo.name={algo}",
                                             f"algo.inner_update={inner_update}"])
    trainer = Trainer(cfg, tmp_path)
    before = {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()}
    results = trainer.train()
    assert len(results) == 2
    learner = trainer.learner
    after = learner.meta_params()
    assert any(not torch.equal(before[k], after[k]) for k in ("body.0.weight", "head.weight")), "no outer step"
    assert torch.equal(learner.policy.context, torch.zeros(2))  # never meta-learned
    for res in results:
        assert res.scalars["adapt/step_norm"] > 0  # the context moved in the inner loop
        assert np.isfinite(res.scalars["returns/post_adapt"])


@pytest.mark.integration
def test_gauss_newton_falls_back_to_the_double_backward_product(tmp_path):
    """The Gauss-Newton product assumes observations as the body's input: CAVIA takes the exact product."""
    runs = []
    for curvature in ("gauss_newton", "double_backward"):
        run = tmp_path / curvature
        run.mkdir()
        trainer = Trainer(load_config(NAV, TINY + CONTEXT + ["iterations=2", f"trpo.curvature={curvature}"]), run)
        runs.append((trainer.train(), trainer.learner.meta_params()))
    (res_a, meta_a), (res_b, meta_b) = runs
    for k in meta_a:
        assert torch.equal(meta_a[k], meta_b[k]), k
    assert [r.scalars["trpo/kl"] for r in res_a] == [r.scalars["trpo/kl"] for r in res_b]


@pytest.mark.integration
def test_resume_is_exact(tmp_path):
    sets = TINY + CONTEXT + ["algo.inner_update=meta_sgd"]
    straight = tmp_path / "straight"
    straight.mkdir()
    trainer = Trainer(load_config(None, sets + [f"iterations={N}"]), straight)
    states: list[dict] = []
    results = trainer.train(on_iteration=lambda _res: states.append(state_of(trainer)))
    assert trainer.learner.adapt_names == ["context"] and "context" not in states[-1]["meta"]

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    Trainer(load_config(None, sets + [f"iterations={K}"]), resumed_dir).train()
    resumed = Trainer(load_config(None, sets + [f"iterations={N}"]), resumed_dir, resume=True)
    assert resumed.start_iteration == K
    assert_same_state(state_of(resumed), states[K - 1])
    assert torch.equal(resumed.learner.policy.context, torch.zeros(2))
    tail = resumed.train()
    assert_same_state(state_of(resumed), states[-1])
    for a, b in zip(tail, results[K:]):
        assert same_scalars(a.scalars, b.scalars), a.iteration


@pytest.mark.integration
def test_analysis_and_freeze_ablation_on_a_context_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    Trainer(load_config(CAVIA_NAV, TINY + ["iterations=2", "policy.hidden_sizes=[8,8]",
                                           "env.kwargs.goal_tolerance=0.0"]), run).train()
    result = analyze_run(run, num_tasks=2, seed=3, episodes_per_task=3, out_dir=tmp_path / "out", plot=False)
    sim, abl = result["similarity"], result["freeze_ablation"]
    assert sim["adapted_params"] == ["context"] and sim["layers"] == ["body.0", "body.1", "head"]
    # the context changes the body's input, so already the first layer's activations change
    assert sim["relative_change"][0] > 0
    assert list(abl["variants"]) == ["context_only", "none"]
    assert abl["variants"]["context_only"]["params"] == ["context"]
    assert abl["variants"]["none"]["per_task"] == abl["step0"]["per_task"]
    assert abl["variants"]["context_only"]["per_task"] != abl["step0"]["per_task"]
    assert "context_only" in format_report(result)
    # evaluation (test-time adaptation, several steps) from the same zero context: step 0 is the ablation's
    cfg, family, learner, _ = load_run(run)
    assert torch.equal(learner.policy.context, torch.zeros(2))
    with build_sampler(cfg, family, learner.policy) as sampler:
        curve = adaptation_curve(learner, family, sampler, num_tasks=2, steps=2, episodes_per_task=3, seed=3)
    assert curve["per_task"][0] == abl["step0"]["per_task"]
    assert len(curve["mean"]) == 3 and np.isfinite(curve["mean"]).all()


# -- the config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "100000"])
def test_a_bad_context_size_exits_2_with_one_line(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", CAVIA_NAV, "--set", f"policy.context_size={value}"])
    lines = buf.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and "policy.context_size" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_the_cavia_configs_load():
    for name in ("navigation2d", "halfcheetah_vel"):
        cfg = load_config(str(ROOT / "experiments" / "configs" / "cavia" / f"{name}.yaml"), [])
        assert (cfg.policy.adapt, cfg.policy.context_size, cfg.algo.inner_lr) == ("context", 2, 1.0)
        assert (cfg.policy.hidden_sizes, cfg.policy.activation) == ([100, 100], "relu")


@pytest.mark.integration
def test_es_searches_a_context_policys_rule(tmp_path):
    cfg = load_config(NAV, TINY + CONTEXT + ["iterations=2", "algo.name=es", "algo.inner_update=meta_sgd",
                                             "es.population=4"])
    trainer = Trainer(cfg, tmp_path)
    results = trainer.train()
    assert len(results) == 2 and not any(k == "context" for k in trainer.learner.meta_params())
    assert torch.equal(trainer.learner.policy.context, torch.zeros(2))
    assert all(np.isfinite(r.scalars["es/fitness_mean"]) for r in results)
