"""The Gauss-Newton curvature's other paths and helpers: adapted sets other than ``all`` / ``head`` (the
generic double-backward inner Hessian), ReLU and deeper bodies, tasks with one live step, which closed form
each case uses, the linearization's input tangents and cotangents, ``_affine``'s four forms, and the
chunk threads."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from metarl.algos import curvature
from metarl.algos.curvature import MLPLinearization, _affine, _one_intra_op_thread, map_chunks
from metarl.algos.maml_trpo import MAMLTRPO, TRPOSettings
from metarl.policies import flatten
from tests.helpers_core import random_batch, tiny_policy

NAMES = {  # adapted set: names given the policy
    "all": lambda p: list(p.params()),
    "head": lambda p: p.head_names(),
    "head_and_log_std": lambda p: [*p.head_names(), "log_std"],
    "first_layer": lambda p: ["body.0.weight", "body.0.bias"],
    "all_but_log_std": lambda p: [k for k in p.params() if k != "log_std"],
}


def _one_live_step(batch, task):
    """``batch`` with task ``task`` cut to a single live step."""
    batch.mask[task] = 0.0
    batch.mask[task, 0, 1] = 1.0
    batch.rewards.mul_(batch.mask)
    return batch


def products(adapt, steps=1, meta_sgd=False, first_order=False, hidden=(5,), activation="tanh", one_live=False):
    policy = tiny_policy(hidden=hidden, activation=activation)
    learner = MAMLTRPO(policy, NAMES[adapt](policy), inner_lr=0.1, inner_steps=steps, first_order=first_order,
                       learn_inner_lr=meta_sgd)
    if meta_sgd:
        with torch.no_grad():
            for v in learner.lr_params.values():
                v.copy_(0.2 + 0.6 * torch.rand(v.shape, generator=torch.Generator().manual_seed(5),
                                               dtype=torch.float64))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    if one_live:
        train, valid = _one_live_step(train, 2), _one_live_step(valid, 1)
    g = torch.Generator().manual_seed(3)
    train_adv = torch.randn(train.rewards.shape, generator=g, dtype=torch.float64) * train.mask
    valid_adv = torch.randn(valid.rewards.shape, generator=g, dtype=torch.float64) * valid.mask
    old = learner.old_outputs(train, train_adv, valid)
    meta = learner.meta_params()
    out = {}
    for kind in ("double_backward", "gauss_newton"):
        learner.trpo = TRPOSettings(cg_damping=0.0, hvp_chunk_tasks=3, curvature=kind)
        out[kind] = learner.curvature(meta, train, train_adv, valid, valid_adv, old)
    v = torch.randn(flatten(meta).numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return out, v


def assert_same_product(out, v):
    reference = out["double_backward"](v)
    scale = reference.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(out["gauss_newton"](v) / scale, reference / scale, rtol=0, atol=1e-9)


CASES = {  # id: keyword arguments of products()
    "head_and_log_std": {"adapt": "head_and_log_std"},
    "head_and_log_std_2_steps": {"adapt": "head_and_log_std", "steps": 2},
    "head_and_log_std_meta_sgd": {"adapt": "head_and_log_std", "meta_sgd": True},
    "first_layer": {"adapt": "first_layer"},
    "first_layer_2_steps": {"adapt": "first_layer", "steps": 2},
    "all_but_log_std": {"adapt": "all_but_log_std"},
    "maml_relu": {"adapt": "all", "activation": "relu"},
    "maml_two_hidden_layers": {"adapt": "all", "hidden": (5, 4)},
    "maml_one_live_step": {"adapt": "all", "one_live": True},
    "anil_one_live_step": {"adapt": "head", "one_live": True},
    "anil_relu_two_layers": {"adapt": "head", "activation": "relu", "hidden": (5, 4)},
}


@pytest.mark.parametrize("case", list(CASES))
def test_gauss_newton_product_is_the_kl_hessian_on_every_path(case):
    assert_same_product(*products(**CASES[case]))


@pytest.mark.parametrize("adapt,first_order,head_steps,mlp_steps", [
    ("head", False, 2, 0), ("all", False, 0, 2), ("all", True, 0, 0), ("head_and_log_std", False, 0, 0),
    ("first_layer", False, 0, 0)])
def test_maml_and_anil_use_their_closed_form_inner_steps(monkeypatch, adapt, first_order, head_steps, mlp_steps):
    # the documented split: the closed forms for MAML (MLPStep) and ANIL (HeadStep), double backward otherwise
    built = {"head": 0, "mlp": 0}

    class CountingHead(curvature.HeadStep):
        def __init__(self, *args, **kwargs):
            built["head"] += 1
            super().__init__(*args, **kwargs)

    class CountingMLP(curvature.MLPStep):
        def __init__(self, *args, **kwargs):
            built["mlp"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(curvature, "HeadStep", CountingHead)
    monkeypatch.setattr(curvature, "MLPStep", CountingMLP)
    out, v = products(adapt, steps=2, first_order=first_order)
    assert built == {"head": head_steps, "mlp": mlp_steps}
    assert_same_product(out, v)


def _stacked_problem(activation="tanh", zero_unit=False):
    policy = tiny_policy(hidden=(5, 4), activation=activation)
    params = policy.params()
    n = 3
    stacked = {k: (v.detach().unsqueeze(0).expand(n, *v.shape).clone() if k.startswith("head") else v.detach())
               for k, v in params.items()}  # a shared body and a per-task head
    if zero_unit:  # a hidden unit whose pre-activation is exactly 0 everywhere
        stacked["body.0.weight"] = stacked["body.0.weight"].clone()
        stacked["body.0.bias"] = stacked["body.0.bias"].clone()
        stacked["body.0.weight"][1] = 0.0
        stacked["body.0.bias"][1] = 0.0
    obs = random_batch(n=n).flat_obs()
    keys = [k for k in stacked if k != "log_std"]
    return policy, stacked, obs, keys


@pytest.mark.parametrize("activation,zero_unit", [("tanh", False), ("relu", True)])
def test_linearization_carries_input_tangents_and_cotangents_like_autograd(activation, zero_unit):
    policy, stacked, obs, keys = _stacked_problem(activation, zero_unit)
    lin = MLPLinearization(policy, obs, stacked, policy.layer_names())
    g = torch.Generator().manual_seed(1)
    tangent = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in stacked.items()}
    x_dot = torch.randn(obs.shape, generator=g, dtype=torch.float64)

    def mean(x, *p):
        return policy(x, {**stacked, **dict(zip(keys, p))})[0]

    primals = (obs, *(stacked[k] for k in keys))
    _, expected = torch.func.jvp(mean, primals, (x_dot, *(tangent[k] for k in keys)))
    torch.testing.assert_close(lin.jvp(tangent, x_dot), expected, rtol=1e-10, atol=1e-12)
    _, no_input = torch.func.jvp(mean, primals, (torch.zeros_like(obs), *(tangent[k] for k in keys)))
    torch.testing.assert_close(lin.jvp(tangent), no_input, rtol=1e-10, atol=1e-12)
    cot = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in primals]
    want = torch.autograd.grad(mean(*leaves), leaves, cot)
    grads, cot_x = lin.vjp(cot, need_input=True)
    torch.testing.assert_close(cot_x, want[0], rtol=1e-10, atol=1e-12)
    for k, w in zip(keys, want[1:], strict=True):
        torch.testing.assert_close(grads[k], w, rtol=1e-10, atol=1e-12)
    assert lin.vjp(cot)[1] is None  # the input's cotangent only on request


@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_affine_is_x_w_transposed_plus_b_or_accumulated(stacked, bias, accumulate):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    w = torch.randn(*((3,) if stacked else ()), 2, 5, generator=g, dtype=torch.float64)
    b = torch.randn(*((3,) if stacked else ()), 2, generator=g, dtype=torch.float64)
    acc = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    prod = torch.einsum("nmi,noi->nmo", x, w) if stacked else torch.einsum("nmi,oi->nmo", x, w)
    if accumulate:
        want = acc + prod
        out = _affine(x, w, None, acc)
        assert out.data_ptr() == acc.data_ptr()  # in place
    else:
        want = prod + ((b.unsqueeze(-2) if stacked else b) if bias else 0.0)
        out = _affine(x, w, b if bias else None)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def test_one_intra_op_thread_while_the_chunks_run_and_restored_after():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert _one_intra_op_thread(2, lambda: [torch.get_num_threads()]) == [1]
        assert torch.get_num_threads() == 2
        assert _one_intra_op_thread(1, lambda: [torch.get_num_threads()]) == [2]  # one thread: left alone
    finally:
        torch.set_num_threads(before)


def test_map_chunks_runs_serially_unless_several_threads_and_chunks():
    main = threading.get_ident()

    def where(a, b):
        time.sleep(0.02)  # long enough that a pool cannot serve every chunk with one thread
        return (a, b, threading.get_ident())

    ranges = [(0, 1), (1, 3), (3, 4), (4, 6)]
    before = torch.get_num_threads()
    try:
        serial = map_chunks(where, ranges, 1)
        assert [r[:2] for r in serial] == ranges and {r[2] for r in serial} == {main}
        single = map_chunks(where, [(0, 5)], 2)
        assert single == [(0, 5, main)]
        threaded = map_chunks(where, ranges, 2)
        assert [r[:2] for r in threaded] == ranges  # in order
        idents = {r[2] for r in threaded}
        assert main not in idents and len(idents) <= 2  # at most `threads` workers
        pair = map_chunks(where, ranges[:2], 2)
        assert main not in {r[2] for r in pair}
    finally:
        torch.set_num_threads(before)
