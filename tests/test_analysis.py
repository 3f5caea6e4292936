"""CKA / SVCCA similarity, per-layer similarity before vs after adaptation on
small trained Navigation2D runs (MAML and ANIL), and the freezing ablation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.analysis.representation import (
    analyze_run,
    format_report,
    freeze_ablation,
    relative_change,
    representation_similarity,
)
from metarl.analysis.similarity import canonical_correlations, cca_similarity, linear_cka
from metarl.config import load_config
from metarl.run import EVAL_ROLLOUTS, build_sampler, derive_seed, episode_mean_returns, held_out_tasks
from metarl.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
SMALL = ["algo.meta_batch_size=4", "algo.episodes_per_task=4", "env.horizon=20", "policy.hidden_sizes=[8,8]",
         "sampler.backend=serial", "iterations=2", "log.checkpoint_every=2"]


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(gaussian(d, d, seed))
    return q * np.sign(np.diag(r))


# -- linear CKA ------------------------------------------------------------------------------

def test_cka_is_one_for_itself_orthogonal_transforms_isotropic_scaling_and_shifts():
    x = gaussian(500, 10, 0)
    assert linear_cka(x, x) == 1.0
    assert linear_cka(x, x @ orthogonal(10, 1)) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-12)  # centred
    assert linear_cka(x, -0.01 * x @ orthogonal(10, 2) + 100.0) == pytest.approx(1.0, abs=1e-10)
    # not invariant to anisotropic scaling: this must be visibly below 1
    assert linear_cka(x, x * np.arange(1, 11) ** 2) < 0.9


def test_cka_matches_the_hsic_formula_with_n_by_n_kernels():
    x = gaussian(30, 4, 3)
    y = np.tanh(x @ gaussian(4, 6, 4)) + 0.3 * gaussian(30, 6, 5)
    h = np.eye(30) - np.full((30, 30), 1 / 30)

    def hsic(k: np.ndarray, m: np.ndarray) -> float:
        return float(np.trace(k @ h @ m @ h))

    k, m = x @ x.T, y @ y.T
    expected = hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))
    assert 0.2 < expected < 0.99
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    assert linear_cka(y, x) == pytest.approx(expected, rel=1e-12)


def test_cka_of_independent_noise_is_near_zero():
    value = linear_cka(gaussian(2000, 10, 6), gaussian(2000, 10, 7))
    assert 0.0 <= value < 0.1


# -- CCA ---------------------------------------------------------------------------------------

def test_cca_is_one_for_itself_and_invertible_linear_maps():
    x = gaussian(1000, 10, 8)
    a = gaussian(10, 10, 9) + 3 * np.eye(10)  # well conditioned, not orthogonal
    assert cca_similarity(x, x) == 1.0
    assert cca_similarity(x, x @ a + 2.0, keep=None) == pytest.approx(1.0, abs=1e-9)
    # truncation keeps the same directions under orthogonal maps and scaling
    assert cca_similarity(x, 0.5 * x @ orthogonal(10, 10), keep=0.99) == pytest.approx(1.0, abs=1e-9)
    # a map to more dimensions (rank 10 in 16 features) is still the same subspace
    assert cca_similarity(x, x @ gaussian(10, 16, 11), keep=None) == pytest.approx(1.0, abs=1e-9)


def test_cca_of_independent_noise_is_near_zero():
    value = cca_similarity(gaussian(2000, 10, 12), gaussian(2000, 10, 13))
    assert 0.0 <= value < 0.1


@pytest.mark.parametrize("k", [3, 7])
def test_cca_when_y_shares_k_of_d_directions_is_k_over_d(k):
    n, d = 4000, 10
    x = gaussian(n, d, 14)
    shared = np.concatenate([x[:, :k], gaussian(n, d - k, 15)], axis=1)
    mixed = shared @ (gaussian(d, d, 16) + 3 * np.eye(d))
    rho = canonical_correlations(x, mixed, keep=None)
    assert rho.shape == (d,)
    assert np.all(np.diff(rho) <= 1e-12)  # descending
    np.testing.assert_allclose(rho[:k], 1.0, atol=1e-9)
    assert rho[k] < 0.15
    assert cca_similarity(x, mixed, keep=None) == pytest.approx(k / d, abs=0.03)


def test_cca_of_one_feature_each_is_the_absolute_correlation():
    x = gaussian(300, 1, 17)[:, 0]
    y = -0.4 * x + gaussian(300, 1, 18)[:, 0]
    r = np.corrcoef(x, y)[0, 1]
    assert cca_similarity(x, y) == pytest.approx(abs(r), rel=1e-10)
    assert cca_similarity(x[:, None], y[:, None], keep=1) == pytest.approx(abs(r), rel=1e-10)


def test_cca_truncation_keeps_the_requested_directions():
    # x: 2 strong directions and 6 weak ones; y only sees the strong ones
    x = gaussian(2000, 8, 19) * np.array([10, 10, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
    y = x[:, :2] @ gaussian(2, 2, 20)
    assert len(canonical_correlations(x, x, keep=0.99)) == 2
    assert cca_similarity(x, y, keep=0.99) == pytest.approx(1.0, abs=1e-9)
    assert cca_similarity(x, y, keep=2) == pytest.approx(1.0, abs=1e-9)
    assert len(canonical_correlations(x, x, keep=5)) == 5
    assert len(canonical_correlations(x, x, keep=None)) == 8


# -- degenerate and bad inputs ------------------------------------------------------------------

def test_rank_deficient_and_constant_columns():
    z = gaussian(400, 3, 21)
    padded = np.concatenate([z, 2 * z[:, :1] - z[:, 1:2], np.full((400, 2), 5.0)], axis=1)  # rank 3 of 6
    assert cca_similarity(z, padded, keep=None) == pytest.approx(1.0, abs=1e-9)
    assert cca_similarity(padded, padded + 1.0) == pytest.approx(1.0, abs=1e-9)
    y = np.tanh(z @ gaussian(3, 4, 22))
    with_const = np.concatenate([y, np.full((400, 3), -7.25)], axis=1)
    assert linear_cka(z, with_const) == pytest.approx(linear_cka(z, y), rel=1e-12)
    assert cca_similarity(z, with_const) == pytest.approx(cca_similarity(z, y), rel=1e-9)
    const_a, const_b = np.full((50, 3), 2.0), np.full((50, 2), -1.0)
    assert linear_cka(const_a, const_b) == 1.0 and cca_similarity(const_a, const_b) == 1.0
    assert linear_cka(const_a, z[:50]) == 0.0 and cca_similarity(z[:50], const_b) == 0.0
    for value in (linear_cka(z, y), cca_similarity(z, y)):
        assert np.isfinite(value) and 0.0 <= value <= 1.0


def test_torch_and_float32_inputs_give_the_float64_numpy_result():
    x32 = torch.from_numpy(gaussian(300, 5, 23)).float()
    y32 = torch.tanh(x32 @ torch.from_numpy(gaussian(5, 4, 24)).float())
    x64, y64 = x32.double().numpy(), y32.double().numpy()
    assert linear_cka(x32, y32) == linear_cka(x64, y64)
    assert cca_similarity(x32, y32) == cca_similarity(x64, y64)
    assert linear_cka(x32.requires_grad_(), y32) == linear_cka(x64, y64)


def test_relative_change_sees_the_shifts_that_centred_similarities_ignore():
    x = torch.from_numpy(gaussian(200, 4, 26))
    shifted = x + 3.0
    assert linear_cka(x, shifted) == pytest.approx(1.0, abs=1e-12)
    assert cca_similarity(x, shifted) == pytest.approx(1.0, abs=1e-12)
    expected = float(torch.linalg.norm(torch.full_like(x, 3.0)) / torch.linalg.norm(x))
    assert relative_change(x, shifted) == pytest.approx(expected, rel=1e-12)
    assert relative_change(x, x.clone()) == 0.0
    assert relative_change(torch.zeros(5, 2), torch.zeros(5, 2)) == 0.0


def test_bad_inputs_raise_value_errors():
    x = gaussian(20, 3, 25)
    with pytest.raises(ValueError, match="same number of samples"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="NaN"):
        cca_similarity(x, np.where(x > 1, np.nan, x))
    with pytest.raises(ValueError, match="shape"):
        linear_cka(x[None], x[None])
    with pytest.raises(ValueError, match="at least 2 samples"):
        cca_similarity(x[:1], x[:1])
    for keep in (0.0, 1.5, 0, True):
        with pytest.raises(ValueError, match="keep"):
            cca_similarity(x, x + 1, keep=keep)


# -- on trained meta-policies ------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Navigation2D learners after 2 meta-iterations: MAML (adapt all) and ANIL (adapt head).

    Goal tolerance 0: no episode ends early, whatever the learners became, so every
    task's episodes give the same number of states.
    """
    out = {}
    for adapt in ("all", "head"):
        cfg = load_config(NAV_CONFIG, SMALL + [f"policy.adapt={adapt}", "env.kwargs.goal_tolerance=0.0"])
        run_dir = tmp_path_factory.mktemp(f"nav_{adapt}")
        trainer = Trainer(cfg, run_dir)
        trainer.train()
        out[adapt] = (cfg, trainer.family, trainer.learner)
        out[f"{adapt}_dir"] = run_dir
    return out


def sampler_for(run):
    cfg, family, learner = run
    return build_sampler(cfg, family, learner.policy)


@pytest.mark.integration
def test_maml_similarity_per_layer_lies_in_unit_interval_and_the_body_changes(trained):
    cfg, family, learner = trained["all"]
    with sampler_for(trained["all"]) as sampler:
        result = representation_similarity(learner, family, sampler, num_tasks=3, episodes_per_task=4, seed=0,
                                           max_states=50)
    assert result["layers"] == ["body.0", "body.1", "head"]
    per_task_cka, per_task_cca = np.array(result["per_task"]["cka"]), np.array(result["per_task"]["cca"])
    assert per_task_cka.shape == per_task_cca.shape == (3, 3)
    assert result["per_task"]["num_states"] == [50, 50, 50]
    for key, per_task in (("cka", per_task_cka), ("cca", per_task_cca)):
        values = np.array(result[key])
        assert np.all((values >= 0) & (values <= 1)) and np.all((per_task >= 0) & (per_task <= 1))
        np.testing.assert_allclose(values, per_task.mean(axis=0), rtol=1e-12)
    # MAML adapts every layer, so no layer's representation is left exactly unchanged
    assert np.all(per_task_cka < 1.0)
    assert np.all(np.array(result["per_task"]["relative_change"]) > 0.0)


@pytest.mark.integration
def test_anil_body_similarity_is_exactly_one_and_the_head_changes(trained):
    cfg, family, learner = trained["head"]
    assert learner.adapt_names == ["head.weight", "head.bias"]
    with sampler_for(trained["head"]) as sampler:
        result = representation_similarity(learner, family, sampler, num_tasks=3, episodes_per_task=4, seed=0)
        again = representation_similarity(learner, family, sampler, num_tasks=3, episodes_per_task=4, seed=0)
    assert result["cka"] == again["cka"] and result["cca"] == again["cca"]
    body = [i for i, name in enumerate(result["layers"]) if name.startswith("body.")]
    head = result["layers"].index("head")
    for key in ("cka", "cca"):
        assert [result[key][i] for i in body] == [1.0, 1.0]
        assert all(row[i] == 1.0 for row in result["per_task"][key] for i in body)
    assert result["cka"][head] < 1.0
    assert [result["relative_change"][i] for i in body] == [0.0, 0.0]
    assert result["relative_change"][head] > 0.0
    assert result["per_task"]["num_states"] == [80, 80, 80]  # 4 episodes x 20 steps, none ends early


@pytest.mark.integration
def test_freeze_ablation_without_adapting_equals_step0_and_all_equals_the_learners_step(trained):
    cfg, family, learner = trained["all"]
    with sampler_for(trained["all"]) as sampler:
        result = freeze_ablation(learner, family, sampler, num_tasks=3, episodes_per_task=4, seed=5)
        # the learner's own one-step adaptation, rolled out with the step-0 seed
        tasks = held_out_tasks(family, 3, 5)
        params = {k: v.detach() for k, v in learner.policy.params().items()}
        seed0 = derive_seed(5, EVAL_ROLLOUTS, 0)
        batch = sampler.sample(tasks, params, 4, seed0)
        adapted = learner.adapt_further(params, batch, learner.advantages(batch))
        manual = episode_mean_returns(sampler.sample(tasks, adapted, 4, seed0))
    variants = result["variants"]
    assert set(variants) == {"all", "head_only", "body_only", "none"}
    assert variants["none"]["params"] == []
    assert variants["none"]["mean"] == result["step0"]["mean"]
    assert variants["none"]["per_task"] == result["step0"]["per_task"]
    assert result["step0"]["per_task"] == [float(r) for r in episode_mean_returns(batch)]
    assert variants["all"]["per_task"] == [float(r) for r in manual]
    assert variants["head_only"]["params"] == ["head.weight", "head.bias"]
    assert variants["body_only"]["params"] == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias"]
    for name in ("all", "head_only", "body_only"):
        assert variants[name]["mean"] != result["step0"]["mean"]
        gains = np.subtract(variants[name]["per_task"], result["step0"]["per_task"])
        assert variants[name]["gain"] == pytest.approx(gains.mean(), rel=1e-12)
    assert variants["none"]["gain"] == 0.0 and variants["none"]["gain_stderr"] == 0.0


@pytest.mark.integration
def test_freeze_ablation_custom_variants_and_unknown_names(trained):
    cfg, family, learner = trained["head"]
    with sampler_for(trained["head"]) as sampler:
        result = freeze_ablation(learner, family, sampler, num_tasks=2, episodes_per_task=3, seed=1,
                                 variants={"anil": learner.adapt_names, "nothing": []})
        with pytest.raises(ValueError, match="unknown parameters"):
            freeze_ablation(learner, family, sampler, num_tasks=2, episodes_per_task=3, seed=1,
                            variants={"bad": ["head.kernel"]})
    assert list(result["variants"]) == ["anil", "nothing"]
    assert result["variants"]["nothing"]["per_task"] == result["step0"]["per_task"]
    assert result["variants"]["anil"]["per_task"] != result["step0"]["per_task"]


@pytest.mark.integration
def test_analyze_run_writes_json_and_figures_matching_the_direct_calls(trained, tmp_path):
    run_dir = trained["head_dir"]
    result = analyze_run(run_dir, num_tasks=2, seed=3, episodes_per_task=3, out_dir=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "analysis.json", "freeze_ablation.png", "similarity.png"]
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["iteration"] == 2 and saved["run_dir"] == str(run_dir)
    cfg, family, learner = trained["head"]
    with sampler_for(trained["head"]) as sampler:
        direct = representation_similarity(learner, family, sampler, num_tasks=2, episodes_per_task=3, seed=3)
    assert saved["similarity"]["cka"] == direct["cka"] and saved["similarity"]["cca"] == direct["cca"]
    assert saved["freeze_ablation"]["variants"]["none"]["mean"] == saved["freeze_ablation"]["step0"]["mean"]
    report = format_report(result)
    assert "body.1" in report and "head_only" in report
