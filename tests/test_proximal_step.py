"""ProMP's and MAML-PPO's outer step against an independent replay: the constants from
``torch.distributions``, the objective written out, ``torch.optim.Adam`` for the epochs, every reported
scalar, the adaptive KL coefficient, rejection with a full restore (parameters, Adam moments, step count),
the LVC inner loop of ``adapt``, and the checkpointed state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from metarl.adaptation import adapt, adapt_names
from metarl.algos import MAMLPPO, ProMP
from metarl.algos.proximal import STATE_PREFIX, ProximalSettings
from metarl.config import load_config
from metarl.policies import gaussian_log_prob
from tests.helpers_core import random_batch, tiny_policy


def _learner(cls, mode="all", steps=1, meta_sgd=False, first_order=False, **settings):
    policy = tiny_policy()
    return cls(policy, adapt_names(policy, mode), inner_lr=0.3, inner_steps=steps, learn_inner_lr=meta_sgd,
               first_order=first_order, proximal=ProximalSettings(**settings))


def _batches(learner):
    train, valid = random_batch(seed=1), random_batch(seed=2)
    train_adv = learner.advantages(train)
    adapted = {k: v.detach() for k, v in learner.adapt(train, train_adv).items()}
    return train, valid, train_adv, adapted


def _dist(policy, obs, params=None):
    mean, log_std = policy(obs, params)
    return Independent(Normal(mean, torch.exp(log_std).expand_as(mean)), 1)


def _task_mean(x, mask):
    """Per-task mean over the live steps, then over tasks, written out."""
    per_task = [(x[i] * mask[i]).sum() / max(1.0, float(mask[i].sum())) for i in range(x.shape[0])]
    return torch.stack(per_task).mean()


def _hand_objective(learner, params, adapted, train, valid, old, clip_eps, kl_coef):
    """``(J, surrogate, KL, valid log-probs)`` of the module docstring, from torch.distributions."""
    logp = _dist(learner.policy, valid.flat_obs(), adapted).log_prob(valid.flat_actions()).reshape(valid.mask.shape)
    ratio = torch.exp(logp - old["valid_logp"])
    adv = old["valid_adv"]
    surrogate = -_task_mean(torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv), valid.mask)
    pre = _dist(learner.policy, train.flat_obs(), params)
    kl = _task_mean(kl_divergence(old["pre"], pre).reshape(train.mask.shape), train.mask)
    total = surrogate + kl_coef * kl if learner.kl_penalty else surrogate
    return total, surrogate, kl, logp


def _hand_constants(learner, train, valid, adapted):
    with torch.no_grad():
        valid_logp = _dist(learner.policy, valid.flat_obs(), adapted).log_prob(valid.flat_actions())
        mean, log_std = learner.policy(train.flat_obs())
        pre = Independent(Normal(mean.clone(), torch.exp(log_std).clone().expand_as(mean)), 1)
        # the LVC reference goes into the inner loss next to metarl's own log-probabilities, whose constant
        # log(2 pi) term is rounded to float32 (3e-8 off): it must be the same function for the ratio to be 1
        train_logp = gaussian_log_prob(mean, log_std, train.flat_actions()).reshape(train.mask.shape)
    return {"valid_logp": valid_logp.reshape(valid.mask.shape), "valid_adv": learner.advantages(valid),
            "pre": pre, "train_logp": train_logp}


def _hand_adapt(learner, meta, train, train_adv, reference):
    params, lr = learner._split(meta)
    return adapt(learner.policy, params, train, train_adv, lr, learner.inner_steps, learner.first_order,
                 learner.adapt_names, reference_logp=reference if learner.lvc else None)


def replay(learner, train, valid, train_adv, adapted):
    """The outer step replayed with torch.optim.Adam: final parameters, Adam state, scalars."""
    s = learner.proximal
    old = _hand_constants(learner, train, valid, adapted)
    names = list(learner.meta_params())
    leaves = [v.detach().clone().requires_grad_() for v in learner.meta_params().values()]
    opt = torch.optim.Adam(leaves, lr=s.lr, betas=(s.adam_beta1, s.adam_beta2), eps=s.adam_eps)
    fractions, first = [], None
    for _ in range(s.epochs):
        meta = dict(zip(names, leaves, strict=True))
        params, _ = learner._split(meta)
        fast = _hand_adapt(learner, meta, train, train_adv, old["train_logp"])
        total, surrogate, _, logp = _hand_objective(learner, params, fast, train, valid, old, s.clip_eps,
                                                    learner.kl_coef)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads, strict=True)]
        if first is None:
            first = (total.item(), surrogate.item(), math.sqrt(sum(float((g * g).sum()) for g in grads)))
        ratio = torch.exp(logp.detach() - old["valid_logp"])
        outside = ((ratio - 1).abs() > s.clip_eps).to(valid.mask.dtype)
        fractions.append(float((outside * valid.mask).sum() / valid.mask.sum()))
        for t, g in zip(leaves, grads, strict=True):
            t.grad = g
        opt.step()
    meta = dict(zip(names, leaves, strict=True))
    params, _ = learner._split(meta)
    with torch.no_grad():
        fast = _hand_adapt(learner, meta, train, train_adv, old["train_logp"])
        total, surrogate, kl, logp = _hand_objective(learner, params, fast, train, valid, old, s.clip_eps,
                                                     learner.kl_coef)
    kl_post = float(_task_mean(old["valid_logp"] - logp, valid.mask))
    p = learner.scalar_prefix
    scalars = {f"{p}/loss_before": first[0], f"{p}/loss_after": float(total), f"{p}/surrogate_before": first[1],
               f"{p}/surrogate_after": float(surrogate), f"{p}/grad_norm": first[2],
               f"{p}/clip_fraction": sum(fractions) / len(fractions), f"{p}/kl_post": kl_post,
               f"{p}/kl_pre": float(kl), "time/inner_s": 0.0}
    if learner.kl_penalty:
        scalars[f"{p}/kl_coef"] = learner.kl_coef
    state = [opt.state[t] for t in leaves]
    return ({k: t.detach() for k, t in meta.items()}, {k: st["exp_avg"] for k, st in zip(names, state)},
            {k: st["exp_avg_sq"] for k, st in zip(names, state)}, scalars)


CASES = {
    "promp": (ProMP, {}),
    "promp_anil_2_steps": (ProMP, {"mode": "head", "steps": 2}),
    "promp_meta_sgd": (ProMP, {"meta_sgd": True}),
    "maml_ppo": (MAMLPPO, {}),
    "maml_ppo_first_order": (MAMLPPO, {"first_order": True, "steps": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_step_is_adam_on_the_written_out_objective_and_reports_it(case):
    cls, kw = CASES[case]
    learner = _learner(cls, **kw, epochs=3, lr=0.02, clip_eps=0.05, kl_coef=0.7, adam_beta1=0.8,
                       adam_beta2=0.99, adam_eps=1e-6)
    train, valid, train_adv, adapted = _batches(learner)
    params, m, v, scalars = replay(copy.deepcopy(learner), train, valid, train_adv, adapted)
    result = learner.step(train, valid, adapted, train_adv)
    assert not result.rejected
    for k, t in learner.meta_params().items():
        torch.testing.assert_close(t.detach(), params[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(learner.adam_m[k], m[k], rtol=1e-9, atol=1e-14)
        torch.testing.assert_close(learner.adam_v[k], v[k], rtol=1e-9, atol=1e-16)
    assert learner.adam_step == 3
    assert set(result.scalars) == set(scalars)
    for k, want in scalars.items():
        assert result.scalars[k] == pytest.approx(want, rel=1e-9, abs=1e-12), k
    assert 0 < scalars[f"{learner.scalar_prefix}/clip_fraction"] < 1  # the clip matters in this problem
    assert scalars[f"{learner.scalar_prefix}/kl_pre"] > 0


def test_step_without_advantages_computes_them_from_the_train_batch():
    a = _learner(ProMP, epochs=2, lr=0.01)
    b = copy.deepcopy(a)
    train, valid, train_adv, adapted = _batches(a)
    ra = a.step(train, valid, adapted)
    rb = b.step(train, valid, adapted, a.advantages(train))
    assert ra.scalars == pytest.approx(rb.scalars, rel=1e-9, abs=1e-12)  # the baseline's lstsq: last bits
    for k, t in a.meta_params().items():
        torch.testing.assert_close(t, b.meta_params()[k], rtol=1e-9, atol=1e-12)
    zero = copy.deepcopy(b)
    rz = zero.step(train, valid, adapted, torch.zeros_like(train_adv))  # other advantages, another step
    assert rz.scalars["promp/loss_after"] != pytest.approx(rb.scalars["promp/loss_after"], rel=1e-6)


@pytest.mark.parametrize("coef,target,kl_coef_after", [(0.4, 1e-9, 0.8), (0.4, 1e3, 0.2)])
def test_adaptive_kl_coefficient_reports_the_one_used_and_keeps_the_next(coef, target, kl_coef_after):
    learner = _learner(ProMP, epochs=1, lr=0.01, kl_coef=coef, adaptive_kl=True, target_kl=target)
    train, valid, train_adv, adapted = _batches(learner)
    result = learner.step(train, valid, adapted, train_adv)
    assert result.scalars["promp/kl_coef"] == coef and learner.kl_coef == kl_coef_after
    fixed = _learner(ProMP, epochs=1, lr=0.01, kl_coef=coef, adaptive_kl=False, target_kl=target)
    fixed.step(train, valid, adapted, train_adv)
    assert fixed.kl_coef == coef


def test_maml_ppo_has_no_kl_coefficient_even_when_adaptive():
    learner = _learner(MAMLPPO, epochs=1, lr=0.01, kl_coef=0.4, adaptive_kl=True, target_kl=1e-9)
    train, valid, train_adv, adapted = _batches(learner)
    result = learner.step(train, valid, adapted, train_adv)
    assert learner.kl_coef == 0.4 and not any("kl_coef" in k for k in result.scalars)
    assert not any("kl_coef" in k for k in learner.rejected_scalars())


def _snapshot(learner):
    return ({k: v.detach().clone() for k, v in learner.meta_params().items()},
            {k: v.clone() for k, v in learner.adam_m.items()}, {k: v.clone() for k, v in learner.adam_v.items()},
            learner.adam_step, learner.kl_coef)


def _assert_unchanged(learner, snap):
    params, m, v, step, coef = snap
    for k, t in learner.meta_params().items():
        assert torch.equal(t.detach(), params[k]), k
        assert torch.equal(learner.adam_m[k], m[k]) and torch.equal(learner.adam_v[k], v[k]), k
    assert learner.adam_step == step and learner.kl_coef == coef


@pytest.mark.parametrize("cls", [ProMP, MAMLPPO])
@pytest.mark.parametrize("epochs", [1, 3])
def test_a_step_that_diverges_is_rejected_and_restores_parameters_and_adam(cls, epochs):
    # one ordinary step first, so that the Adam moments and step count are not the initial zeros
    learner = _learner(cls, epochs=2, lr=0.01, kl_coef=0.3, adaptive_kl=True)
    train, valid, train_adv, adapted = _batches(learner)
    learner.step(train, valid, adapted, train_adv)
    tensors = list(learner.meta_params().values())
    snap = _snapshot(learner)
    assert learner.adam_step == 2 and any(bool(t.abs().sum() > 0) for t in learner.adam_m.values())
    # a step of 1e300 per entry: the objective after the first Adam step is not finite
    learner.proximal.lr, learner.proximal.epochs = 1e300, epochs
    result = learner.step(train, valid, adapted, train_adv)
    assert result.rejected
    _assert_unchanged(learner, snap)
    assert all(a is b for a, b in zip(tensors, learner.meta_params().values(), strict=True))  # restored in place
    p = learner.scalar_prefix
    keys = {f"{p}/{k}" for k in ("loss_before", "loss_after", "surrogate_before", "surrogate_after", "grad_norm",
                                 "clip_fraction", "kl_post", "kl_pre")}
    assert set(result.scalars) == keys | {"time/inner_s"} | ({f"{p}/kl_coef"} if learner.kl_penalty else set())
    assert all(math.isnan(result.scalars[k]) for k in keys) and result.scalars["time/inner_s"] == 0.0
    if learner.kl_penalty:
        assert result.scalars[f"{p}/kl_coef"] == snap[4] != 0.3  # the current coefficient (adapted once)
    assert result.scalars == pytest.approx(learner.rejected_scalars(), nan_ok=True)
    # and the learner steps normally afterwards
    learner.proximal.lr, learner.proximal.epochs = 0.01, 1
    assert not learner.step(train, valid, adapted, train_adv).rejected and learner.adam_step == 3


@pytest.mark.parametrize("where", ["train_rewards", "valid_rewards", "train_adv"])
def test_non_finite_inputs_are_rejected_before_any_change(where):
    learner = _learner(ProMP, epochs=2, lr=0.01)
    train, valid, train_adv, adapted = _batches(learner)
    learner.step(train, valid, adapted, train_adv)
    snap = _snapshot(learner)
    if where == "train_rewards":
        train.rewards[1, 2, 0] = math.inf
    elif where == "valid_rewards":
        valid.rewards[0, 0, 3] = math.nan
    else:
        train_adv = train_adv.clone()
        train_adv[2, 1, 1] = math.nan
    result = learner.step(train, valid, adapted, train_adv)
    assert result.rejected and math.isnan(result.scalars["promp/loss_before"])
    _assert_unchanged(learner, snap)


def test_constants_are_the_sampling_policies_outputs_as_copies():
    learner = _learner(ProMP, mode="head", epochs=1)  # ANIL: the pre-update log-std is the meta-parameter itself
    train, valid, train_adv, adapted = _batches(learner)
    c = learner.constants(train, valid, adapted, train_adv)
    hand = _hand_constants(learner, train, valid, adapted)
    # 1e-7: metarl's log(2 pi) is rounded to float32
    torch.testing.assert_close(c.old_valid_logp, hand["valid_logp"], rtol=0, atol=1e-7)
    torch.testing.assert_close(c.old_train_logp, hand["train_logp"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c.valid_adv, hand["valid_adv"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c.train_adv, train_adv)
    mean, log_std = learner.policy(train.flat_obs())
    torch.testing.assert_close(c.old_pre_mean, mean.detach())
    torch.testing.assert_close(c.old_pre_log_std, log_std.detach())
    assert not any(t.requires_grad for t in (c.train_adv, c.valid_adv, c.old_valid_logp, c.old_train_logp,
                                             c.old_pre_mean, c.old_pre_log_std))
    before = c.old_pre_log_std.clone(), c.old_valid_logp.clone()
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.5)
    assert torch.equal(c.old_pre_log_std, before[0]) and torch.equal(c.old_valid_logp, before[1])


@pytest.mark.parametrize("cls", [ProMP, MAMLPPO])
def test_objective_is_the_written_out_clipped_surrogate_and_kl_penalty(cls):
    learner = _learner(cls, steps=2, clip_eps=0.1, kl_coef=0.7)
    learner.kl_coef = 0.9  # the current coefficient, not the initial setting
    train, valid, train_adv, adapted = _batches(learner)
    c = learner.constants(train, valid, adapted, train_adv)
    # a function of the meta-parameters it is given: perturbed copies, not the policy's own tensors
    meta = {k: (t.detach() + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel()),
                                                 dtype=t.dtype)).requires_grad_()
            for k, t in learner.meta_params().items()}
    hand = _hand_constants(learner, train, valid, adapted)
    hand["valid_adv"] = c.valid_adv
    hand["pre"] = Independent(Normal(c.old_pre_mean, torch.exp(c.old_pre_log_std).expand_as(c.old_pre_mean)), 1)
    fast = _hand_adapt(learner, meta, train, c.train_adv, c.old_train_logp)
    want = _hand_objective(learner, learner._split(meta)[0], fast, train, valid, hand, 0.1, 0.9)
    got = learner.objective(meta, train, valid, c)
    for g, w in zip(got[:3], want[:3], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[3], want[3], rtol=0, atol=1e-7)  # metarl's log(2 pi) is rounded to float32
    assert want[2].item() > 0 and (got[0].item() != got[1].item()) == learner.kl_penalty
    # second order by default: the meta-gradient sees the inner step's curvature
    g2 = torch.autograd.grad(got[0], list(meta.values()), allow_unused=True)
    fast1 = adapt(learner.policy, learner._split(meta)[0], train, c.train_adv, 0.3, 2, True, learner.adapt_names,
                  reference_logp=c.old_train_logp if learner.lvc else None)
    first = _hand_objective(learner, learner._split(meta)[0], fast1, train, valid, hand, 0.1, 0.9)[0]
    g1 = torch.autograd.grad(first, list(meta.values()), allow_unused=True)
    assert max(float((a - b).abs().max()) for a, b in zip(g2, g1, strict=True)) > 1e-6
    no_graph = learner.objective(meta, train, valid, c, create_graph=False)
    for g, w in zip(no_graph[:3], want[:3], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_promp_adapts_with_the_lvc_inner_loss_and_maml_ppo_with_vpg():
    # two inner steps: from the second one on the LVC ratio is not 1 and the two inner losses part ways
    promp, ppo = _learner(ProMP, steps=2), _learner(MAMLPPO, steps=2)
    train, _, train_adv, _ = _batches(promp)
    meta = promp.meta_params()
    with torch.no_grad():
        ref = gaussian_log_prob(*promp.policy(train.flat_obs()), train.flat_actions()).reshape(train.mask.shape)
    lvc = adapt(promp.policy, dict(meta), train, train_adv, 0.3, 2, True, promp.adapt_names, reference_logp=ref)
    vpg = adapt(promp.policy, dict(meta), train, train_adv, 0.3, 2, True, promp.adapt_names)
    assert max((lvc[k] - vpg[k]).abs().max().item() for k in lvc) > 1e-6
    got = promp.adapt(train, train_adv)
    for k in lvc:
        torch.testing.assert_close(got[k], lvc[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ppo.adapt(train, train_adv)[k], vpg[k], rtol=1e-12, atol=1e-12)
    # first order by default: the inner gradients are constants, d(adapted bias)/d(bias) = 1 per task
    (g0,) = torch.autograd.grad(got["head.bias"].sum(), [meta["head.bias"]])
    torch.testing.assert_close(g0, torch.full_like(g0, float(train.num_tasks)), rtol=0, atol=1e-15)
    # a graph on request, at given meta-parameters; the LVC denominator stays the sampling (current) policy's
    other = {k: (v.detach() + 0.1).requires_grad_() for k, v in meta.items()}
    want = adapt(promp.policy, dict(other), train, train_adv, 0.3, 2, False, promp.adapt_names, reference_logp=ref)
    graph = promp.adapt(train, train_adv, other, create_graph=True)
    for k in want:
        torch.testing.assert_close(graph[k], want[k], rtol=1e-12, atol=1e-12)
    assert graph["body.0.weight"].grad_fn is not None
    # second order: the graph holds the inner gradient's own graph
    (g,) = torch.autograd.grad(graph["head.bias"].sum(), [other["head.bias"]], create_graph=True)
    assert g.grad_fn is not None
    # another number of steps is plain VPG adaptation (test-time adaptation)
    three = promp.adapt(train, train_adv, steps=3)
    vpg3 = adapt(promp.policy, dict(meta), train, train_adv, 0.3, 3, True, promp.adapt_names)
    for k in vpg3:
        torch.testing.assert_close(three[k], vpg3[k], rtol=1e-12, atol=1e-12)
    same = promp.adapt(train, train_adv, steps=2)
    for k in lvc:
        torch.testing.assert_close(same[k], lvc[k], rtol=1e-12, atol=1e-12)


def test_state_dict_holds_adam_the_step_count_and_the_coefficient_exactly():
    learner = _learner(ProMP, epochs=2, lr=0.01, kl_coef=1 / 3, adaptive_kl=True, target_kl=1e-9)
    train, valid, train_adv, adapted = _batches(learner)
    learner.step(train, valid, adapted, train_adv)
    state = learner.state_dict()
    own = [k for k in state if k.startswith(STATE_PREFIX)]
    names = list(learner.meta_params())
    assert own == ([f"{STATE_PREFIX}adam_m/{k}" for k in names] + [f"{STATE_PREFIX}adam_v/{k}" for k in names]
                   + [f"{STATE_PREFIX}adam_step", f"{STATE_PREFIX}kl_coef"])
    assert state[f"{STATE_PREFIX}adam_step"].dtype == torch.int64 and int(state[f"{STATE_PREFIX}adam_step"]) == 2
    assert state[f"{STATE_PREFIX}kl_coef"].dtype == torch.float64 and float(state[f"{STATE_PREFIX}kl_coef"]) == 2 / 3
    for k in names:
        assert torch.equal(state[f"{STATE_PREFIX}adam_m/{k}"], learner.adam_m[k])
        assert state[f"{STATE_PREFIX}adam_m/{k}"].data_ptr() != learner.adam_m[k].data_ptr()  # copies
        assert torch.equal(state[f"{STATE_PREFIX}adam_v/{k}"], learner.adam_v[k])
        assert state[f"{STATE_PREFIX}adam_v/{k}"].data_ptr() != learner.adam_v[k].data_ptr()
    fresh = _learner(ProMP, epochs=2, lr=0.01, kl_coef=1 / 3, adaptive_kl=True, target_kl=1e-9)
    fresh.load_state_dict(state)
    assert fresh.adam_step == 2 and fresh.kl_coef == 2 / 3
    for k in names:
        assert torch.equal(fresh.adam_m[k], learner.adam_m[k]) and torch.equal(fresh.adam_v[k], learner.adam_v[k])
        assert torch.equal(fresh.meta_params()[k], learner.meta_params()[k])
    # the same next step as the original learner
    a, b = learner.step(train, valid, adapted, train_adv), fresh.step(train, valid, adapted, train_adv)
    assert a.scalars == pytest.approx(b.scalars, rel=1e-9, abs=1e-12)  # the baseline's lstsq: last bits
    extra = {**state, f"{STATE_PREFIX}unknown": torch.tensor(0.0)}
    with pytest.raises(KeyError, match="checkpoint holds .* the learner needs"):
        fresh.load_state_dict(extra)


def test_from_config_reads_the_algo_and_proximal_sections():
    cfg = load_config("experiments/configs/navigation2d.yaml",
                      ["algo.name=promp", "algo.inner_lr=0.07", "algo.inner_steps=2", "proximal.lr=0.003",
                       "proximal.epochs=4", "proximal.clip_eps=0.15", "proximal.kl_coef=0.02",
                       "policy.hidden_sizes=[4]"])
    policy = tiny_policy(obs_dim=2, act_dim=2, hidden=(4,))
    learner = ProMP.from_config(cfg, policy, policy.head_names())
    assert isinstance(learner, ProMP) and learner.adapt_names == policy.head_names()
    assert (learner.inner_lr, learner.inner_steps) == (0.07, 2)
    s = learner.proximal
    assert (s.lr, s.epochs, s.clip_eps, s.kl_coef) == (0.003, 4, 0.15, 0.02) and learner.kl_coef == 0.02


def test_maml_ppo_adapts_at_given_meta_parameters_to_second_order_on_request():
    ppo = _learner(MAMLPPO, steps=2)
    train, _, train_adv, _ = _batches(ppo)
    other = {k: (v.detach() + 0.1).requires_grad_() for k, v in ppo.meta_params().items()}
    want = adapt(ppo.policy, dict(other), train, train_adv, 0.3, 2, False, ppo.adapt_names)
    got = ppo.adapt(train, train_adv, other, create_graph=True)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(got["head.bias"].sum(), [other["head.bias"]], create_graph=True)
    assert g.grad_fn is not None  # the inner gradient's own graph: second order


def test_meta_parameters_outside_the_objective_get_zero_gradients():
    # no inner step: Meta-SGD's step sizes do not enter the objective; Adam leaves them and their moments at 0
    learner = _learner(MAMLPPO, steps=0, meta_sgd=True, epochs=2, lr=0.01)
    train, valid, train_adv, adapted = _batches(learner)
    lrs = {k: v.detach().clone() for k, v in learner.meta_params().items() if k.startswith("inner_lr/")}
    assert lrs
    result = learner.step(train, valid, adapted, train_adv)
    assert not result.rejected
    for k, v in lrs.items():
        assert torch.equal(learner.meta_params()[k], v) and not learner.adam_m[k].any(), k
    assert learner.adam_m["head.bias"].abs().sum() > 0


def test_a_non_finite_objective_with_finite_gradients_is_rejected_at_once():
    learner = _learner(ProMP, epochs=3, lr=0.01)
    train, valid, train_adv, adapted = _batches(learner)
    snap = _snapshot(learner)
    objective, calls = learner.objective, []

    def nan_first(*args, **kwargs):  # NaN added to the first epoch's value: its gradient stays finite
        out = objective(*args, **kwargs)
        calls.append(1)
        return (out[0] + math.nan, *out[1:]) if len(calls) == 1 else out

    learner.objective = nan_first
    result = learner.step(train, valid, adapted, train_adv)
    assert result.rejected and len(calls) == 1
    _assert_unchanged(learner, snap)
