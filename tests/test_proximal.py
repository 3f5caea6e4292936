"""ProMP and MAML-PPO: the LVC inner loss, the clipped surrogate, the KL rule, gradients, determinism, resume."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_core import random_batch, tiny_policy

from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.algos import ALGOS, MAMLPPO, ProMP
from metarl.algos.proximal import ProximalSettings, adam_update, clipped_surrogate, next_kl_coef
from metarl.config import load_config
from metarl.policies import gaussian_log_prob
from metarl.rundir import load_run
from metarl.trainer import Trainer


def _logp(policy, params, batch):
    mean, log_std = policy(batch.flat_obs(), params)
    return gaussian_log_prob(mean, log_std, batch.flat_actions()).reshape(batch.mask.shape)


def test_registry_holds_both():
    assert ALGOS["promp"] is ProMP and ALGOS["maml_ppo"] is MAMLPPO


def test_lvc_gradient_equals_the_vpg_gradient_at_the_sampling_policy_but_not_its_hessian():
    policy = tiny_policy()
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    params = dict(policy.params())
    tensors = list(params.values())
    ref = _logp(policy, params, batch).detach()
    vpg = vpg_loss(policy, params, batch, adv).sum()
    lvc = vpg_loss(policy, params, batch, adv, reference_logp=ref).sum()
    g_vpg = torch.autograd.grad(vpg, tensors, create_graph=True)
    g_lvc = torch.autograd.grad(lvc, tensors, create_graph=True)
    for a, b in zip(g_vpg, g_lvc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the curvature differs: E[(H + g g^T) A] vs E[H A]
    v = [torch.randn_like(t) for t in tensors]
    h_vpg = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_vpg, v, strict=True)), tensors)
    h_lvc = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_lvc, v, strict=True)), tensors)
    assert max(float((a - b).abs().max()) for a, b in zip(h_vpg, h_lvc, strict=True)) > 1e-3
    # and the one-step adaptation from the sampling policy is the same
    a1 = adapt(policy, params, batch, adv, 0.3, 1, True, None)
    a2 = adapt(policy, params, batch, adv, 0.3, 1, True, None, reference_logp=ref)
    for k in a1:
        torch.testing.assert_close(a1[k], a2[k], rtol=1e-12, atol=1e-12)


def test_clip_removes_the_gradient_of_ratios_outside_the_range_in_the_clipped_direction():
    old = torch.zeros(1, 4, 1, dtype=torch.float64)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5], dtype=torch.float64)).view(1, 4, 1).requires_grad_()
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64).view(1, 4, 1)
    mask = torch.ones_like(adv)
    (grad,) = torch.autograd.grad(clipped_surrogate(logp, old, adv, mask, 0.2), logp)
    g = grad.view(-1)
    # r = 1.5 with A > 0 and r = 0.5 with A < 0: clipped, no gradient
    assert g[0] == 0 and g[1] == 0
    # r = 1.5 with A < 0 and r = 0.5 with A > 0: the unclipped term is the minimum, gradient -r A / 4
    assert g[2] == pytest.approx(1.5 / 4) and g[3] == pytest.approx(-0.5 / 4)


@pytest.mark.parametrize("kl,want", [(0.001, 0.5), (0.0066, 0.5), (0.01, 1.0), (0.0149, 1.0), (0.016, 2.0),
                                     (1.0, 2.0)])
def test_kl_coefficient_rule(kl, want):
    assert next_kl_coef(1.0, kl, 0.01) == want


def test_adam_update_matches_torch_adam():
    p1 = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p2 = p1.clone().requires_grad_()
    m, v = torch.zeros_like(p1), torch.zeros_like(p1)
    opt = torch.optim.Adam([p2], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for step in range(1, 4):
        g = torch.sin(p1 * step)
        adam_update([p1], [g], [m], [v], step, 0.01, 0.9, 0.999, 1e-8)
        opt.zero_grad()
        p2.grad = torch.sin(p2.detach() * step)
        opt.step()
        torch.testing.assert_close(p1, p2.detach(), rtol=1e-12, atol=1e-12)


def _learner(cls, adapt_mode="all", **kw):
    policy = tiny_policy()
    settings = ProximalSettings(**kw)
    return cls(policy, adapt_names(policy, adapt_mode), inner_lr=0.3, proximal=settings)


def _problem(learner):
    train, valid = random_batch(seed=1), random_batch(seed=2)
    train_adv = learner.advantages(train)
    adapted = {k: v.detach() for k, v in learner.adapt(train, train_adv).items()}
    return train, valid, adapted, learner.constants(train, valid, adapted, train_adv)


@pytest.mark.parametrize("cls,adapt_mode", [(ProMP, "all"), (ProMP, "head"), (MAMLPPO, "all")])
def test_meta_gradient_matches_finite_differences_of_the_outer_objective(cls, adapt_mode):
    learner = _learner(cls, adapt_mode, kl_coef=0.7)
    train, valid, adapted, c = _problem(learner)
    meta = learner.meta_params()
    # perturb away from the sampling point so the clip, the ratio and the KL all matter
    with torch.no_grad():
        for v in meta.values():
            v.add_(0.05 * torch.randn_like(v))
    total, _, kl_pre, _ = learner.objective(meta, train, valid, c)
    assert kl_pre.item() > 0
    names = list(meta)
    grads = torch.autograd.grad(total, [meta[k] for k in names])
    eps = 1e-6
    for k, g in zip(names, grads, strict=True):
        flat = meta[k].view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 3)):
            with torch.no_grad():
                old = flat[i].item()
                flat[i] = old + eps
                up = learner.objective(meta, train, valid, c, create_graph=False)[0].item()
                flat[i] = old - eps
                down = learner.objective(meta, train, valid, c, create_graph=False)[0].item()
                flat[i] = old
            assert g.view(-1)[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), (k, i)


def test_maml_ppo_with_a_huge_clip_follows_the_unclipped_surrogate_gradient():
    learner = _learner(MAMLPPO, clip_eps=1e9, epochs=1)
    train, valid, adapted, c = _problem(learner)
    meta = learner.meta_params()
    total, _, _, _ = learner.objective(meta, train, valid, c)
    # the unclipped post-adaptation surrogate, written out
    adapted_graph = adapt(learner.policy, dict(meta), train, c.train_adv, 0.3, 1, False, learner.adapt_names)
    ratio = torch.exp(_logp(learner.policy, adapted_graph, valid) - c.old_valid_logp)
    plain = -(((ratio * c.valid_adv * valid.mask).sum((1, 2)) / valid.mask.sum((1, 2))).mean())
    g1 = torch.autograd.grad(total, list(meta.values()))
    g2 = torch.autograd.grad(plain, list(meta.values()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    before = {k: v.detach().clone() for k, v in meta.items()}
    learner.step(train, valid, adapted, c.train_adv)
    flat_g = torch.cat([g.reshape(-1) for g in g2])
    flat_d = torch.cat([(meta[k].detach() - before[k]).reshape(-1) for k in meta])
    # Adam's first step is -lr * g / (|g| + eps) per entry: the descent direction of every entry
    nz = flat_g.abs() > 1e-6
    assert torch.equal(torch.sign(flat_d[nz]), -torch.sign(flat_g[nz]))


def test_promp_step_lowers_its_objective_and_reports_namespaced_scalars():
    learner = _learner(ProMP, epochs=5, lr=0.01, adaptive_kl=True, target_kl=1e-9)
    train, valid, adapted, c = _problem(learner)
    before = learner.objective(learner.meta_params(), train, valid, c, create_graph=False)[0].item()
    result = learner.step(train, valid, adapted, c.train_adv)
    assert not result.rejected
    s = result.scalars
    assert s["promp/loss_before"] == pytest.approx(before)
    assert s["promp/loss_after"] < before
    assert {"promp/kl_pre", "promp/kl_coef", "promp/clip_fraction", "promp/kl_post"} <= set(s)
    assert s["promp/kl_pre"] > 1e-9 and learner.kl_coef == 2 * 5e-4  # measured KL above target: doubled
    assert learner.adam_step == 5


def test_non_finite_batches_are_rejected_without_changing_anything():
    learner = _learner(ProMP)
    train, valid, adapted, c = _problem(learner)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    valid.rewards[0, 0, 0] = math.nan
    result = learner.step(train, valid, adapted, c.train_adv)
    assert result.rejected
    for k, v in learner.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_round_trip_holds_adam_and_the_kl_coefficient():
    a = _learner(ProMP, adaptive_kl=True)
    train, valid, adapted, c = _problem(a)
    a.step(train, valid, adapted, c.train_adv)
    state = a.state_dict()
    assert any(k.endswith("adam_step") for k in state) and any(k.endswith("kl_coef") for k in state)
    b = _learner(ProMP, adaptive_kl=True)
    b.load_state_dict(state)
    assert b.adam_step == a.adam_step and b.kl_coef == a.kl_coef
    for k, v in b.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(KeyError):
        b.load_state_dict({k: v for k, v in state.items() if "adam" not in k})


TINY = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=8", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


def _train(tmp, name, iterations, resume=False, extra=()):
    cfg = load_config("experiments/configs/navigation2d.yaml",
                      [*TINY, f"algo.name={name}", f"iterations={iterations}", "proximal.adaptive_kl=true", *extra])
    return Trainer(cfg, tmp, resume=resume).train()


@pytest.mark.parametrize("name,extra", [("promp", ()), ("maml_ppo", ()), ("promp", ("policy.adapt=head",)),
                                        ("maml_ppo", ("algo.learn_inner_lr=true",))])
def test_same_seed_runs_are_identical_and_resume_is_exact(tmp_path, name, extra):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ra = _train(a, name, 3, extra=extra)
    _train(b, name, 1, extra=extra)
    rb = _train(b, name, 3, resume=True, extra=extra)
    _, _, la, _ = load_run(a)
    _, _, lb, _ = load_run(b)
    sa, sb = la.state_dict(), lb.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    prefix = "promp" if name == "promp" else "ppo"
    assert ra[-1].scalars[f"{prefix}/loss_after"] == rb[-1].scalars[f"{prefix}/loss_after"]
