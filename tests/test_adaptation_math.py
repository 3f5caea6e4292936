"""Edges of the inner loop that the mutation run found unpinned: defaults, error
messages, the LVC objective away from the sampling policy, head-plus-log-std
adaptation of several tasks, the features cache, single-step tasks, and the
Kronecker preconditioner's factors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.episodes import EpisodeBatch
from metarl.inner_updates import KroneckerStep
from metarl.policies import gaussian_log_prob
from tests.helpers_core import random_batch, tiny_policy


def advantages_for(batch: EpisodeBatch, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch.rewards.shape, generator=g, dtype=torch.float64) * batch.mask


def manual_step(policy, batch, adv, lr, names, i, reference_logp=None):
    """One VPG (or LVC) step on task ``i`` alone, with unstacked parameters and the policy's own forward."""
    p = OrderedDict((k, v.detach().clone().requires_grad_(k in names)) for k, v in policy.params().items())
    mean, log_std = policy(batch.obs[i].reshape(-1, policy.obs_dim), p)
    logp = gaussian_log_prob(mean, log_std, batch.actions[i].reshape(-1, policy.act_dim))
    mask, a = batch.mask[i].reshape(-1), adv[i].reshape(-1)
    if reference_logp is not None:
        logp = torch.exp(logp - reference_logp[i].reshape(-1))
    loss = -(logp * a * mask).sum() / mask.sum()
    grads = torch.autograd.grad(loss, [p[k] for k in names])
    return {k: (p[k] - lr * g).detach() for k, g in zip(names, grads)}


def test_default_is_one_second_order_step():
    policy, batch = tiny_policy(), random_batch()
    adv, params = advantages_for(batch), policy.params()
    default = adapt(policy, params, batch, adv, lr=0.2)
    one = adapt(policy, params, batch, adv, lr=0.2, steps=1, first_order=False)
    for k in params:
        torch.testing.assert_close(default[k], one[k], rtol=0, atol=0)

    def meta_grad(adapted):
        return torch.autograd.grad(adapted["head.weight"].pow(2).sum(), params["head.weight"])[0]

    exact = meta_grad(adapt(policy, params, batch, adv, lr=0.2, steps=1, first_order=False))
    torch.testing.assert_close(meta_grad(adapt(policy, params, batch, adv, lr=0.2)), exact, rtol=1e-12, atol=0)
    first = meta_grad(adapt(policy, params, batch, adv, lr=0.2, first_order=True))
    assert (first - exact).abs().max() > 1e-4  # the second-order term is not negligible here


def test_unknown_names_and_modes_are_rejected_with_their_names():
    policy, batch = tiny_policy(), random_batch()
    with pytest.raises(KeyError, match=r"cannot adapt unknown parameters \['head\.nope'\]"):
        adapt(policy, policy.params(), batch, advantages_for(batch), lr=0.1, names=["head.weight", "head.nope"])
    with pytest.raises(ValueError, match=r"policy.adapt must be one of all, head, head_log_std, got 'body'"):
        adapt_names(policy, "body")


def test_head_log_std_adapts_the_head_and_the_log_std_by_their_own_gradients():
    policy, batch = tiny_policy(), random_batch()
    adv = advantages_for(batch)
    names = adapt_names(policy, "head_log_std")
    assert names == ["head.weight", "head.bias", "log_std"]
    adapted = adapt(policy, policy.params(), batch, adv, lr=0.3, names=names)
    for k, v in policy.params().items():
        if k not in names:  # the body is shared and unchanged
            assert torch.equal(adapted[k], v)
    for i in range(batch.num_tasks):  # per task: θ' = θ - lr ∇ of that task's own loss
        loss = vpg_loss(policy, policy.params(), batch.tasks(i, i + 1), adv[i:i + 1]).sum()
        grads = torch.autograd.grad(loss, [policy.params()[k] for k in names])
        for k, g in zip(names, grads, strict=True):
            torch.testing.assert_close(adapted[k][i], policy.params()[k].detach() - 0.3 * g, rtol=1e-12, atol=1e-14)
    assert not torch.equal(adapted["log_std"][0], adapted["log_std"][1])  # the std is now per task


def test_lvc_step_away_from_the_sampling_policy_uses_the_likelihood_ratio():
    policy, batch = tiny_policy(), random_batch()
    adv, names = advantages_for(batch), list(policy.params())
    sampler = tiny_policy(seed=5)  # a different sampling policy: the ratio is not 1
    with torch.no_grad():
        mean, log_std = sampler(batch.flat_obs())
        ref = gaussian_log_prob(mean, log_std, batch.flat_actions()).reshape(batch.rewards.shape)
    lvc = adapt(policy, policy.params(), batch, adv, lr=0.3, reference_logp=ref)
    vpg = adapt(policy, policy.params(), batch, adv, lr=0.3)
    for i in range(batch.num_tasks):
        want = manual_step(policy, batch, adv, 0.3, names, i, reference_logp=ref)
        for k in names:
            torch.testing.assert_close(lvc[k][i], want[k], rtol=1e-10, atol=1e-12)
    assert max((lvc[k] - vpg[k]).abs().max().item() for k in names) > 1e-3


def test_head_and_log_std_of_several_tasks_adapt_each_task_alone():
    policy, batch = tiny_policy(), random_batch()
    adv, names = advantages_for(batch), ["head.weight", "head.bias", "log_std"]
    adapted = adapt(policy, policy.params(), batch, adv, lr=0.4, names=names)
    assert adapted["log_std"].shape == (batch.num_tasks, policy.act_dim)
    for i in range(batch.num_tasks):
        want = manual_step(policy, batch, adv, 0.4, names, i)
        for k in names:
            torch.testing.assert_close(adapted[k][i], want[k], rtol=1e-10, atol=1e-12)
    # a second step runs on stacked (N, act_dim) log-stds through the cached features
    two = adapt(policy, adapted, batch, adv, lr=0.4, steps=1, names=names)
    for k in names:
        assert two[k].shape == adapted[k].shape and torch.isfinite(two[k]).all()


def test_a_frozen_body_is_evaluated_once_for_all_inner_steps():
    policy, batch = tiny_policy(), random_batch()
    calls = []
    body = policy.features

    def counting(*args, **kwargs):
        calls.append(1)
        return body(*args, **kwargs)

    policy.features = counting
    adapt(policy, policy.params(), batch, advantages_for(batch), lr=0.1, steps=3, names=policy.head_names())
    assert len(calls) == 1
    calls.clear()
    adapt(policy, policy.params(), batch, advantages_for(batch), lr=0.1, steps=3)
    assert len(calls) == 3  # the body is adapted: evaluated at every step


def test_vpg_loss_of_a_task_with_one_live_step():
    policy = tiny_policy()
    batch = random_batch(n=2, t=3, b=1, terminate=False)
    batch.mask[1, 1:, 0] = 0.0
    adv = advantages_for(batch)
    loss = vpg_loss(policy, policy.params(), batch, adv)
    mean, log_std = policy(batch.obs[1, 0, 0])
    want = -gaussian_log_prob(mean, log_std, batch.actions[1, 0, 0]) * adv[1, 0, 0]
    torch.testing.assert_close(loss[1], want, rtol=1e-12, atol=0)


def test_kronecker_step_needs_both_factors_and_follows_the_device():
    grad = torch.randn(3, 2, dtype=torch.float64)
    only_left = KroneckerStep(0.5, {"w/L": 2.0 * torch.eye(3, dtype=torch.float64)})
    torch.testing.assert_close(only_left("w", grad), 0.5 * grad)  # no R: the plain step
    with_diag = KroneckerStep(0.5, {"w/R": torch.eye(2, dtype=torch.float64), "w/diag": torch.full((3, 2), 3.0)})
    torch.testing.assert_close(with_diag("w", grad), 0.5 * torch.full((3, 2), 3.0) * grad)  # no L: the diagonal
    params = {"w": torch.zeros(3, 2, device="meta"), "b": torch.zeros(3, device="meta")}
    factors = KroneckerStep.identity_factors(params, ["w", "b"])
    assert list(factors) == ["w/L", "w/R", "b/diag"]
    assert all(v.device.type == "meta" and v.requires_grad for v in factors.values())
    assert factors["w/L"].shape == (3, 3) and factors["w/R"].shape == (2, 2)
