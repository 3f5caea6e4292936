"""The inner loop's policy-gradient loss, from the policy's outputs.

Below the inner-update rules and the inner loop (:mod:`metarl.adaptation`),
so a rule that computes its own update (BLUR) uses the same loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.episodes import EpisodeBatch
from metarl.policies import gaussian_log_prob


def vpg_loss_of_outputs(mean: Tensor, log_std: Tensor, batch: EpisodeBatch, advantages: Tensor,
                        reference_logp: Tensor | None = None) -> Tensor:
    """:func:`metarl.adaptation.vpg_loss` from the policy's outputs ``mean (N, T*B, act_dim)`` and
    ``log_std``: ``(N,)``."""
    logp = gaussian_log_prob(mean, log_std, batch.flat_actions())  # (N, T*B)
    n = batch.num_tasks
    mask = batch.mask.reshape(n, -1)
    adv = advantages.detach().reshape(n, -1)
    if reference_logp is not None:
        logp = torch.exp(logp - reference_logp.detach().reshape(n, -1))  # the likelihood ratio
    return -(logp * adv * mask).sum(1) / mask.sum(1).clamp(min=1)
