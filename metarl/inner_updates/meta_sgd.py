"""``meta_sgd``: learned per-entry step sizes (Li et al. 2017, Meta-SGD).

``W' = W - a * g`` with ``a`` of ``W``'s shape, initialised at ``algo.inner_lr``
and meta-learned, named ``inner_lr/<param>``. The old config switch
``algo.learn_inner_lr: true`` means this rule.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from metarl.inner_updates.base import InnerUpdate, StepSize


class MetaSGD(InnerUpdate):
    prefix = "inner_lr/"
    learned = True

    def init_params(self, params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        return OrderedDict((k, torch.full_like(params[k], self.inner_lr).detach().requires_grad_()) for k in names)

    def step(self, learned: Mapping[str, Tensor]) -> StepSize:
        return OrderedDict(learned)

    def constant_step(self, learned: Mapping[str, Tensor], params: Mapping[str, Tensor],
                      names: Sequence[str]) -> StepSize:
        return OrderedDict((k, learned[k].detach() if k in learned else torch.full_like(params[k], self.inner_lr))
                           for k in names)

    def scalars(self, learned: Mapping[str, Tensor]) -> dict[str, float]:
        if not learned:
            return {}
        lrs = torch.cat([v.detach().reshape(-1) for v in learned.values()])
        return {"meta_sgd/lr_mean": float(lrs.mean()), "meta_sgd/lr_std": float(lrs.std())}

    def describe(self) -> str:
        return "Meta-SGD learned step sizes"
