"""Edges of the learner base that the mutation run found unpinned: the inner-update
messages, the defaults of ``adapt``, advantage normalisation, config reading,
checkpoint key checks, test-time adaptation of the adapted names only, and
Meta-SGD step sizes for names that were not learned."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from metarl.algos.base import MetaLearner, resolve_inner_update
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.episodes import normalize
from tests.helpers_core import random_batch, tiny_policy


def test_inner_update_errors_say_what_is_allowed():
    with pytest.raises(ValueError,
                       match=r"^algo.inner_update must be one of sgd, meta_sgd, kronecker, lstm, blur, got 'adam'$"):
        resolve_inner_update("adam", False)
    with pytest.raises(ValueError, match=r"^algo.learn_inner_lr: true means inner_update meta_sgd, which "
                                         r"contradicts algo.inner_update: 'kronecker' \(set learn_inner_lr: "
                                         r"false\)$"):
        resolve_inner_update("kronecker", True)


def test_adapt_defaults_to_first_order_and_honours_steps():
    policy = tiny_policy()
    learner = MAMLTRPO(policy, list(policy.params()), inner_lr=0.1, inner_steps=1)
    batch = random_batch()
    adv = learner.advantages(batch)
    meta = learner.meta_params()

    def grad(adapted):
        return torch.autograd.grad(adapted["head.weight"].pow(2).sum(), meta["head.weight"])[0]

    torch.testing.assert_close(grad(learner.adapt(batch, adv)), grad(learner.adapt(batch, adv, create_graph=False)))
    assert (grad(learner.adapt(batch, adv)) - grad(learner.adapt(batch, adv, create_graph=True))).abs().max() > 1e-4
    two = learner.adapt(batch, adv, steps=2)
    twice = MAMLTRPO(policy, list(policy.params()), inner_lr=0.1, inner_steps=2).adapt(batch, adv)
    torch.testing.assert_close(two["head.weight"], twice["head.weight"])
    assert not torch.allclose(two["head.weight"], learner.adapt(batch, adv)["head.weight"])


def test_advantages_are_normalised_only_when_asked():
    policy, batch = tiny_policy(), random_batch()
    on = MAMLTRPO(policy, list(policy.params()), normalize_advantages=True).advantages(batch)
    off = MAMLTRPO(policy, list(policy.params()), normalize_advantages=False).advantages(batch)
    torch.testing.assert_close(on, normalize(off, batch.mask))
    assert not torch.allclose(on, off)


def test_from_config_reads_the_algo_section_and_checkpoints_name_their_keys():
    policy = tiny_policy()
    algo = SimpleNamespace(inner_lr=0.25, inner_steps=2, first_order=True, learn_inner_lr=False,
                           inner_update="sgd", gamma=0.9, gae_lambda=0.95, normalize_advantages=False)
    # the base class's reading of the algo section (MAMLTRPO's own adds the trpo section)
    learner = MetaLearner.from_config.__func__(MAMLTRPO, SimpleNamespace(algo=algo), policy, policy.head_names())
    assert (learner.inner_lr, learner.inner_steps, learner.first_order, learner.gamma, learner.gae_lambda,
            learner.normalize_advantages) == (0.25, 2, True, 0.9, 0.95, False)
    state = learner.state_dict()
    del state["log_std"]
    with pytest.raises(KeyError, match=r"checkpoint holds \['body.0.bias', .*\], the learner needs \[.*'log_std'\]"):
        learner.load_state_dict(state)


def test_test_time_adaptation_adapts_only_the_adapted_names():
    policy, batch = tiny_policy(), random_batch()
    learner = MAMLTRPO(policy, policy.head_names(), inner_lr=0.1)
    adv = learner.advantages(batch)
    out = learner.adapt_further(policy.params(), batch, adv, steps=2)
    want = learner.adapt(batch, adv, steps=2)
    for k in policy.params():
        assert not out[k].requires_grad
        torch.testing.assert_close(out[k], want[k].detach())
    assert out["body.0.weight"].shape == policy.params()["body.0.weight"].shape  # not stacked, not adapted


def test_meta_sgd_step_sizes_cover_names_that_were_not_learned():
    policy = tiny_policy()
    learner = MAMLTRPO(policy, policy.head_names(), inner_lr=0.1, inner_update="meta_sgd")
    with torch.no_grad():
        learner.lr_params["head.bias"].fill_(0.3)
    lr = learner.step_size(list(policy.params()))
    assert list(lr) == list(policy.params())
    assert torch.equal(lr["head.bias"], torch.full_like(policy.head.bias, 0.3))
    assert torch.equal(lr["body.0.weight"], torch.full_like(policy.body[0].weight, 0.1))
    assert not any(v.requires_grad for v in lr.values())
    assert list(learner.step_size()) == policy.head_names()


def test_state_scalars_against_a_hand_computation():
    policy = tiny_policy()
    assert MAMLTRPO(policy, policy.head_names()).state_scalars() == {}
    sgd = MAMLTRPO(policy, policy.head_names(), inner_lr=0.1, inner_update="meta_sgd")
    with torch.no_grad():
        sgd.lr_params["head.bias"].copy_(torch.tensor([0.2, 0.6], dtype=torch.float64))
    lrs = [0.1] * policy.head.weight.numel() + [0.2, 0.6]
    mean = sum(lrs) / len(lrs)
    std = (sum((x - mean) ** 2 for x in lrs) / (len(lrs) - 1)) ** 0.5
    got = sgd.state_scalars()
    assert list(got) == ["meta_sgd/lr_mean", "meta_sgd/lr_std"]
    assert got["meta_sgd/lr_mean"] == pytest.approx(mean, rel=1e-12)
    assert got["meta_sgd/lr_std"] == pytest.approx(std, rel=1e-12)
    kron = MAMLTRPO(policy, policy.head_names(), inner_lr=0.1, inner_update="kronecker")
    assert kron.state_scalars() == {"kronecker/max_dev_from_identity": 0.0}
    with torch.no_grad():
        kron.precond_params["head.weight/L"][0, 1] += 0.3  # ||L - I||_F = 0.3
        kron.precond_params["head.weight/R"][2, 2] -= 0.4  # ||R - I||_F = 0.4
        kron.precond_params["head.bias/diag"][1] += 0.5  # ||diag - 1|| = 0.5, the largest
    assert kron.state_scalars() == {"kronecker/max_dev_from_identity": pytest.approx(0.5, rel=1e-12)}
    with torch.no_grad():
        kron.precond_params["head.weight/L"][1, 0] += 0.4  # L - I now holds 0.3, 0.4 and 1.2: the largest
        kron.precond_params["head.weight/L"][0, 0] += 1.2
    want = (0.3**2 + 0.4**2 + 1.2**2) ** 0.5
    assert kron.state_scalars() == {"kronecker/max_dev_from_identity": pytest.approx(want, rel=1e-12)}
    assert MAMLTRPO(policy, [], inner_update="kronecker").state_scalars() == {"kronecker/max_dev_from_identity": 0.0}
