"""The bidirectional learned rule (``algo.inner_update: blur``).

The gradient genome reproduces the plain policy-gradient step to float
rounding (MAML and ANIL, one and two steps); another genome changes the step;
the meta-gradient w.r.t. the genome matches finite differences (float64); the
outer loops train the genome.
"""

from __future__ import annotations

import pytest
import torch

from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.algos import MAMLTRPO, ProMP
from metarl.config import ConfigError, load_config
from metarl.inner_updates.blur import GENOME, BLURSettings, gradient_genome
from tests.helpers_core import random_batch, tiny_policy

NAV = "experiments/configs/navigation2d.yaml"


def learner(mode: str = "all", steps: int = 1, states: int = 2, activation: str = "tanh", cls=MAMLTRPO):
    policy = tiny_policy(hidden=(5, 4), seed=2, activation=activation)
    return cls(policy, adapt_names(policy, mode), inner_lr=0.3, inner_steps=steps, inner_update="blur",
               inner_settings=BLURSettings(states))


def perturbed(lrn):
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for v in lrn.rule_params.values():
            v.add_(0.2 * torch.randn(v.shape, generator=g, dtype=v.dtype))
    return lrn


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("mode", ["all", "head", "head_log_std"])
@pytest.mark.parametrize("steps", [1, 2])
def test_the_gradient_genome_is_the_plain_gradient_step(mode, steps, activation):
    lrn = learner(mode, steps, activation=activation)
    assert sum(v.numel() for v in lrn.rule_params.values()) == 3 * 2 * 2 + 2
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    got = lrn.adapt(batch, adv)
    want = adapt(lrn.policy, lrn.policy.params(), batch, adv, 0.3, steps, True, lrn.adapt_names)
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-13)


def test_three_states_with_the_gradient_genome_are_the_gradient_step_too():
    lrn = learner("all", 1, states=3)
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    got = lrn.adapt(batch, adv)
    want = adapt(lrn.policy, lrn.policy.params(), batch, adv, 0.3, 1, True, lrn.adapt_names)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-13)


def test_another_genome_changes_the_step_and_leaves_unadapted_parameters_alone():
    lrn = perturbed(learner("head"))
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    got = lrn.adapt(batch, adv)
    plain = adapt(lrn.policy, lrn.policy.params(), batch, adv, 0.3, 1, True, lrn.adapt_names)
    assert not torch.allclose(got["head.weight"], plain["head.weight"])
    for k in ("body.0.weight", "body.1.bias", "log_std"):
        assert got[k] is lrn.policy.params()[k]  # not adapted under ANIL: the meta-parameter itself
    assert lrn.state_scalars()["blur/genome_distance"] > 0


def test_meta_gradient_wrt_the_genome_matches_finite_differences():
    lrn = perturbed(learner("all", steps=2))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    adv = torch.randn(train.rewards.shape, dtype=torch.float64)
    vadv = torch.randn(valid.rewards.shape, dtype=torch.float64)

    def loss_of(genome: dict[str, torch.Tensor]) -> torch.Tensor:
        meta = dict(lrn.meta_params())
        meta.update({"blur/" + k: v for k, v in genome.items()})
        return vpg_loss(lrn.policy, lrn.adapt(train, adv, meta, create_graph=True), valid, vadv).mean()

    leaves = {k: lrn.rule_params[k].detach().clone().requires_grad_() for k in GENOME}
    grads = dict(zip(leaves, torch.autograd.grad(loss_of(leaves), list(leaves.values()))))
    eps = 1e-6
    for k, leaf in leaves.items():
        for i in range(leaf.numel()):
            vals = {kk: v.detach().clone() for kk, v in leaves.items()}
            vals[k].view(-1)[i] += eps
            up = loss_of(vals).item()
            vals[k].view(-1)[i] -= 2 * eps
            fd = (up - loss_of(vals).item()) / (2 * eps)
            assert grads[k].reshape(-1)[i].item() == pytest.approx(fd, rel=1e-5, abs=1e-10), (k, i)


@pytest.mark.parametrize("cls", [MAMLTRPO, ProMP])
def test_outer_loops_train_the_genome(cls):
    lrn = perturbed(learner("all", cls=cls))
    train, valid = random_batch(seed=1), random_batch(seed=2)
    adv = lrn.advantages(train)
    adapted = {k: v.detach() for k, v in lrn.adapt(train, adv).items()}
    before = {k: v.detach().clone() for k, v in lrn.rule_params.items()}
    assert not lrn.step(train, valid, adapted, adv).rejected
    assert any(not torch.equal(v.detach(), before[k]) for k, v in lrn.rule_params.items())


def test_settings_and_the_starting_genome():
    cfg = load_config(NAV, ["algo.inner_update=blur", "blur.states=3"])
    assert cfg.blur.states == 3
    with pytest.raises(ConfigError, match=r"^blur.states: must be in \[1, 8\], got 0$"):
        load_config(NAV, ["algo.inner_update=blur", "blur.states=0"])
    g = gradient_genome(2)
    assert torch.equal(g["hebbian"], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(g["inject"], torch.tensor([1.0, 0.0]))


def test_the_gradient_genome_on_a_context_policy_is_the_plain_step():
    from metarl.policies import GaussianMLPPolicy

    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (5,), "tanh", context_size=2).double()
    for mode in ("all", "context"):
        lrn = MAMLTRPO(policy, adapt_names(policy, mode), inner_lr=0.3, inner_update="blur")
        batch = random_batch()
        adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
        got = lrn.adapt(batch, adv)
        params, _ = lrn._split(lrn.meta_params())
        want = adapt(policy, params, batch, adv, 0.3, 1, True, lrn.adapt_names)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-13)


def reference_step(policy, fast, batch, adv, genome, lr, names):
    """The docstring's rule written out per task and per sample with plain matrices (no batching, no einsum):
    the pin for any faster layout of the states."""
    from metarl.losses import vpg_loss_of_outputs
    from metarl.policies import ACTIVATIONS

    act = ACTIVATIONS[policy.activation]
    F, B, H, inject = (genome[k].detach() for k in GENOME)
    k = F.shape[0]
    e0 = torch.zeros(k, dtype=torch.float64)
    e0[0] = 1.0
    obs = batch.flat_obs()
    mean, log_std = policy(obs, fast)
    loss = vpg_loss_of_outputs(mean, log_std, batch, adv, None).sum()
    error, g_log_std = torch.autograd.grad(loss, [mean, fast["log_std"]])
    layers = policy.layer_names()
    out = {}
    for n in range(obs.shape[0]):
        W = {la: fast[f"{la}.weight"][n] if fast[f"{la}.weight"].dim() == 3 else fast[f"{la}.weight"] for la in layers}
        b = {la: fast[f"{la}.bias"][n] if fast[f"{la}.bias"].dim() == 2 else fast[f"{la}.bias"] for la in layers}
        dW = {la: torch.zeros_like(W[la]) for la in layers}
        db = {la: torch.zeros_like(b[la]) for la in layers}
        for m in range(obs.shape[1]):
            P = [torch.outer(obs[n, m].detach(), e0)]
            Z = []
            for i, la in enumerate(layers):
                Z.append((W[la].detach() @ P[i] + torch.outer(b[la].detach(), e0)) @ F)
                if i < len(layers) - 1:
                    P.append(act(Z[i]))
            Q = torch.outer(error[n, m], inject)
            for i in reversed(range(len(layers))):
                la = layers[i]
                dW[la] += Q @ H.T @ P[i].T
                db[la] += Q @ H[0]
                if i > 0:
                    t = torch.tanh(Z[i - 1]) if policy.activation == "tanh" else None
                    slope = 1 - t * t if t is not None else (Z[i - 1] > 0).double()
                    Q = (W[la].detach().T @ Q @ B) * slope
        for la in layers:
            for part, delta in (("weight", dW[la]), ("bias", db[la])):
                name = f"{la}.{part}"
                if name in names:
                    base = fast[name][n] if fast[name].dim() == (3 if part == "weight" else 2) else fast[name]
                    out.setdefault(name, []).append(base.detach() - lr * delta)
    result = {name: torch.stack(v) for name, v in out.items()}
    if "log_std" in names:
        result["log_std"] = fast["log_std"].detach() - lr * g_log_std
    return result


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("mode, steps", [("all", 1), ("all", 2), ("head", 1)])
def test_a_learned_genome_steps_as_the_rule_written_out_per_sample(mode, steps, activation):
    lrn = learner(mode, steps, states=3, activation=activation)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a genome with no symmetry: F, B, H and inject all away from the gradient genome
        for v in lrn.rule_params.values():
            v.add_(0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype))
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    got = lrn.adapt(batch, adv)
    from metarl.adaptation import stack_params

    params, _ = lrn._split(lrn.meta_params())
    fast = stack_params(params, lrn.policy.params(), batch.num_tasks, lrn.adapt_names)  # as the inner loop does
    fast = {k: v.detach().clone().requires_grad_() if k in lrn.adapt_names else v for k, v in fast.items()}
    for _ in range(steps):
        stepped = reference_step(lrn.policy, fast, batch, adv, lrn.rule_params, 0.3, lrn.adapt_names)
        fast = {**fast, **{k: v.requires_grad_() for k, v in stepped.items()}}
    for name in lrn.adapt_names:
        torch.testing.assert_close(got[name].detach(), fast[name].detach(), rtol=1e-10, atol=1e-12)
