"""The Gauss-Newton products do the matmul work their derivation says, and no more.

``benchmarks/flops_outer_step.py`` counts matmul FLOPs with torch's formulas;
here the counts of one curvature product are compared with the closed-form
cost of the derivation in ``metarl.algos.curvature`` for a (h1, h2) tanh body,
obs ``o``, act ``a`` and ``R`` train and ``R`` valid rows, in multiply-adds per row:

* MAML, one inner step: two inner Hessian-vector products on the train rows,
  ``2 o h1 + 6 h1 h2 + 6 h2 a`` each (forward tangents, then the tangent of
  the backward pass), and a Fisher product on the valid rows, ``2 o h1 + 4 h1 h2
  + 4 h2 a`` (one tangent, one transpose).
* ANIL: the body's tangent and transpose on the train rows (``2 o h1 + 4 h1
  h2``), the head's closed-form step both ways (``8 h2 a``) and the Fisher.

A product that redoes a pass (or a refactoring that recomputes cached
activations per product) changes the count and fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from metarl.algos.maml_trpo import MAMLTRPO
from metarl.episodes import EpisodeBatch
from metarl.policies import GaussianMLPPolicy

ROOT = Path(__file__).resolve().parents[1]
N, T, B, OBS, H1, H2, A = 3, 5, 4, 3, 5, 7, 2
R = N * T * B


def _bench():
    spec = importlib.util.spec_from_file_location("flops_outer_step", ROOT / "benchmarks" / "flops_outer_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _product_flops(adapt: str) -> int:
    bench = _bench()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(OBS, A, (H1, H2))
    train, valid = (EpisodeBatch(torch.randn(N, T, B, OBS), torch.randn(N, T, B, A), torch.randn(N, T, B),
                                 torch.ones(N, T, B)) for _ in range(2))
    names = [k for k, _ in policy.named_parameters()] if adapt == "all" else policy.head_names()
    learner = MAMLTRPO(policy, names)
    adv = learner.advantages(train)
    meta = learner.meta_params()
    hvp = learner.curvature(meta, train, adv, valid, learner.advantages(valid).detach(),
                            learner.old_outputs(train, adv, valid))
    v = torch.randn(sum(p.numel() for p in meta.values()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # chunks inline, under the counter
    try:
        return bench.count(lambda: hvp(v))
    finally:
        torch.set_num_threads(threads)


FISHER = 2 * OBS * H1 + 4 * H1 * H2 + 4 * H2 * A


@pytest.mark.parametrize("adapt, per_row", [
    ("all", 2 * (2 * OBS * H1 + 6 * H1 * H2 + 6 * H2 * A) + FISHER),
    ("head", (2 * OBS * H1 + 4 * H1 * H2) + 8 * H2 * A + FISHER),
])
def test_product_flops_match_the_derivation(adapt, per_row):
    assert _product_flops(adapt) == 2 * R * per_row


def test_counter_counts_in_place_accumulation_like_its_out_of_place_form():
    bench = _bench()
    x, w, acc = torch.randn(6, 4), torch.randn(4, 3), torch.zeros(6, 3)
    xb, wb, accb = torch.randn(2, 6, 4), torch.randn(2, 4, 3), torch.zeros(2, 6, 3)
    assert bench.count(lambda: torch.addmm(acc, x, w)) == bench.count(lambda: acc.addmm_(x, w)) == 2 * 6 * 4 * 3
    assert bench.count(lambda: torch.baddbmm(accb, xb, wb)) == bench.count(lambda: accb.baddbmm_(xb, wb)) \
        == 2 * 2 * 6 * 4 * 3
