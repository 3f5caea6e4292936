"""Core formulas against references written independently of the library code.

Gaussian densities and KLs against ``torch.distributions``; one inner step
computed by hand at a non-default step size for MAML, ANIL and Meta-SGD; the
first-order meta-gradient from its definition; the linear baseline against a
least-squares fit on features written out here; the learner's and the
worker's forward passes against a hand-written MLP for every activation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import envs
from benchmarks.synthetic import ant_like_arrays
from metarl.config import load_config
from metarl.episodes import EpisodeBatch
from metarl.policies import ACTIVATIONS, GaussianMLPPolicy, gaussian_kl, gaussian_log_prob
from metarl.run import build_learner
from metarl.sampling import PolicySpec, SerialSampler
from tests.helpers_core import random_batch, tiny_policy

LR = 0.37  # deliberately not the default inner_lr (0.1)
HAND_ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0)}


# -- Gaussian log-density and KL ---------------------------------------------------------

def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    log_std = 0.7 * torch.randn(4, generator=g, dtype=torch.float64)
    actions = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    want = Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, actions), want, rtol=1e-6, atol=1e-6)
    # through the policy, with per-task stacked log-stds
    policy = tiny_policy(obs_dim=3, act_dim=2)
    params = {k: v.detach() + 0.2 * torch.randn(3, *v.shape, generator=g, dtype=torch.float64)
              for k, v in policy.params().items()}
    obs = torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    act = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    mean, log_std = policy(obs, params)  # the stacked log-std comes back as (N, 1, act_dim)
    want = Normal(mean, params["log_std"].exp().unsqueeze(1)).log_prob(act).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, act), want, rtol=1e-6, atol=1e-6)


def test_gaussian_kl_matches_torch_distributions_in_its_argument_order():
    g = torch.Generator().manual_seed(1)
    mp, mq = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    lp, lq = 0.8 * torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    want = kl_divergence(Normal(mp, lp.exp()), Normal(mq, lq.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mp, lp, mq, lq), want, rtol=1e-6, atol=1e-6)
    reverse = kl_divergence(Normal(mq, lq.exp()), Normal(mp, lp.exp())).sum(-1)
    assert (want - reverse).abs().max() > 1e-2  # the test can tell the directions apart


def test_trust_region_kl_is_kl_from_the_old_policies_to_the_new():
    learner, train, train_adv, valid, valid_adv = learner_and_batches("all", learn_lr=False)
    old = learner.old_outputs(train, train_adv, valid)
    g = torch.Generator().manual_seed(7)
    cand = {k: v.detach() + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)
            for k, v in learner.meta_params().items()}
    cand["log_std"] = cand["log_std"] + 0.4  # different stds make the two directions differ
    _, kl = learner.objective(cand, train, train_adv, valid, valid_adv, old, create_graph=False)
    with torch.no_grad():
        adapted = learner.adapt(train, train_adv, cand)
        mean, log_std = learner.policy(valid.flat_obs(), adapted)
    n, t, b = valid.mask.shape
    new = Normal(mean, log_std.exp().expand_as(mean))
    before = Normal(old.mean, old.log_std.exp().expand_as(old.mean))
    mask = valid.mask.reshape(n, t * b)

    def masked_mean(x):
        return ((x * mask).sum(1) / mask.sum(1)).mean()

    want = masked_mean(kl_divergence(before, new).sum(-1)).detach()
    wrong = masked_mean(kl_divergence(new, before).sum(-1)).detach()
    assert abs(float(want - wrong)) > 1e-3 * float(want)
    torch.testing.assert_close(kl, want, rtol=1e-9, atol=1e-12)


# -- one inner step by hand ---------------------------------------------------------------

def learner_and_batches(adapt_mode: str, learn_lr: bool):
    """A learner built from a config at inner_lr = LR, with double-precision tiny batches."""
    sets = [f"algo.inner_lr={LR}", f"policy.adapt={adapt_mode}", f"algo.learn_inner_lr={str(learn_lr).lower()}",
            "policy.hidden_sizes=[5]", "policy.init_log_std=-0.3"]
    cfg = load_config(None, sets)
    family = envs.make_family("Navigation2D")
    learner = build_learner(cfg, family)
    learner.policy.double()
    if learn_lr:  # rebuild the step sizes in double precision
        learner.lr_params = {k: v.detach().double().requires_grad_() for k, v in learner.lr_params.items()}
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in learner.policy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    train = random_batch(obs_dim=2, act_dim=2, seed=1)
    valid = random_batch(obs_dim=2, act_dim=2, seed=2)
    train_adv = torch.randn(train.rewards.shape, generator=g, dtype=torch.float64) * train.mask
    valid_adv = torch.randn(valid.rewards.shape, generator=g, dtype=torch.float64) * valid.mask
    return learner, train, train_adv, valid, valid_adv


def hand_mean(params: dict[str, torch.Tensor], obs: torch.Tensor, activation: str, layers: int) -> torch.Tensor:
    act = torch.tanh if activation == "tanh" else (lambda x: torch.clamp(x, min=0.0))
    x = obs
    for i in range(layers):
        x = act(x @ params[f"body.{i}.weight"].T + params[f"body.{i}.bias"])
    return x @ params["head.weight"].T + params["head.bias"]


def hand_vpg_loss(params: dict[str, torch.Tensor], obs, actions, adv, mask, activation: str, layers: int):
    """``-sum_t log pi(a_t|s_t) A_t / sum_t mask`` for one task's flattened steps."""
    mean = hand_mean(params, obs, activation, layers)
    logp = Normal(mean, params["log_std"].exp()).log_prob(actions).sum(-1)
    return -(logp * adv * mask).sum() / mask.sum()


@pytest.mark.parametrize("adapt_mode,learn_lr", [("all", False), ("head", False), ("all", True)],
                         ids=["MAML", "ANIL", "Meta-SGD"])
def test_one_inner_step_by_hand_at_a_non_default_step_size(adapt_mode, learn_lr):
    learner, train, train_adv, _, _ = learner_and_batches(adapt_mode, learn_lr)
    meta = {k: v.detach() for k, v in learner.policy.params().items()}
    names = list(meta) if adapt_mode == "all" else ["head.weight", "head.bias"]
    assert sorted(learner.adapt_names) == sorted(names)
    if learn_lr:
        for k in names:  # initialised at the configured inner_lr
            torch.testing.assert_close(learner.lr_params[k].detach(), torch.full_like(meta[k], LR), rtol=1e-7, atol=0)
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            for v in learner.lr_params.values():
                v.copy_(0.1 + 0.6 * torch.rand(v.shape, generator=g, dtype=torch.float64))
    adapted = learner.adapt(train, train_adv)
    n, t, b = train.mask.shape
    obs, actions = train.flat_obs(), train.flat_actions()
    adv, mask = train_adv.reshape(n, t * b), train.mask.reshape(n, t * b)
    for i in range(n):
        leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
        loss = hand_vpg_loss(leaves, obs[i], actions[i], adv[i], mask[i], "tanh", 1)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        for k in meta:
            if k in names:
                step = learner.lr_params[k].detach() if learn_lr else LR
                want = meta[k] - step * grads[k]
                torch.testing.assert_close(adapted[k][i].detach(), want, rtol=1e-10, atol=1e-12)
                assert (grads[k].abs().max() > 1e-6)  # the step moved this parameter
            else:
                assert torch.equal(adapted[k].detach(), meta[k])  # ANIL: the body passes through


@pytest.mark.parametrize("adapt_mode", ["all", "head"])
def test_first_order_meta_gradient_matches_its_definition(adapt_mode):
    """First-order MAML: the gradient of the post-adaptation surrogate w.r.t. the
    adapted parameters, summed over tasks (the inner gradient held constant)."""
    learner, train, train_adv, valid, valid_adv = learner_and_batches(adapt_mode, learn_lr=False)
    learner.first_order = True
    old = learner.old_outputs(train, train_adv, valid)
    meta = learner.meta_params()
    loss, _ = learner.objective(meta, train, train_adv, valid, valid_adv, old, create_graph=True)
    analytic = torch.autograd.grad(loss, list(meta.values()))

    with torch.no_grad():
        adapted = learner.adapt(train, train_adv)
    n, t, b = valid.mask.shape
    obs, actions = valid.flat_obs(), valid.flat_actions()
    adv, mask = valid_adv.reshape(n, t * b), valid.mask.reshape(n, t * b)
    old_logp = old.logp.reshape(n, t * b)
    # the adapted entries are leaves per task; the others are the meta-parameters themselves
    leaves = {k: (v.detach().clone().requires_grad_() if k in learner.adapt_names else meta[k])
              for k, v in adapted.items()}
    total = 0.0
    for i in range(n):
        p = {k: (v[i] if k in learner.adapt_names else v) for k, v in leaves.items()}
        mean = hand_mean(p, obs[i], "tanh", 1)
        logp = Normal(mean, p["log_std"].exp()).log_prob(actions[i]).sum(-1)
        ratio = torch.exp(logp - old_logp[i])
        total = total - (ratio * adv[i] * mask[i]).sum() / mask[i].sum()
    total = total / n
    grads = torch.autograd.grad(total, list(leaves.values()))
    for (k, g), a in zip(zip(leaves, grads), analytic):
        want = g.sum(0) if k in learner.adapt_names else g
        torch.testing.assert_close(a, want, rtol=1e-6, atol=1e-9, msg=k)
    # and it is not the exact (second-order) gradient
    learner.first_order = False
    exact = torch.autograd.grad(
        learner.objective(meta, train, train_adv, valid, valid_adv, old, create_graph=True)[0],
        list(meta.values()))
    assert max(float((a - e).abs().max()) for a, e in zip(analytic, exact)) > 1e-6


# -- linear baseline ---------------------------------------------------------------------

def test_linear_baseline_is_the_least_squares_fit_on_written_out_features():
    from metarl import baselines

    n, t, b, d, gamma, reg = 2, 25, 4, 3, 0.95, 1e-5
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, t, b, d))
    rewards = rng.normal(size=(n, t, b)) + obs[..., 0] ** 2  # not exactly linear in the features
    mask = np.ones((n, t, b))
    mask[0, 17:, 1] = 0.0  # early terminations
    mask[1, 5:, 3] = 0.0
    rewards = rewards * mask
    batch = EpisodeBatch(torch.tensor(obs), torch.zeros(n, t, b, 1, dtype=torch.float64), torch.tensor(rewards),
                         torch.tensor(mask))
    got = baselines.fit_predict(batch, gamma).numpy()  # the default ridge, 1e-5
    for i in range(n):
        rows, targets, where = [], [], []
        for e in range(b):
            ret = 0.0
            rtg = np.zeros(t)
            for s in reversed(range(t)):
                ret = rewards[i, s, e] + gamma * ret * mask[i, s, e]
                rtg[s] = ret
            for s in range(t):
                if mask[i, s, e]:
                    o = obs[i, s, e]
                    u = s / 100.0
                    rows.append(np.concatenate([o, o**2, [u, u**2, u**3, 1.0]]))
                    targets.append(rtg[s])
                    where.append((s, e))
        x, y = np.array(rows), np.array(targets)
        w = np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ y)
        pred = x @ w
        for (s, e), v in zip(where, pred):
            assert got[i, s, e] == pytest.approx(v, rel=1e-6, abs=1e-6)
        masked = [(s, e) for s in range(t) for e in range(b) if not mask[i, s, e]]
        assert all(got[i, s, e] == 0.0 for s, e in masked)


def _ridge_predictions(obs, rewards, mask, gamma, reg):
    """Per task: the ridge fit's predictions on the live steps, by numpy's least squares on the stacked
    system [X; sqrt(reg) I] w = [y; 0] (SVD based: the minimum-norm solution where it is not unique)."""
    n, t, b, _ = obs.shape
    out = np.zeros((n, t, b))
    for i in range(n):
        rtg = np.zeros((t, b))
        ret = np.zeros(b)
        for s in reversed(range(t)):
            ret = rewards[i, s] + gamma * ret * mask[i, s]
            rtg[s] = ret
        u = (np.arange(t) / 100.0)[:, None, None] * np.ones((t, b, 1))
        feats = np.concatenate([obs[i], obs[i] ** 2, u, u**2, u**3, np.ones_like(u)], axis=-1) * mask[i][..., None]
        x, y = feats.reshape(t * b, -1), (rtg * mask[i]).reshape(-1)
        f = x.shape[1]
        a = np.concatenate([x, np.sqrt(reg) * np.eye(f)])
        w = np.linalg.lstsq(a, np.concatenate([y, np.zeros(f)]), rcond=None)[0]
        out[i] = (x @ w).reshape(t, b) * mask[i]
    return out


def test_baseline_normal_equations_match_least_squares_on_ant_sized_features():
    """Ant's 242 features, many of them constant zero, large velocity squares: the Cholesky solve of the
    normal equations predicts what least squares on the stacked ridge system predicts."""
    from metarl import baselines

    obs, rewards, mask = ant_like_arrays()
    batch = EpisodeBatch(torch.tensor(obs), torch.zeros(*mask.shape, 1, dtype=torch.float64),
                         torch.tensor(rewards), torch.tensor(mask))
    got = baselines.fit_predict(batch, 0.99).numpy()
    want = _ridge_predictions(obs, rewards, mask, 0.99, 1e-5)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7 * scale)
    assert np.all(got[mask == 0] == 0.0)


def test_baseline_falls_back_to_least_squares_where_cholesky_fails(monkeypatch):
    """No ridge and a feature that is zero throughout: the normal matrix is singular, Cholesky reports it,
    and that task alone is solved by least squares, whose predictions (unique, unlike its weights) match."""
    from metarl import baselines

    obs, rewards, mask = ant_like_arrays(n=2, t=30, b=4, seed=1)
    obs = obs[..., :20].copy()
    obs[1, ..., 3] = 0.0  # task 1 only: one observation dimension never moves
    calls = []
    real = torch.linalg.lstsq
    monkeypatch.setattr(torch.linalg, "lstsq", lambda a, b, **kw: calls.append(a.shape[0]) or real(a, b, **kw))
    batch = EpisodeBatch(torch.tensor(obs), torch.zeros(*mask.shape, 1, dtype=torch.float64),
                         torch.tensor(rewards), torch.tensor(mask))
    got = baselines.fit_predict(batch, 0.9, reg=0.0).numpy()
    assert calls == [1]  # one task, task 1, went to least squares
    want = _ridge_predictions(obs, rewards, mask, 0.9, 0.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max())


# -- forward passes: module, functional, worker -----------------------------------------

@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_learner_and_worker_forward_passes_equal_a_hand_written_mlp(activation):
    assert set(ACTIVATIONS) == set(HAND_ACT)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, (6, 5), activation, init_log_std=-0.5)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(4, 9, 3, generator=g)
    p = {k: v.detach().numpy().astype(np.float64) for k, v in policy.params().items()}
    x = obs.numpy().astype(np.float64)
    for i in range(2):
        x = HAND_ACT[activation](x @ p[f"body.{i}.weight"].T + p[f"body.{i}.bias"])
    want = x @ p["head.weight"].T + p["head.bias"]
    assert (x <= 0).mean() > 0.1 if activation == "relu" else (np.abs(x) > 0.5).mean() > 0.05
    mean, log_std = policy(obs)
    np.testing.assert_allclose(mean.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(log_std.detach().numpy(), p["log_std"])
    # functional forward at a different parameter dict: its own log_std, not the module's
    other = {k: v.detach() + 1.0 for k, v in policy.params().items()}
    _, other_log_std = policy(obs, other)
    np.testing.assert_allclose(other_log_std.detach().numpy(), p["log_std"] + 1.0, rtol=1e-6)

    # the worker: with a tiny std its actions are the policy mean at the recorded observations
    family = envs.make_family("HalfCheetahVel", horizon=8)
    wpolicy = GaussianMLPPolicy(family.obs_dim, family.act_dim, (6, 5), activation, init_log_std=-30.0)
    with torch.no_grad():
        for name, q in wpolicy.named_parameters():
            if name != "log_std":
                q.add_(0.3 * torch.randn_like(q))
    tasks = family.sample_tasks(2, np.random.default_rng(0))
    batch = SerialSampler(family, PolicySpec.of(wpolicy)).sample(tasks, wpolicy.params(), 2, seed=3)
    q = {k: v.detach().numpy().astype(np.float64) for k, v in wpolicy.params().items()}
    h = batch.obs.numpy().astype(np.float64)
    for i in range(2):
        h = HAND_ACT[activation](h @ q[f"body.{i}.weight"].T + q[f"body.{i}.bias"])
    want = h @ q["head.weight"].T + q["head.bias"]
    np.testing.assert_allclose(batch.actions.numpy(), want, rtol=1e-4, atol=1e-5)
    learner_mean, _ = wpolicy(batch.obs)
    np.testing.assert_allclose(batch.actions.numpy(), learner_mean.detach().numpy(), rtol=1e-4, atol=1e-5)


# -- evaluation statistics ----------------------------------------------------------------

def test_adaptation_curve_standard_error_is_the_sample_std_over_root_n():
    from metarl.evaluation import adaptation_curve

    cfg = load_config(None, ["policy.hidden_sizes=[4]", "env.horizon=10"])
    family = envs.make_family("Navigation2D", horizon=10)
    learner = build_learner(cfg, family)
    sampler = SerialSampler(family, PolicySpec.of(learner.policy))
    curve = adaptation_curve(learner, family, sampler, num_tasks=4, steps=1, episodes_per_task=2, seed=0)
    for k, returns in enumerate(curve["per_task"]):
        n = len(returns)
        mean = sum(returns) / n
        sample_std = (sum((r - mean) ** 2 for r in returns) / (n - 1)) ** 0.5  # ddof = 1
        assert curve["mean"][k] == pytest.approx(mean, rel=1e-12)
        assert curve["stderr"][k] == pytest.approx(sample_std / n**0.5, rel=1e-9)
        assert sample_std > 0
