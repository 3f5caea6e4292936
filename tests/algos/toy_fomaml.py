"""A one-file outer loop: first-order MAML with a plain gradient step.

Registers itself as ``algo.name: toy_fomaml``; pass this file to
``metarl train --module`` to use it.  Its one setting of its own,
``toy_fomaml.lr`` (the outer step size), lives in its own config section.  The outer step is the mean over tasks
of the post-adaptation VPG gradient, evaluated at the adapted parameters and
applied to the meta-parameters (first order: the inner loop is not
differentiated).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from metarl.adaptation import vpg_loss
from metarl.algos import MetaLearner, StepResult, register_algo
from metarl.episodes import EpisodeBatch


@dataclass
class ToyFOMAMLSettings:
    lr: float = 0.01
    """Outer step size."""

    def validate(self, need) -> None:
        need(self.lr > 0, "lr", self.lr, "must be > 0")


@dataclass
class ToyFOMAML(MetaLearner):
    toy_fomaml: ToyFOMAMLSettings = field(default_factory=ToyFOMAMLSettings)

    Settings: ClassVar[type] = ToyFOMAMLSettings
    section: ClassVar[str] = "toy_fomaml"
    scalar_prefix: ClassVar[str] = "toy"

    def step(self, train: EpisodeBatch, valid: EpisodeBatch, adapted: Mapping[str, Tensor],
             train_adv: Tensor | None = None) -> StepResult:
        if not bool(torch.isfinite(valid.rewards).all()):
            return StepResult(self.rejected_scalars(), rejected=True)
        valid_adv = self.advantages(valid)
        leaves = {k: v.detach().clone().requires_grad_() for k, v in adapted.items()}
        loss = vpg_loss(self.policy, leaves, valid, valid_adv).mean()  # (N,) -> mean over tasks
        grads = torch.autograd.grad(loss, list(leaves.values()))
        meta = self.policy.params()
        with torch.no_grad():
            for (k, leaf), g in zip(leaves.items(), grads):
                # a stacked (adapted) entry's gradient is per task and already divided by N
                meta[k].sub_(self.toy_fomaml.lr * (g.sum(0) if leaf.dim() > meta[k].dim() else g))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        return StepResult({"toy/loss": float(loss.detach()), "toy/grad_norm": float(norm)})

    def rejected_scalars(self) -> dict[str, float]:
        return {"toy/loss": float("nan"), "toy/grad_norm": float("nan")}


register_algo("toy_fomaml", ToyFOMAML)
