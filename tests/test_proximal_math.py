"""Edges of the proximal outer loops' maths that the mutation run found unpinned:
the clip's lower bound, the clip fraction against a hand count, the adaptive KL
rule's boundaries and Adam's length check."""

from __future__ import annotations

import math

import pytest
import torch

from metarl.algos.proximal import adam_update, clip_fraction, clipped_surrogate, next_kl_coef


def test_clipped_surrogate_against_a_hand_computation():
    ratio = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.6, 0.5], dtype=torch.float64)
    adv = torch.tensor([-1.0, 2.0, 1.0, -3.0, 1.0, 4.0], dtype=torch.float64)
    eps = 0.2
    # min(r A, clip(r, 0.8, 1.2) A) step by step
    want = [min(r * a, min(max(r, 1 - eps), 1 + eps) * a) for r, a in zip(ratio.tolist(), adv.tolist())]
    assert want[0] == -0.8 and want[4] == 1.2
    logp = torch.log(ratio).view(1, 6, 1)
    got = clipped_surrogate(logp, torch.zeros_like(logp), adv.view(1, 6, 1), torch.ones_like(logp), eps)
    assert got.item() == pytest.approx(-sum(want) / 6, rel=1e-12)


def test_clip_fraction_counts_live_steps_strictly_outside_the_range():
    logp = torch.log(torch.tensor([[0.5, 1.1, 1.5, 3.0]], dtype=torch.float64)).view(1, 4, 1)
    old = torch.full_like(logp, math.log(1.0))
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64).view(1, 4, 1)
    assert clip_fraction(logp + 0.7, old + 0.7, mask, 0.3) == pytest.approx(2 / 3)  # 0.5, 1.5 out; 3.0 masked
    one = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).view(1, 4, 1)
    assert clip_fraction(logp, old, one, 0.3) == 1.0  # a single live step, outside
    same = torch.zeros_like(logp)
    assert clip_fraction(same, same, mask, 0.0) == 0.0  # ratio exactly 1 is not outside [1, 1]


def test_adaptive_kl_rule_keeps_the_coefficient_on_its_boundaries():
    target = 0.03
    assert next_kl_coef(0.4, target / 1.5, target) == 0.4
    assert next_kl_coef(0.4, target * 1.5, target) == 0.4
    assert next_kl_coef(0.4, 0.5 * target / 1.5, target) == 0.2
    assert next_kl_coef(0.4, 2.0 * target * 1.5, target) == 0.8


def test_adam_update_rejects_lists_of_different_lengths():
    p = [torch.zeros(2), torch.zeros(3)]
    with pytest.raises(ValueError):
        adam_update(p, [torch.ones(2)], [torch.zeros(2), torch.zeros(3)], [torch.zeros(2), torch.zeros(3)],
                    1, 1e-3, 0.9, 0.999, 1e-8)
