"""Edges of conjugate gradient and the line search that the mutation run found
unpinned: default budgets, exact convergence, the acceptance boundaries and what a
rejected search reports."""

from __future__ import annotations

import torch

from metarl.algos.trpo import conjugate_gradient, conjugate_gradient_with_product, line_search


def test_conjugate_gradient_default_budget_is_ten_products():
    diag = torch.logspace(0, 4, 30, dtype=torch.float64)  # needs more than 10 iterations
    calls = []

    def avp(v):
        calls.append(1)
        return diag * v

    conjugate_gradient(avp, torch.ones(30, dtype=torch.float64))
    assert len(calls) == 10


def test_conjugate_gradient_product_is_a_times_x_without_another_call():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(25, 25, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(25, dtype=torch.float64)
    b = torch.randn(25, generator=g, dtype=torch.float64)
    calls = []

    def avp(v):
        calls.append(1)
        return a @ v

    for iters in (1, 4, 10):
        calls.clear()
        x, ax = conjugate_gradient_with_product(avp, b, iters)
        assert len(calls) == iters  # no product beyond the CG iterations
        assert torch.allclose(ax, a @ x, rtol=1e-10, atol=1e-12)
        assert torch.equal(x, conjugate_gradient(lambda v: a @ v, b, iters))


def test_conjugate_gradient_stops_at_an_exact_solution_with_zero_tolerance():
    # A = 2 I is solved in one iteration; the residual is then exactly 0 <= 0 and CG stops
    # instead of dividing 0 by p.Ap = 0
    b = torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)
    x = conjugate_gradient(lambda v: 2.0 * v, b, residual_tol=0.0)
    assert torch.equal(x, b / 2)


def test_line_search_defaults_backtrack_by_0_8_for_15_steps():
    old, step = torch.zeros(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
    tried = []

    def reject_all(p):
        tried.append(p.clone())
        return 1.0 + float(p.sum()), 0.5 + float(p[0])

    res = line_search(reject_all, old, step, old_loss=1.0, max_kl=0.01)
    assert not res.accepted and res.steps == 15 and len(tried) == 15
    for k, p in enumerate(tried):
        torch.testing.assert_close(p, 0.8**k * step)
    # a rejected search reports the last candidate's loss and KL, and the old parameters
    assert res.loss == 1.0 + float(tried[-1].sum()) and res.kl == 0.5 + float(tried[-1][0])
    assert torch.equal(res.params, old) and res.params is not old


def test_line_search_needs_a_strict_decrease_and_accepts_kl_equal_to_the_bound():
    old, step = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    same = line_search(lambda p: (2.0, 0.0), old, step, old_loss=2.0, max_kl=1.0, max_steps=3)
    assert not same.accepted and same.steps == 3
    edge = line_search(lambda p: (1.0, 0.25), old, step, old_loss=2.0, max_kl=0.25)
    assert edge.accepted and edge.steps == 1 and edge.kl == 0.25 and torch.equal(edge.params, step)


def test_line_search_without_steps_rejects_and_reports_the_old_loss_and_zero_kl():
    old = torch.zeros(3, dtype=torch.float64)
    res = line_search(lambda p: (0.0, 0.0), old, torch.ones(3, dtype=torch.float64), old_loss=4.0, max_kl=1.0,
                      max_steps=0)
    assert (res.accepted, res.steps, res.loss, res.kl) == (False, 0, 4.0, 0.0)
