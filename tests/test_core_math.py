"""Core maths: meta-gradients, HVP, CG, line search, GAE, baseline, policy, adaptation."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from metarl import baselines
from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.algos.maml_trpo import MAMLTRPO, TRPOSettings, flat_grad, kl_hvp
from metarl.algos.trpo import conjugate_gradient, line_search
from metarl.episodes import EpisodeBatch, discounted_returns, gae, normalize
from metarl.policies import GaussianMLPPolicy, flatten, stack_params, unflatten
from tests.helpers_core import random_batch, tiny_policy


def make_problem(adapt_mode: str = "all", first_order: bool = False, steps: int = 1, learn_lr: bool = False):
    policy = tiny_policy()
    names = adapt_names(policy, adapt_mode)
    learner = MAMLTRPO(policy, names, inner_lr=0.1, inner_steps=steps, first_order=first_order,
                       learn_inner_lr=learn_lr)
    if learn_lr:  # distinct step sizes per entry, still float64
        with torch.no_grad():
            for v in learner.lr_params.values():
                v.copy_(0.2 + 0.6 * torch.rand_like(v, dtype=torch.float64))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    g = torch.Generator().manual_seed(3)
    train_adv = torch.randn(train.rewards.shape, generator=g, dtype=torch.float64) * train.mask
    valid_adv = torch.randn(valid.rewards.shape, generator=g, dtype=torch.float64) * valid.mask
    old = learner.old_outputs(train, train_adv, valid)
    return learner, train, train_adv, valid, valid_adv, old


def objective_at(learner, flat, meta, args, which: int, create_graph: bool):
    cand = unflatten(flat, meta)
    return learner.objective(cand, *args, create_graph=create_graph)[which]


def finite_difference_grad(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = eps
        grad[i] = (fn(x + e) - fn(x - e)) / (2 * eps)
    return grad


def meta_gradient_and_fd(adapt_mode: str, first_order: bool, steps: int = 1, learn_lr: bool = False):
    learner, train, train_adv, valid, valid_adv, old = make_problem(adapt_mode, first_order, steps, learn_lr)
    args = (train, train_adv, valid, valid_adv, old)
    meta = learner.meta_params()
    loss, _ = learner.objective(meta, *args, create_graph=True)
    analytic = flat_grad(loss, list(meta.values()))
    x0 = flatten(meta).detach()
    with torch.no_grad():
        numeric = finite_difference_grad(lambda x: objective_at(learner, x, meta, args, 0, False), x0)
    return analytic, numeric


@pytest.mark.parametrize("adapt_mode,steps", [("all", 1), ("all", 2), ("head", 1), ("head", 2)])
def test_second_order_meta_gradient_matches_finite_differences(adapt_mode, steps):
    analytic, numeric = meta_gradient_and_fd(adapt_mode, first_order=False, steps=steps)
    assert analytic.abs().max() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("adapt_mode", ["all", "head"])
def test_first_order_meta_gradient_is_the_gradient_at_the_adapted_parameters(adapt_mode):
    """First order: finite differences of the outer loss at ``theta + (theta_i' - theta)``
    with the inner update held fixed at its value, and not the exact gradient."""
    learner, train, train_adv, valid, valid_adv, old = make_problem(adapt_mode, first_order=True)
    args = (train, train_adv, valid, valid_adv, old)
    meta = learner.meta_params()
    loss, _ = learner.objective(meta, *args, create_graph=True)
    first = flat_grad(loss, list(meta.values()))
    with torch.no_grad():
        adapted = learner.adapt(train, train_adv)
    shift = {k: adapted[k] - meta[k].detach() for k in learner.adapt_names}  # (N, ...), held fixed
    learner.inner_steps = 0  # the objective then evaluates the given per-task parameters as they are

    def outer_loss(x):
        p = unflatten(x, meta)
        return learner.objective({k: p[k] + shift[k] if k in shift else p[k] for k in p}, *args,
                                 create_graph=False)[0]

    with torch.no_grad():
        numeric = finite_difference_grad(outer_loss, flatten(meta).detach())
    assert first.abs().max() > 1e-3
    torch.testing.assert_close(first, numeric, rtol=1e-5, atol=1e-8)
    exact, _ = meta_gradient_and_fd(adapt_mode, first_order=False)
    assert (first - exact).norm() > 1e-3 * exact.norm()


def test_meta_sgd_gradient_matches_finite_differences_including_step_sizes():
    analytic, numeric = meta_gradient_and_fd("all", first_order=False, learn_lr=True)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    policy_numel = sum(p.numel() for p in tiny_policy().parameters())
    assert analytic[policy_numel:].abs().max() > 1e-4  # the step sizes get gradient


@pytest.mark.parametrize("adapt_mode", ["all", "head"])
def test_kl_hvp_matches_finite_differences_of_kl_gradient(adapt_mode):
    learner, train, train_adv, valid, valid_adv, old = make_problem(adapt_mode)
    args = (train, train_adv, valid, valid_adv, old)
    meta = learner.meta_params()
    tensors = list(meta.values())
    _, kl = learner.objective(meta, *args, create_graph=True)
    assert abs(kl.item()) < 1e-12  # at the old parameters
    hvp = kl_hvp(kl, tensors, damping=0.0)
    x0 = flatten(meta).detach()
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def grad_kl_at(x):
        leaves = [t.detach().clone().requires_grad_() for t in unflatten(x, meta).values()]
        cand = OrderedDict(zip(meta.keys(), leaves))
        _, kl_x = learner.objective(cand, *args, create_graph=True)
        return flat_grad(kl_x, leaves).detach()

    eps = 1e-5
    numeric = (grad_kl_at(x0 + eps * v) - grad_kl_at(x0 - eps * v)) / (2 * eps)
    analytic = hvp(v)
    assert analytic.norm() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    # damping adds exactly damping * v
    torch.testing.assert_close(kl_hvp(kl, tensors, damping=0.1)(v), analytic + 0.1 * v)


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(0.5, 4.0, 8, dtype=torch.float64)) @ q.T
    b = torch.randn(8, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=8)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-10)
    # fewer iterations than the dimension: not yet the solution
    x2 = conjugate_gradient(lambda v: a @ v, b, iters=2)
    assert (x2 - torch.linalg.solve(a, b)).norm() > 1e-4


def test_line_search_accepts_first_improving_step_within_kl():
    old = torch.zeros(3)
    step = torch.ones(3)
    # loss improves only for small steps; KL grows with step size
    result = line_search(lambda p: (float(p.sum() - 1.0) ** 2 - 1.0, float(p.norm() ** 2)), old, step,
                         old_loss=0.0, max_kl=0.5, backtrack=0.5, max_steps=10)
    assert result.accepted
    torch.testing.assert_close(result.params, old + 0.25 * step)  # 1, 0.5 exceed KL; 0.25 does not
    assert result.steps == 3


def test_line_search_restores_parameters_when_nothing_is_accepted():
    old = torch.tensor([1.0, 2.0])
    result = line_search(lambda p: (5.0, 0.0), old, torch.ones(2), old_loss=1.0, max_kl=0.1, max_steps=4)
    assert not result.accepted and result.steps == 4
    assert torch.equal(result.params, old)
    result = line_search(lambda p: (float("nan"), 0.0), old, torch.ones(2), old_loss=1.0, max_kl=0.1)
    assert not result.accepted and torch.equal(result.params, old)


def test_maml_step_leaves_parameters_untouched_when_line_search_fails(monkeypatch):
    learner, train, train_adv, valid, _, _ = make_problem("all")
    before = {k: v.detach().clone() for k, v in learner.meta_params().items()}
    real = learner.objective

    def worse(meta, *args, create_graph=True):
        loss, kl = real(meta, *args, create_graph=create_graph)
        return (loss + 1e6, kl) if not create_graph else (loss, kl)

    monkeypatch.setattr(learner, "objective", worse)
    stats = learner.update(train, train_adv, valid)
    assert stats["accepted"] == 0.0
    for k, v in learner.meta_params().items():
        assert torch.equal(v.detach(), before[k]), k


def test_maml_step_improves_surrogate_within_trust_region():
    learner, train, train_adv, valid, _, _ = make_problem("all")
    learner.trpo = TRPOSettings(max_kl=0.01)
    before = flatten(learner.meta_params()).detach().clone()
    stats = learner.update(train, train_adv, valid)
    assert stats["accepted"] == 1.0
    assert stats["surrogate_after"] < stats["surrogate_before"]
    assert 0 < stats["kl"] <= 0.01
    assert not torch.equal(flatten(learner.meta_params()).detach(), before)


# -- returns, GAE, baseline ---------------------------------------------------------

def test_discounted_returns_and_gae_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(1, 3, 1)
    m = torch.ones_like(r)
    g = 0.5
    torch.testing.assert_close(discounted_returns(r, m, g).view(-1),
                               torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], dtype=torch.float64))
    v = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64).view(1, 3, 1)
    lam = 0.8
    d0 = 1 + g * 1.0 - 0.5
    d1 = 2 + g * 1.5 - 1.0
    d2 = 3 + 0.0 - 1.5
    expected = torch.tensor([d0 + g * lam * d1 + (g * lam) ** 2 * d2, d1 + g * lam * d2, d2], dtype=torch.float64)
    torch.testing.assert_close(gae(r, v, m, g, lam).view(-1), expected)
    # lambda = 1 with zero values: advantages are the discounted returns
    torch.testing.assert_close(gae(r, torch.zeros_like(v), m, g, 1.0), discounted_returns(r, m, g))


def test_gae_stops_at_termination():
    r = torch.tensor([1.0, 2.0, 99.0, 99.0], dtype=torch.float64).view(1, 4, 1)
    m = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 4, 1)
    v = torch.tensor([0.5, 1.0, 7.0, 7.0], dtype=torch.float64).view(1, 4, 1)
    adv = gae(r, v, m, 0.9, 0.95).view(-1)
    d1 = 2 - 1.0  # value after termination counts as 0
    d0 = 1 + 0.9 * 1.0 - 0.5
    torch.testing.assert_close(adv, torch.tensor([d0 + 0.9 * 0.95 * d1, d1, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(discounted_returns(r, m, 0.9).view(-1),
                               torch.tensor([1 + 0.9 * 2, 2, 0, 0], dtype=torch.float64))


def test_normalize_uses_only_masked_steps():
    x = torch.tensor([1.0, 3.0, 100.0], dtype=torch.float64).view(1, 3, 1)
    m = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64).view(1, 3, 1)
    torch.testing.assert_close(normalize(x, m).view(-1), torch.tensor([-1.0, 1.0, 0.0], dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_linear_baseline_recovers_a_linear_target():
    n, t, b, d, gamma = 2, 30, 5, 3, 0.9
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, t, b, d, generator=g, dtype=torch.float64)
    mask = torch.ones(n, t, b, dtype=torch.float64)
    mask[0, 20:, 2] = 0  # an early termination
    w = torch.randn(n, 2 * d + 4, 1, generator=g, dtype=torch.float64)
    u = (torch.arange(t, dtype=torch.float64) / 100.0).view(1, t, 1, 1).expand(n, t, b, 1)
    feats = torch.cat([obs, obs**2, u, u**2, u**3, torch.ones_like(u)], dim=-1)  # written out, not the library's
    target = (feats @ w.unsqueeze(1)).squeeze(-1) * mask  # desired returns-to-go
    # rewards whose discounted returns-to-go equal the target exactly
    nxt = torch.cat([target[:, 1:], torch.zeros_like(target[:, :1])], dim=1) * torch.cat(
        [mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    rewards = (target - gamma * nxt) * mask
    batch = EpisodeBatch(obs, torch.zeros(n, t, b, 1, dtype=torch.float64), rewards, mask)
    torch.testing.assert_close(discounted_returns(rewards, mask, gamma), target * mask)
    values = baselines.fit_predict(batch, gamma, reg=1e-10)
    torch.testing.assert_close(values, target * mask, rtol=1e-6, atol=1e-6)


# -- policy and adaptation ------------------------------------------------------------

def test_functional_forward_matches_module_and_stacks_per_task():
    policy = tiny_policy()
    obs = torch.randn(4, 7, 3, dtype=torch.float64)
    mean, log_std = policy(obs)
    h = obs
    for layer in policy.body:
        h = torch.tanh(layer(h))
    torch.testing.assert_close(mean, policy.head(h))
    # the log-std is the one of the parameters evaluated, not the module's
    other = {k: v.detach() for k, v in policy.params().items()}
    other["log_std"] = torch.tensor([0.25, -1.5], dtype=torch.float64)
    torch.testing.assert_close(policy(obs, other)[1], torch.tensor([0.25, -1.5], dtype=torch.float64))
    # per-task parameters: task i's slice equals evaluating task i alone
    params = {k: v.detach() + 0.1 * torch.randn(4, *v.shape, dtype=torch.float64)
              for k, v in policy.params().items()}
    stacked_mean, stacked_log_std = policy(obs, params)
    for i in range(4):
        mi, li = policy(obs[i], {k: v[i] for k, v in params.items()})
        torch.testing.assert_close(stacked_mean[i], mi)
        torch.testing.assert_close(stacked_log_std[i, 0], li)
        torch.testing.assert_close(stacked_log_std[i, 0], params["log_std"][i])
    full = stack_params(policy.params(), policy.params(), 4)
    assert all(v.shape[0] == 4 for v in full.values())


def test_adapt_leaves_meta_parameters_untouched_and_lowers_the_inner_loss():
    policy = tiny_policy()
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = {k: v.detach().clone() for k, v in policy.params().items()}
    adapted = adapt(policy, policy.params(), batch, adv, lr=0.05, steps=1)
    for k, v in policy.params().items():
        assert torch.equal(v.detach(), before[k])
    loss_before = vpg_loss(policy, policy.params(), batch, adv)
    loss_after = vpg_loss(policy, adapted, batch, adv)
    assert torch.all(loss_after < loss_before)
    assert adapted["body.0.weight"].shape == (batch.num_tasks, *policy.body[0].weight.shape)


def test_anil_adapts_only_the_head_and_the_body_still_gets_meta_gradient():
    policy = tiny_policy()
    batch, valid = random_batch(seed=1), random_batch(seed=2)
    adv = torch.randn(batch.rewards.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = policy.params()
    adapted = adapt(policy, params, batch, adv, lr=0.5, steps=2, names=policy.head_names())
    for k in params:
        if k.startswith("body.") or k == "log_std":
            assert adapted[k] is params[k]  # passed through untouched, not copied
        else:
            assert adapted[k].shape[0] == batch.num_tasks
            assert not torch.equal(adapted[k][0], params[k].detach())
    outer = vpg_loss(policy, adapted, valid, adv).sum()
    grads = torch.autograd.grad(outer, [params["body.0.weight"], params["body.0.bias"]])
    assert all(g.abs().max() > 0 for g in grads)


def test_anil_names_give_head_only_adaptation():
    policy = tiny_policy()
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    wrapped = adapt(policy, policy.params(), batch, adv, lr=0.3, steps=2, names=adapt_names(policy, "head"))
    direct = adapt(policy, policy.params(), batch, adv, lr=0.3, steps=2, names=["head.weight", "head.bias"])
    assert adapt_names(policy, "head") == ["head.weight", "head.bias"]
    for k in direct:
        assert torch.equal(wrapped[k], direct[k])


def test_adapting_constants_works_without_autograd_inputs():
    policy = tiny_policy()
    batch = random_batch()
    adv = torch.ones(batch.rewards.shape, dtype=torch.float64)
    params = {k: v.detach() for k, v in policy.params().items()}
    with torch.no_grad():
        adapted = adapt(policy, params, batch, adv, lr=0.1, steps=1)
    assert not torch.equal(adapted["head.weight"][0], params["head.weight"])


def test_policy_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        GaussianMLPPolicy(2, 2, (4,), "sigmoid")


# -- outer-loop options: exact CG, curvature subsample, Meta-SGD ------------------------

def kl_hessian(learner, meta, args):
    x0 = flatten(meta).detach()
    return torch.autograd.functional.hessian(lambda x: objective_at(learner, x, meta, args, 1, True), x0)


def test_trpo_step_equals_exact_natural_gradient_step():
    learner, train, train_adv, valid, _, _ = make_problem("all")
    learner.trpo = TRPOSettings(max_kl=1e-3, cg_iters=200, cg_damping=1e-3, cg_subsample=1.0)
    valid_adv = learner.advantages(valid).detach()
    old = learner.old_outputs(train, train_adv, valid)
    meta = learner.meta_params()
    args = (train, train_adv, valid, valid_adv, old)
    x0 = flatten(meta).detach().clone()
    loss, _ = learner.objective(meta, *args, create_graph=True)
    g = flat_grad(loss, list(meta.values())).detach()
    h = kl_hessian(learner, meta, args) + 1e-3 * torch.eye(x0.numel(), dtype=torch.float64)
    direction = torch.linalg.solve(h, -g)
    full = direction * torch.sqrt(1e-3 / (0.5 * direction @ h @ direction))
    stats = learner.update(train, train_adv, valid)
    assert stats["accepted"] == 1.0
    expected = x0 + learner.trpo.ls_backtrack ** (stats["line_search_steps"] - 1) * full
    # CG stops at a residual of 1e-10, so agreement is to about 1e-4 relative
    torch.testing.assert_close(flatten(learner.meta_params()).detach(), expected, rtol=2e-3, atol=1e-7)


@pytest.mark.parametrize("chunk", [1, 2, 3, 8])
def test_curvature_is_the_exact_kl_hessian_for_any_chunk_size(chunk):
    learner, train, train_adv, valid, valid_adv, old = make_problem("all")
    meta = learner.meta_params()
    v = torch.randn(flatten(meta).numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full_args = (train, train_adv, valid, valid_adv, old)
    learner.trpo = TRPOSettings(cg_damping=0.0, cg_subsample=1.0, hvp_chunk_tasks=chunk)
    torch.testing.assert_close(learner.curvature(meta, *full_args)(v), kl_hessian(learner, meta, full_args) @ v)


def test_curvature_subsample_uses_the_first_tasks():
    learner, train, train_adv, valid, valid_adv, old = make_problem("all")
    meta = learner.meta_params()
    v = torch.randn(flatten(meta).numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full_args = (train, train_adv, valid, valid_adv, old)
    learner.trpo = TRPOSettings(cg_damping=0.0, cg_subsample=0.5, hvp_chunk_tasks=1)  # 2 of 3 tasks
    sub_args = (train.tasks(0, 2), train_adv[:2], valid.tasks(0, 2), valid_adv[:2], old.tasks(0, 2))
    sub = learner.curvature(meta, *full_args)(v)
    torch.testing.assert_close(sub, kl_hessian(learner, meta, sub_args) @ v)
    assert (sub - kl_hessian(learner, meta, full_args) @ v).norm() > 1e-6
    learner.trpo = TRPOSettings(cg_damping=0.5, cg_subsample=0.5)
    torch.testing.assert_close(learner.curvature(meta, *full_args)(v), sub + 0.5 * v)


def test_meta_sgd_with_fixed_step_sizes_equals_maml():
    policy = tiny_policy()
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = policy.params()
    lrs = {k: torch.full_like(v, 0.1) for k, v in params.items()}
    a = adapt(policy, params, batch, adv, lr=0.1, steps=2)
    b = adapt(policy, params, batch, adv, lr=lrs, steps=2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    ga = torch.autograd.grad(vpg_loss(policy, a, batch, adv).sum(), list(params.values()))
    gb = torch.autograd.grad(vpg_loss(policy, b, batch, adv).sum(), list(params.values()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_meta_sgd_step_sizes_change_after_an_outer_step():
    learner, train, train_adv, valid, _, _ = make_problem("all", learn_lr=True)
    before = {k: v.detach().clone() for k, v in learner.lr_params.items()}
    stats = learner.update(train, train_adv, valid)
    assert stats["accepted"] == 1.0
    changed = [k for k, v in learner.lr_params.items() if not torch.equal(v.detach(), before[k])]
    assert sorted(changed) == sorted(before)
