"""Edges of the MAML-TRPO outer step that the mutation run found unpinned: the
diagnostics of accepted, refused and rejected updates, the settings that reach the
line search, the adapted parameters handed to the step, task slices of the old
outputs, and gradients of unused tensors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from metarl.algos import maml_trpo
from metarl.algos.maml_trpo import MAMLTRPO, Old, TRPOSettings, flat_grad
from metarl.algos.trpo import LineSearchResult
from metarl.episodes import EpisodeBatch
from metarl.policies import flatten
from tests.helpers_core import random_batch, tiny_policy

TIMES = ("time_inner_s", "time_cg_s", "time_line_search_s")


def learner_and_batches(**trpo):
    policy = tiny_policy()
    learner = MAMLTRPO(policy, list(policy.params()), inner_lr=0.1, trpo=TRPOSettings(**trpo))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    return learner, train, learner.advantages(train), valid


def test_rejected_stats_are_a_refused_step_with_nan_surrogates():
    stats = MAMLTRPO.rejected_stats()
    nan = {"surrogate_before", "surrogate_after", "grad_norm"}
    assert all(math.isnan(stats[k]) for k in nan)
    assert {k: v for k, v in stats.items() if k not in nan} == {
        "accepted": 0.0, "line_search_steps": 0.0, "kl": 0.0, "rejected_nonfinite": 1.0, "cg_tasks": 0.0,
        "time_inner_s": 0.0, "time_cg_s": 0.0, "time_line_search_s": 0.0}


def test_accepted_update_reports_its_line_search_and_times():
    learner, train, adv, valid = learner_and_batches(max_kl=0.01)
    seen = {}
    search = maml_trpo.line_search

    def spy(evaluate, old_params, full_step, old_loss, max_kl, backtrack, max_steps):
        seen.update(old_loss=old_loss, max_kl=max_kl, backtrack=backtrack, max_steps=max_steps)
        return search(evaluate, old_params, full_step, old_loss, max_kl, backtrack, max_steps)

    maml_trpo.line_search = spy
    try:
        learner.trpo.ls_backtrack, learner.trpo.ls_max_steps = 0.7, 9
        stats = learner.update(train, adv, valid)
    finally:
        maml_trpo.line_search = search
    assert seen == {"old_loss": stats["surrogate_before"], "max_kl": 0.01, "backtrack": 0.7, "max_steps": 9}
    assert stats["accepted"] == 1.0 and stats["rejected_nonfinite"] == 0.0 and stats["cg_tasks"] == 3.0
    assert stats["surrogate_after"] < stats["surrogate_before"] and 0.0 < stats["kl"] <= 0.01
    for k in TIMES:
        assert 0.0 < stats[k] < 60.0, k
    assert set(stats) == set(MAMLTRPO.rejected_stats())


def test_a_search_without_steps_refuses_and_keeps_the_surrogate():
    learner, train, adv, valid = learner_and_batches(ls_max_steps=0)
    before = flatten(learner.meta_params()).detach().clone()
    stats = learner.update(train, adv, valid)
    assert (stats["accepted"], stats["line_search_steps"], stats["kl"], stats["rejected_nonfinite"]) == (0, 0, 0, 0)
    assert type(stats["rejected_nonfinite"]) is float
    assert stats["surrogate_after"] == stats["surrogate_before"]
    assert torch.equal(flatten(learner.meta_params()), before)


def test_a_zero_gradient_has_no_trust_region_step_and_is_rejected():
    learner, train, adv, valid = learner_and_batches()
    flat = EpisodeBatch(valid.obs, valid.actions, torch.zeros_like(valid.rewards), valid.mask)  # no advantage
    before = flatten(learner.meta_params()).detach().clone()
    stats = learner.update(train, adv, flat)
    assert stats["grad_norm"] == 0.0 and stats["rejected_nonfinite"] == 1.0 and stats["accepted"] == 0.0
    assert torch.equal(flatten(learner.meta_params()), before)


def test_a_non_finite_gradient_rejects_the_update():
    learner, train, adv, valid = learner_and_batches()
    before = flatten(learner.meta_params()).detach().clone()
    grad = maml_trpo.flat_grad
    maml_trpo.flat_grad = lambda y, tensors, **kw: torch.full_like(grad(y, tensors, **kw), float("nan"))
    try:
        stats = learner.update(train, adv, valid)
    finally:
        maml_trpo.flat_grad = grad
    assert math.isfinite(stats["surrogate_before"]) and stats["rejected_nonfinite"] == 1.0
    assert stats["time_cg_s"] == 0.0  # rejected before the curvature and the conjugate gradient
    assert torch.equal(flatten(learner.meta_params()), before)


def test_the_step_uses_the_adapted_parameters_it_is_handed():
    learner, train, adv, valid = learner_and_batches()
    adapted = learner.adapt(random_batch(seed=9), adv, create_graph=False)  # not train's adaptation
    old = learner.old_outputs(train, adv, valid, adapted)
    loss, _ = learner.objective(learner.meta_params(), train, adv, valid, learner.advantages(valid), old)
    own = learner.objective(learner.meta_params(), train, adv, valid, learner.advantages(valid),
                            learner.old_outputs(train, adv, valid))[0]
    assert abs(loss.item() - own.item()) > 1e-6
    scalars = learner.step(train, valid, adapted, adv).scalars
    assert scalars["trpo/surrogate_before"] == pytest.approx(loss.item(), rel=1e-12)


def test_objective_defaults_to_the_second_order_graph():
    learner, train, adv, valid = learner_and_batches()
    meta, vadv = learner.meta_params(), learner.advantages(valid)
    old = learner.old_outputs(train, adv, valid)
    grad = [flat_grad(learner.objective(meta, train, adv, valid, vadv, old, **kw)[0], list(meta.values()))
            for kw in ({}, {"create_graph": True}, {"create_graph": False})]
    torch.testing.assert_close(grad[0], grad[1], rtol=1e-12, atol=1e-14)
    assert (grad[0] - grad[2]).abs().max() > 1e-6


def test_from_config_reads_the_trpo_section_and_subsampling_keeps_one_task():
    policy = tiny_policy()
    algo = SimpleNamespace(inner_lr=0.2, inner_steps=1, first_order=False, learn_inner_lr=False,
                           inner_update="sgd", gamma=0.9, gae_lambda=0.95, normalize_advantages=True)
    trpo = SimpleNamespace(**vars(TRPOSettings(max_kl=0.03, cg_subsample=0.1, ls_max_steps=4)))
    learner = MAMLTRPO.from_config(SimpleNamespace(algo=algo, trpo=trpo), policy, policy.head_names())
    assert learner.trpo == TRPOSettings(max_kl=0.03, cg_subsample=0.1, ls_max_steps=4)
    assert learner.curvature_tasks(3) == 1 and learner.curvature_tasks(25) == 3


def test_old_outputs_slice_stacked_log_stds_and_keep_a_shared_one():
    mean, logp = torch.randn(4, 6, 2), torch.randn(4, 3, 2)
    stacked = Old(mean, torch.randn(4, 1, 2), logp)
    part = stacked.tasks(1, 3)
    assert torch.equal(part.mean, mean[1:3]) and torch.equal(part.logp, logp[1:3])
    assert torch.equal(part.log_std, stacked.log_std[1:3])
    shared = Old(mean, torch.randn(2), logp).tasks(1, 3)
    assert shared.log_std.shape == (2,)


def test_flat_grad_puts_zeros_for_unused_tensors():
    a, b = torch.randn(2, requires_grad=True), torch.randn(3, requires_grad=True)
    g = flat_grad((a**2).sum(), [a, b])
    assert torch.equal(g, torch.cat([2 * a.detach(), torch.zeros(3)]))


@pytest.mark.parametrize("kind", ["gauss_newton", "double_backward"])
def test_curvature_takes_the_selected_product_at_the_meta_parameters_it_is_given(kind):
    learner, train, adv, valid = learner_and_batches(curvature=kind, cg_damping=0.0, hvp_chunk_tasks=2)
    vadv, old = learner.advantages(valid), learner.old_outputs(train, adv, valid)
    used = []
    products = {"gauss_newton": maml_trpo.gauss_newton_product, "double_backward": maml_trpo.kl_hvp}

    def spy(name):
        return lambda *a, **kw: used.append(name) or products[name](*a, **kw)

    maml_trpo.gauss_newton_product, maml_trpo.kl_hvp = spy("gauss_newton"), spy("double_backward")
    try:
        v = torch.randn(flatten(learner.meta_params()).numel(), dtype=torch.float64)
        own = learner.curvature(learner.meta_params(), train, adv, valid, vadv, old)(v)
        copy = {k: t.detach().clone().requires_grad_() for k, t in learner.meta_params().items()}
        given = learner.curvature(copy, train, adv, valid, vadv, old)(v)
    finally:
        maml_trpo.gauss_newton_product, maml_trpo.kl_hvp = products["gauss_newton"], products["double_backward"]
    assert set(used) == {kind} and len(used) == 4  # two chunks of tasks, twice
    assert own.abs().max() > 1e-6
    torch.testing.assert_close(given, own, rtol=1e-10, atol=1e-12)


def test_full_step_meets_the_kl_quadratic_model_with_cg_iters_products(monkeypatch):
    # the step scale comes from CG's own products: the full step's quadratic KL model
    # 0.5 sᵀ (H + λI) s, recomputed with a fresh product, equals max_kl, and the curvature
    # product is called exactly cg_iters times (no extra product for sᵀ H s)
    learner, train, adv, valid = learner_and_batches(max_kl=0.02, cg_iters=6)
    learner.policy.double()
    train, valid = (EpisodeBatch(*(t.double() for t in (b.obs, b.actions, b.rewards, b.mask))) for b in (train, valid))
    adv = learner.advantages(train)
    calls, seen = [], {}
    build = learner.curvature

    def counting_curvature(*args):
        hvp = build(*args)
        seen["hvp"] = build(*args)

        def product(v):
            calls.append(1)
            return hvp(v)

        return product

    def spy(evaluate, old_params, full_step, old_loss, max_kl, backtrack, max_steps):
        seen["step"] = full_step.clone()
        return LineSearchResult(False, 1, old_loss, 0.0, old_params.clone())

    monkeypatch.setattr(learner, "curvature", counting_curvature)
    monkeypatch.setattr(maml_trpo, "line_search", spy)
    learner.update(train, adv, valid)
    assert len(calls) == 6
    s = seen["step"]
    assert 0.5 * float(s @ seen["hvp"](s)) == pytest.approx(0.02, rel=1e-9)
