"""TRPO building blocks: conjugate gradient and a backtracking line search.

These work on flat parameter vectors and closures, so that MAML-TRPO (which
differentiates through the inner loop) and plain TRPO share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def conjugate_gradient(avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                       residual_tol: float = 1e-10) -> Tensor:
    """Approximately solve ``A x = b`` for symmetric positive definite ``A``
    given only ``avp(v) = A v``; at most ``iters`` iterations."""
    return conjugate_gradient_with_product(avp, b, iters, residual_tol)[0]


def conjugate_gradient_with_product(avp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10,
                                    residual_tol: float = 1e-10) -> tuple[Tensor, Tensor]:
    """:func:`conjugate_gradient`'s ``x`` together with ``A x``, at no extra product.

    ``x = Σ_i α_i p_i`` is built from the search directions, so ``A x = Σ_i
    α_i (A p_i)`` is the same combination of the products already computed:
    TRPO's step scale ``xᵀ A x`` then needs no further call of ``avp``.  By
    linearity this is ``A x`` itself; only the rounding order differs from a
    fresh product.
    """
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = r @ r
    for _ in range(iters):
        if rdotr <= residual_tol:
            break
        ap = avp(p)
        alpha = rdotr / (p @ ap)
        x = x + alpha * p
        ax = ax + alpha * ap
        r = r - alpha * ap
        new_rdotr = r @ r
        p = r + (new_rdotr / rdotr) * p
        rdotr = new_rdotr
    return x, ax


@dataclass
class LineSearchResult:
    accepted: bool
    steps: int  # backtracking steps tried (1 = the full step was accepted)
    loss: float
    kl: float
    params: Tensor  # the accepted flat parameters, or the old ones


def line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    old_params: Tensor,
    full_step: Tensor,
    old_loss: float,
    max_kl: float,
    backtrack: float = 0.8,
    max_steps: int = 15,
) -> LineSearchResult:
    """Backtracking line search on ``old_params + backtrack**k * full_step``.

    ``evaluate(flat) -> (loss, kl)``.  A step is accepted only when the loss
    decreases and ``kl <= max_kl`` (both finite).  Otherwise the old
    parameters are returned with ``accepted=False``.
    """
    loss, kl = old_loss, 0.0
    for k in range(max_steps):
        candidate = old_params + (backtrack**k) * full_step
        loss, kl = evaluate(candidate)
        finite = bool(torch.isfinite(old_params.new_tensor([loss, kl], dtype=torch.get_default_dtype())).all())
        if finite and loss < old_loss and kl <= max_kl:
            return LineSearchResult(True, k + 1, loss, kl, candidate)
    return LineSearchResult(False, max_steps, loss, kl, old_params.clone())
