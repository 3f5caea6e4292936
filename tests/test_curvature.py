"""Gauss-Newton curvature of the outer step: the same KL Hessian as the double-backward product."""

from __future__ import annotations

import pytest
import torch

from metarl.algos.curvature import MLPLinearization
from metarl.algos.maml_trpo import TRPOSettings, flat_grad
from metarl.algos.trpo import conjugate_gradient
from metarl.config import ConfigError, load_config
from metarl.policies import flatten
from metarl.trainer import Trainer
from tests.helpers_core import random_batch, tiny_policy
from tests.test_core_math import make_problem
from tests.test_core_training import small_config

CASES = {  # id: (adapt_mode, first_order, inner steps, Meta-SGD)
    "maml_1_step": ("all", False, 1, False),
    "maml_2_steps": ("all", False, 2, False),
    "anil_1_step": ("head", False, 1, False),
    "anil_2_steps": ("head", False, 2, False),
    "meta_sgd": ("all", False, 1, True),
    "meta_sgd_2_steps": ("all", False, 2, True),
    "anil_meta_sgd": ("head", False, 1, True),
    "anil_log_std": ("head_log_std", False, 1, False),
    "anil_log_std_2_steps": ("head_log_std", False, 2, False),
    "first_order": ("all", True, 1, False),
    "first_order_anil": ("head", True, 2, False),
    "first_order_meta_sgd": ("all", True, 2, True),
    "no_inner_step": ("all", False, 0, False),
}


def products(case: str, chunk: int = 2, damping: float = 0.0):
    """The two curvature closures of one problem, and a random direction."""
    mode, first_order, steps, meta_sgd = CASES[case]
    learner, train, train_adv, valid, valid_adv, old = make_problem(mode, first_order, steps, meta_sgd)
    meta = learner.meta_params()
    args = (train, train_adv, valid, valid_adv, old)
    out = {}
    for curvature in ("double_backward", "gauss_newton"):
        learner.trpo = TRPOSettings(cg_damping=damping, hvp_chunk_tasks=chunk, curvature=curvature)
        out[curvature] = learner.curvature(meta, *args)
    v = torch.randn(flatten(meta).numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return learner, meta, args, out, v


@pytest.mark.parametrize("case", list(CASES))
def test_gauss_newton_product_equals_double_backward_of_the_mean_kl(case):
    _, _, _, hvp, v = products(case)
    reference = hvp["double_backward"](v)
    assert reference.norm() > 1e-3
    scale = reference.abs().max()
    torch.testing.assert_close(hvp["gauss_newton"](v) / scale, reference / scale, rtol=0, atol=1e-8)


@pytest.mark.parametrize("chunk", [1, 3])
def test_gauss_newton_product_is_the_same_for_any_chunk_and_adds_damping(chunk):
    _, _, _, hvp, v = products("maml_1_step", chunk=chunk, damping=0.25)
    _, _, _, undamped, _ = products("maml_1_step", chunk=2)
    torch.testing.assert_close(hvp["gauss_newton"](v), undamped["double_backward"](v) + 0.25 * v,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["maml_1_step", "maml_2_steps", "anil_1_step", "meta_sgd", "first_order"])
def test_conjugate_gradient_direction_is_the_same_with_either_product(case):
    learner, meta, args, hvp, _ = products(case, damping=1e-3)
    loss, _ = learner.objective(meta, *args, create_graph=True)
    g = flat_grad(loss, list(meta.values())).detach()
    directions = {k: conjugate_gradient(h, -g, 10) for k, h in hvp.items()}
    ref = directions["double_backward"]
    assert (directions["gauss_newton"] - ref).norm() <= 1e-6 * ref.norm()


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_linearization_matches_autograd(activation):
    policy = tiny_policy(hidden=(5, 4), activation=activation)
    params = policy.params()
    n = 3
    stacked = {k: (v.detach().unsqueeze(0).expand(n, *v.shape).clone() if k.startswith("head") else v.detach())
               for k, v in params.items()}  # a shared body and a per-task head, as under ANIL
    obs = random_batch(n=n).flat_obs()
    lin = MLPLinearization(policy, obs, stacked, policy.layer_names())
    torch.testing.assert_close(lin.output, policy(obs, stacked)[0])
    g = torch.Generator().manual_seed(0)
    tangent = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in stacked.items()}
    keys = [k for k in stacked if k != "log_std"]
    _, expected = torch.func.jvp(lambda *p: policy(obs, {**stacked, **dict(zip(keys, p))})[0],
                                 tuple(stacked[k] for k in keys), tuple(tangent[k] for k in keys))
    torch.testing.assert_close(lin.jvp(tangent), expected)
    cot = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    leaves = [stacked[k].clone().requires_grad_() for k in keys]
    mean = policy(obs, {**stacked, **dict(zip(keys, leaves))})[0]
    expected_vjp = torch.autograd.grad(mean, leaves, cot)
    got, _ = lin.vjp(cot)
    for k, e in zip(keys, expected_vjp):
        torch.testing.assert_close(got[k], e)


def test_bad_curvature_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="trpo.curvature: must be gauss_newton or double_backward, got 'newton'"):
        load_config(None, ["trpo.curvature=newton"])


@pytest.mark.parametrize("extra", [[], ["policy.adapt=head"], ["policy.adapt=head_log_std"], ["algo.inner_steps=2"],
                                   ["algo.learn_inner_lr=true"]],
                         ids=["maml", "anil", "anil_log_std", "maml_2_steps", "meta_sgd"])
def test_training_gives_the_same_parameters_with_either_product(tmp_path, extra):
    # A damping of 0.1 keeps CG well conditioned: at 1e-5 the run itself is chaotic in float32 (changing
    # max_kl by 1e-5 relative moves the parameters of 3 iterations by ~1e-3 relative), so any two
    # implementations that differ in rounding part ways, whichever product they use.
    extra = extra + ["trpo.cg_damping=0.1"]
    final = {}
    for curvature in ("double_backward", "gauss_newton"):
        (tmp_path / curvature).mkdir()
        trainer = Trainer(small_config(3, extra + [f"trpo.curvature={curvature}"]), tmp_path / curvature)
        results = trainer.train()
        assert all(r.scalars["trpo/accepted"] == 1.0 for r in results)
        final[curvature] = {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()}
    for k, ref in final["double_backward"].items():
        torch.testing.assert_close(final["gauss_newton"][k], ref, rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("curvature", ["gauss_newton", "double_backward"])
def test_chunks_in_threads_give_the_same_product_bit_for_bit(curvature):
    learner, train, train_adv, valid, valid_adv, old = make_problem("all", steps=2)
    meta = learner.meta_params()
    args = (train, train_adv, valid, valid_adv, old)
    learner.trpo = TRPOSettings(hvp_chunk_tasks=1, curvature=curvature)
    v = torch.randn(flatten(meta).numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    serial = learner.curvature(meta, *args)(v)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threaded = learner.curvature(meta, *args)(v)
        assert torch.get_num_threads() == 2  # restored after the product
    finally:
        torch.set_num_threads(before)
    assert torch.equal(serial, threaded)
