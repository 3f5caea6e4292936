"""The learned LSTM optimizer (``algo.inner_update: lstm``).

It starts as the plain gradient step (zero output weights, ``residual``),
keeps one LSTM state per coordinate that is zero at every adaptation's start
and carried across inner steps, and its meta-gradient matches finite
differences.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.adaptation import adapt, adapt_names, vpg_loss
from metarl.algos import MAMLTRPO
from metarl.config import ConfigError, load_config
from metarl.inner_updates.lstm import LSTMOptimizer, LSTMSettings, log_and_sign, lstm_cell
from tests.helpers_core import random_batch, tiny_policy

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = ROOT / "experiments" / "configs" / "navigation2d.yaml"


def learner(mode: str = "all", steps: int = 1, **settings) -> MAMLTRPO:
    policy = tiny_policy(seed=4)
    torch.manual_seed(5)
    return MAMLTRPO(policy, adapt_names(policy, mode), inner_lr=0.2, inner_steps=steps, inner_update="lstm",
                    inner_settings=LSTMSettings(**settings))


def with_random_output(lrn: MAMLTRPO) -> MAMLTRPO:
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        lrn.rule_params["out/weight"].copy_(torch.randn(lrn.rule_params["out/weight"].shape, generator=g,
                                                        dtype=torch.float64))
        lrn.rule_params["out/bias"].fill_(0.05)
    return lrn


@pytest.mark.parametrize("mode", ["all", "head"])
@pytest.mark.parametrize("steps", [1, 2])
def test_zero_output_weights_make_it_the_plain_gradient_step(mode, steps):
    lrn = learner(mode, steps)
    assert lrn.rule_params["l1/w_ih"].dtype == torch.float64
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    got = lrn.adapt(batch, adv)
    want = adapt(lrn.policy, lrn.policy.params(), batch, adv, 0.2, steps, True, lrn.adapt_names)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-15)


def test_log_and_sign_preprocessing_by_hand():
    g = torch.tensor([1e-6, -0.5, 3.0, 0.0], dtype=torch.float64)
    x = log_and_sign(g, 10.0)
    assert x.shape == (4, 2)
    torch.testing.assert_close(x[:, 0], torch.tensor([max(torch.log(torch.tensor(1e-6)).item() / 10, -1.0),
                                                      torch.log(torch.tensor(0.5)).item() / 10,
                                                      torch.log(torch.tensor(3.0)).item() / 10, -1.0],
                                                     dtype=torch.float64))
    torch.testing.assert_close(x[:, 1], torch.tensor([1e-6 * torch.e ** 10, -1.0, 1.0, 0.0], dtype=torch.float64))


def test_the_cell_is_torch_lstm():
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(2, 3).double()
    x, h, c = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), \
        torch.randn(5, 3, dtype=torch.float64)
    h2, c2 = lstm_cell(x, h, c, ref.weight_ih, ref.weight_hh, ref.bias_ih + ref.bias_hh)
    h_ref, c_ref = ref(x, (h, c))
    torch.testing.assert_close(h2, h_ref)
    torch.testing.assert_close(c2, c_ref)


def test_state_is_carried_across_steps_and_zero_at_each_start():
    lrn = with_random_output(learner(steps=2))
    batch = random_batch()
    adv = torch.randn(batch.rewards.shape, dtype=torch.float64)
    two = lrn.adapt(batch, adv)
    again = lrn.adapt(batch, adv)  # a new adaptation starts from zero state again: the same result
    for k in two:
        assert torch.equal(two[k], again[k]), k
    # two steps with fresh state each time (one step, then one more from there) differ from one carried state
    one = lrn.adapt(batch, adv, steps=1)
    fresh = adapt(lrn.policy, one, batch, adv, lrn.rule.step(lrn.rule_params), 1, True, lrn.adapt_names)
    assert any(not torch.allclose(fresh[k], two[k]) for k in lrn.adapt_names)


def test_meta_gradient_wrt_the_lstm_weights_matches_finite_differences():
    lrn = with_random_output(learner(mode="head", steps=2))  # two steps: the recurrent weights matter too
    train, valid = random_batch(seed=1), random_batch(seed=2)
    adv = torch.randn(train.rewards.shape, dtype=torch.float64)
    vadv = torch.randn(valid.rewards.shape, dtype=torch.float64)
    keys = ["l1/w_ih", "l2/w_hh", "out/weight"]

    def loss_of(values: dict[str, torch.Tensor]) -> torch.Tensor:
        meta = dict(lrn.meta_params())
        for k, v in values.items():
            meta["lstm/" + k] = v
        adapted = lrn.adapt(train, adv, meta, create_graph=True)
        return vpg_loss(lrn.policy, adapted, valid, vadv).mean()

    leaves = {k: lrn.rule_params[k].detach().clone().requires_grad_() for k in keys}
    grads = torch.autograd.grad(loss_of(leaves), list(leaves.values()))
    g = torch.Generator().manual_seed(3)
    for (k, leaf), grad in zip(leaves.items(), grads):
        assert grad.abs().max() > 1e-8, k
        for i in torch.randperm(leaf.numel(), generator=g)[:4].tolist():
            eps = 1e-6
            vals = {kk: v.detach().clone() for kk, v in leaves.items()}
            vals[k].view(-1)[i] += eps
            up = loss_of(vals).item()
            vals[k].view(-1)[i] -= 2 * eps
            down = loss_of(vals).item()
            assert grad.reshape(-1)[i].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), (k, i)


def test_the_outer_step_trains_the_lstm_and_uses_the_exact_curvature():
    lrn = with_random_output(learner(mode="head"))
    assert not lrn.rule.gauss_newton
    train, valid = random_batch(seed=1), random_batch(seed=2)
    adv = lrn.advantages(train)
    adapted = {k: v.detach() for k, v in lrn.adapt(train, adv).items()}
    before = {k: v.detach().clone() for k, v in lrn.rule_params.items()}
    result = lrn.step(train, valid, adapted, adv)
    assert not result.rejected
    assert any(not torch.equal(v.detach(), before[k]) for k, v in lrn.rule_params.items())
    assert "lstm/out_weight_norm" in lrn.state_scalars()


def test_settings_are_checked():
    assert load_config(NAV_CONFIG, ["algo.inner_update=lstm"]).lstm == LSTMSettings()
    with pytest.raises(ConfigError, match=r"^lstm.hidden_size: must be in \[1, 1024\], got 0$"):
        load_config(NAV_CONFIG, ["algo.inner_update=lstm", "lstm.hidden_size=0"])
    with pytest.raises(ConfigError, match=r"^lstm.output_scale: must be > 0"):
        load_config(NAV_CONFIG, ["algo.inner_update=lstm", "lstm.output_scale=0"])
    assert LSTMOptimizer(0.1).settings == LSTMSettings()


@pytest.mark.integration
def test_hidden_size_zero_exits_2_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "metarl", "train", str(NAV_CONFIG), "--run-dir", str(run_dir),
                        "--set", "algo.inner_update=lstm", "--set", "lstm.hidden_size=0"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["metarl: error: lstm.hidden_size: must be in [1, 1024], got 0"]
    assert not run_dir.exists()
