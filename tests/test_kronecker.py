"""The learned Kronecker-factored inner-loop preconditioner (``algo.inner_update: kronecker``).

Float64 tiny policy for the maths; tiny Navigation2D runs through the
trainer for checkpoints, resume, evaluation and analysis.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarl.adaptation import adapt, vpg_loss
from metarl.algos.base import PRECOND_PREFIX
from metarl.algos.maml_trpo import MAMLTRPO, flat_grad
from metarl.analysis.preconditioner import factor_spectrum, preconditioner_spectra
from metarl.analysis.representation import analyze_run, format_report
from metarl.config import ConfigError, load_config
from metarl.inner_updates import KroneckerStep
from metarl.policies import flatten, unflatten
from metarl.rundir import load_run
from metarl.trainer import Trainer
from tests.helpers_core import random_batch, tiny_policy
from tests.test_core_math import finite_difference_grad

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = ROOT / "experiments" / "configs" / "navigation2d.yaml"
TINY = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=8", "policy.hidden_sizes=[6]",
        "sampler.backend=serial", "log.checkpoint_every=1", "algo.inner_update=kronecker"]


def advantages(batch, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch.rewards.shape, generator=g, dtype=torch.float64) * batch.mask


def kronecker_problem(adapt_mode: str = "all", steps: int = 1, perturb: bool = True):
    """A float64 MAML-TRPO learner with the preconditioner, its factors moved off the identity."""
    policy = tiny_policy()
    names = list(policy.params()) if adapt_mode == "all" else policy.head_names()
    learner = MAMLTRPO(policy, names, inner_lr=0.1, inner_steps=steps, inner_update="kronecker")
    if perturb:
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            for v in learner.precond_params.values():
                v.add_(0.3 * torch.randn(v.shape, generator=g, dtype=torch.float64))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    train_adv, valid_adv = advantages(train, 3), advantages(valid, 5)
    old = learner.old_outputs(train, train_adv, valid)
    return learner, (train, train_adv, valid, valid_adv, old)


# -- the update rule -------------------------------------------------------------------

def test_identity_factors_and_a_scalar_step_equal_plain_maml_exactly():
    policy = tiny_policy()
    batch = random_batch()
    adv = advantages(batch)
    params = policy.params()
    step = KroneckerStep(0.1, KroneckerStep.identity_factors(params, list(params)))
    a = adapt(policy, params, batch, adv, lr=0.1, steps=2)
    b = adapt(policy, params, batch, adv, lr=step, steps=2)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    ga = torch.autograd.grad(vpg_loss(policy, a, batch, adv).sum(), list(params.values()))
    gb = torch.autograd.grad(vpg_loss(policy, b, batch, adv).sum(), list(params.values()))
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_learner_at_initialisation_has_identity_factors_and_maml_objective():
    kron, args = kronecker_problem(perturb=False)
    plain = MAMLTRPO(kron.policy, kron.adapt_names, inner_lr=0.1)
    shapes = {k: tuple(v.shape) for k, v in kron.precond_params.items()}
    assert shapes == {"body.0.weight/L": (5, 5), "body.0.weight/R": (3, 3), "body.0.bias/diag": (5,),
                      "head.weight/L": (2, 2), "head.weight/R": (5, 5), "head.bias/diag": (2,),
                      "log_std/diag": (2,)}
    assert all(k.startswith(PRECOND_PREFIX) for k in kron.meta_params() if k not in kron.policy.params())
    loss_k, kl_k = kron.objective(kron.meta_params(), *args)
    loss_p, kl_p = plain.objective(plain.meta_params(), *args)
    assert loss_k.item() == loss_p.item() and kl_k.item() == kl_p.item()


def test_step_is_left_and_right_multiplication_per_task():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(4, 4, generator=g), torch.randn(3, 3, generator=g)
    diag = torch.randn(4, generator=g)
    step = KroneckerStep(0.5, {"w/L": left, "w/R": right, "b/diag": diag})
    grad = torch.randn(2, 4, 3, generator=g)  # two tasks
    torch.testing.assert_close(step("w", grad), torch.stack([0.5 * left @ grad[i] @ right for i in range(2)]))
    gb = torch.randn(2, 4, generator=g)
    torch.testing.assert_close(step("b", gb), 0.5 * diag * gb)
    torch.testing.assert_close(step("other", gb), 0.5 * gb)


@pytest.mark.parametrize("adapt_mode,steps", [("all", 1), ("all", 2), ("head", 1)])
def test_meta_gradient_wrt_factors_matches_finite_differences(adapt_mode, steps):
    learner, args = kronecker_problem(adapt_mode, steps)
    meta = learner.meta_params()
    loss, _ = learner.objective(meta, *args, create_graph=True)
    analytic = flat_grad(loss, list(meta.values()))
    x0 = flatten(meta).detach()
    with torch.no_grad():
        numeric = finite_difference_grad(
            lambda x: learner.objective(unflatten(x, meta), *args, create_graph=False)[0], x0)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    per_tensor = dict(zip(meta, torch.split(analytic, [v.numel() for v in meta.values()]), strict=True))
    for k in learner.precond_params:  # every factor gets a meta-gradient
        assert per_tensor[PRECOND_PREFIX + k].abs().max() > 1e-6, k


def test_trpo_curvature_through_the_preconditioner_matches_finite_differences():
    """The double-backward KL Hessian-vector product covers the factors too (what the TRPO step uses)."""
    learner, args = kronecker_problem()
    meta = learner.meta_params()
    hvp = learner.curvature(meta, *args)
    x0 = flatten(meta).detach()
    v = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def grad_kl_at(x):
        leaves = [t.detach().clone().requires_grad_() for t in unflatten(x, meta).values()]
        cand = dict(zip(meta.keys(), leaves, strict=True))
        _, kl_x = learner.objective(cand, *args, create_graph=True)
        return flat_grad(kl_x, leaves).detach()

    eps = 1e-5
    numeric = (grad_kl_at(x0 + eps * v) - grad_kl_at(x0 - eps * v)) / (2 * eps)
    analytic = hvp(v) - learner.trpo.cg_damping * v
    assert analytic.norm() > 1e-3
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_factors_change_after_an_outer_step():
    learner, (train, train_adv, valid, _, _) = kronecker_problem(perturb=False)
    before = {k: v.detach().clone() for k, v in learner.precond_params.items()}
    stats = learner.update(train, train_adv, valid)
    assert stats["accepted"] == 1.0
    changed = [k for k, v in learner.precond_params.items() if not torch.equal(v.detach(), before[k])]
    assert sorted(changed) == sorted(before)
    assert learner.state_scalars()["kronecker/max_dev_from_identity"] > 0


def test_anil_preconditions_and_adapts_only_the_head():
    learner, (train, train_adv, *_rest) = kronecker_problem("head")
    assert sorted(learner.precond_params) == ["head.bias/diag", "head.weight/L", "head.weight/R"]
    assert learner.precond_params["head.weight/L"].shape == (2, 2)
    assert learner.precond_params["head.weight/R"].shape == (5, 5)
    meta = learner.meta_params()
    adapted = learner.adapt(train, train_adv, meta, create_graph=True)
    for k in ("body.0.weight", "body.0.bias", "log_std"):
        assert adapted[k] is meta[k]  # untouched: the meta-parameter itself
    for k in ("head.weight", "head.bias"):
        assert adapted[k].shape == (train.num_tasks, *meta[k].shape)
    loss = vpg_loss(learner.policy, adapted, train, train_adv).sum()
    grads = torch.autograd.grad(loss, [meta["body.0.weight"], meta[PRECOND_PREFIX + "head.weight/L"]])
    assert all(g.abs().max() > 0 for g in grads)  # the body and the factors still get meta-gradients


def test_adapt_further_uses_the_learned_preconditioner():
    learner, (train, train_adv, *_rest) = kronecker_problem()
    params = {k: v.detach() for k, v in learner.policy.params().items()}
    further = learner.adapt_further(params, train, train_adv)
    direct = adapt(learner.policy, params, train, train_adv, learner.step_size(), 1, True, learner.adapt_names)
    plain = adapt(learner.policy, params, train, train_adv, learner.inner_lr, 1, True, learner.adapt_names)
    for k in further:
        torch.testing.assert_close(further[k], direct[k].detach(), rtol=0, atol=0)
    assert not torch.allclose(further["head.weight"], plain["head.weight"])


# -- config ----------------------------------------------------------------------------

def test_config_spellings_of_the_inner_update_agree():
    assert load_config(NAV_CONFIG, ["algo.learn_inner_lr=true"]).algo.inner_update == "meta_sgd"
    assert load_config(NAV_CONFIG, ["algo.inner_update=meta_sgd"]).algo.learn_inner_lr is True
    cfg = load_config(NAV_CONFIG, ["algo.inner_update=kronecker"])
    assert cfg.algo.inner_update == "kronecker" and cfg.algo.learn_inner_lr is False
    with pytest.raises(ConfigError, match="contradicts") as e:
        load_config(NAV_CONFIG, ["algo.inner_update=kronecker", "algo.learn_inner_lr=true"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="algo.inner_update must be one of"):
        load_config(NAV_CONFIG, ["algo.inner_update=adam"])


# -- spectra -----------------------------------------------------------------------------

def test_factor_spectrum_of_the_identity_and_of_a_known_matrix():
    s = factor_spectrum(torch.eye(3))
    assert (s["min"], s["max"], s["condition"], s["asymmetry"]) == (1.0, 1.0, 1.0, 0.0)
    m = torch.tensor([[2.0, 1.0], [-1.0, -0.5]])  # symmetric part diag(2, -0.5)
    s = factor_spectrum(m)
    assert s["min"] == pytest.approx(-0.5) and s["max"] == pytest.approx(2.0)
    assert s["min_abs"] == pytest.approx(0.5) and s["condition"] == pytest.approx(4.0)
    assert s["asymmetry"] == pytest.approx(2 ** 0.5 / float(torch.linalg.norm(m)))
    assert factor_spectrum(torch.zeros(2, 2))["condition"] is None
    learner, _ = kronecker_problem(perturb=False)
    spectra = preconditioner_spectra(learner.precond_params)
    assert list(spectra) == ["log_std", "body.0", "head"]  # the policy's parameter order
    assert list(spectra["head"]) == ["weight.L", "weight.R", "bias.diag"] and list(spectra["log_std"]) == ["diag"]
    assert preconditioner_spectra({}) is None


# -- through the trainer -----------------------------------------------------------------------

def _train(run_dir: Path, iterations: int, resume: bool = False, extra: tuple[str, ...] = ()) -> Trainer:
    cfg = load_config(NAV_CONFIG, [*TINY, f"iterations={iterations}", *extra])
    trainer = Trainer(cfg, run_dir, resume=resume)
    trainer.train()
    return trainer


@pytest.mark.parametrize("algo", ["maml_trpo", "promp"])
def test_factors_are_checkpointed_and_restored_exactly_on_resume(tmp_path, algo):
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir()
    part.mkdir()
    extra = (f"algo.name={algo}",)
    trained = _train(full, 3, extra=extra).learner
    _train(part, 2, extra=extra)
    _, _, at_two, iteration = load_run(part)
    assert iteration == 2
    resumed = _train(part, 3, resume=True, extra=extra).learner
    init = KroneckerStep.identity_factors(trained.policy.params(), trained.adapt_names)
    assert any(not torch.equal(v.detach(), init[k]) for k, v in at_two.precond_params.items())
    assert trained.precond_params.keys() == resumed.precond_params.keys() == init.keys()
    for k, v in trained.precond_params.items():
        assert not torch.equal(v.detach(), init[k]), f"{k} never moved"
        assert torch.equal(v.detach(), resumed.precond_params[k].detach()), k
    state = trained.state_dict()
    assert all(PRECOND_PREFIX + k in state for k in trained.precond_params)


def test_analyze_reports_the_factor_spectra(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _train(run_dir, 1, extra=("policy.adapt=head",))
    result = analyze_run(run_dir, num_tasks=2, seed=0, episodes_per_task=2, out_dir=tmp_path / "out", plot=False)
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert list(saved["preconditioner"]) == ["head"]
    assert saved["preconditioner"]["head"]["weight.R"]["size"] == 6
    assert "weight.L" in format_report(result) and "symmetric part" in format_report(result)
