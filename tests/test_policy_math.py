"""Edges of the policy that the mutation run found unpinned: defaults, evaluation at
the module's own parameters, layer outputs at other parameters, and the messages of
the shape checks."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from metarl.policies import GaussianMLPPolicy, stack_params, unflatten
from tests.helpers_core import tiny_policy


def test_defaults_are_two_tanh_layers_of_64_and_unit_std():
    policy = GaussianMLPPolicy(3, 2)
    assert policy.activation == "tanh" and policy.hidden_sizes == (64, 64)
    assert torch.equal(policy.log_std.detach(), torch.zeros(2))
    obs = torch.randn(5, 3)
    h = torch.tanh(policy.body[1](torch.tanh(policy.body[0](obs))))
    torch.testing.assert_close(policy.features(obs), h)


def test_every_evaluation_defaults_to_the_modules_parameters_and_follows_given_ones():
    policy, other = tiny_policy(), tiny_policy(seed=7)
    obs = torch.randn(4, 3, dtype=torch.float64)
    own, theirs = policy.params(), other.params()
    torch.testing.assert_close(policy.features(obs), policy.features(obs, own))
    h = policy.features(obs)
    torch.testing.assert_close(policy.head_mean(h), policy.head_mean(h, own))
    for got, want in zip(policy.layer_outputs(obs), policy.layer_outputs(obs, own)):
        torch.testing.assert_close(got, want)
    for got, want in zip(policy.layer_outputs(obs, theirs), other.layer_outputs(obs)):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(policy.layer_outputs(obs, theirs)[-1], policy.layer_outputs(obs)[-1])
    torch.testing.assert_close(policy.layer_outputs(obs, theirs)[-1], other(obs)[0])


def test_shape_errors_name_the_parameter_and_both_accepted_shapes():
    policy = tiny_policy()
    like = policy.params()
    bad = OrderedDict(like)
    bad["head.weight"] = torch.zeros(4, 2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^parameter head\.weight has shape \(4, 2, 5\), expected \(2, 5\) "
                                         r"or \(3, 2, 5\)$"):
        stack_params(bad, like, 3)
    n = sum(v.numel() for v in like.values())
    with pytest.raises(ValueError, match=rf"^flat vector has {n + 1} entries, parameters need {n}$"):
        unflatten(torch.zeros(n + 1, dtype=torch.float64), like)
