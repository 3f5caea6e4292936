"""``kronecker``: a learned Kronecker-factored preconditioner of the inner gradient (Meta-Curvature style).

For an adapted weight matrix ``W (out, in)``: ``W' = W - alpha L g R`` with
``L (out, out)`` and ``R (in, in)`` named ``precond/<param>/L`` and
``precond/<param>/R``; for a vector parameter (bias, log-std)
``W' = W - alpha d * g`` with ``d`` named ``precond/<param>/diag``. All start
at the identity (ones), so the first iteration is MAML's; ``alpha =
algo.inner_lr``. The outer step's Gauss-Newton curvature does not cover it
(the double-backward product is used).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.inner_updates.base import InnerUpdate, StepSize


@dataclass(frozen=True)
class KroneckerStep:
    """A Kronecker-factored preconditioner of the inner gradient (Meta-Curvature style).

    ``factors`` holds, for an adapted weight matrix ``W`` of shape (out, in),
    ``"<W>/L"`` (out, out) and ``"<W>/R"`` (in, in); for a vector parameter
    ``v`` (a bias, the log-std) ``"<v>/diag"`` of ``v``'s shape.  The step is

        W' = W - alpha * L @ grad_W @ R,     v' = v - alpha * diag * grad_v,

    i.e. ``vec(W') = vec(W) - alpha (R^T kron L) vec(grad_W)``.  With
    ``L = R = I`` and ``diag = 1`` (the initialisation) it is plain SGD with
    step ``alpha``; a parameter without factors also takes the plain step.
    Gradients may be stacked per task, ``(N, out, in)`` / ``(N, *shape)``:
    the factors are shared by the tasks and broadcast.
    """

    alpha: float
    factors: Mapping[str, Tensor]

    def __call__(self, name: str, grad: Tensor) -> Tensor:
        """The step ``alpha * L grad R`` (or ``alpha * diag * grad``) that is subtracted from ``name``."""
        left, right, diag = (self.factors.get(f"{name}/{part}") for part in ("L", "R", "diag"))
        if left is not None and right is not None:
            return self.alpha * torch.matmul(torch.matmul(left, grad), right)
        if diag is not None:
            return self.alpha * diag * grad
        return self.alpha * grad

    @staticmethod
    def identity_factors(params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        """Factors at the identity for the parameters ``names`` (2-d: L, R; others: diag), detached leaves."""
        out: dict[str, Tensor] = OrderedDict()
        for k in names:
            v = params[k].detach()
            if v.dim() == 2:
                out[f"{k}/L"] = torch.eye(v.shape[0], dtype=v.dtype, device=v.device).requires_grad_()
                out[f"{k}/R"] = torch.eye(v.shape[1], dtype=v.dtype, device=v.device).requires_grad_()
            else:
                out[f"{k}/diag"] = torch.ones_like(v).requires_grad_()
        return out

    def detached(self) -> KroneckerStep:
        """The same preconditioner with constant factors (test-time adaptation)."""
        return KroneckerStep(self.alpha, OrderedDict((k, v.detach()) for k, v in self.factors.items()))


class Kronecker(InnerUpdate):
    prefix = "precond/"
    learned = True
    gauss_newton = False

    def init_params(self, params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        return KroneckerStep.identity_factors(params, names)

    def step(self, learned: Mapping[str, Tensor]) -> StepSize:
        return KroneckerStep(self.inner_lr, OrderedDict(learned))

    def scalars(self, learned: Mapping[str, Tensor]) -> dict[str, float]:
        """The preconditioner's largest distance from the identity, ``max ||L - I||_F`` over factors."""
        dev = [float(torch.linalg.norm(v.detach() - (torch.eye(v.shape[0], dtype=v.dtype, device=v.device)
                                                       if v.dim() == 2 else torch.ones_like(v))))
               for v in learned.values()]
        return {"kronecker/max_dev_from_identity": max(dev, default=0.0)}

    def describe(self) -> str:
        return f"learned Kronecker preconditioner, inner lr {self.inner_lr}"
