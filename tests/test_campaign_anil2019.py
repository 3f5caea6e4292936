"""The 2019-setup campaign's ablation: one setting at the locomotion campaign's value, its runs and its table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from experiments import anil2019_report, reproduce
from experiments.campaigns import ANIL2019, ANIL2019_ABLATIONS, CONFIGS
from metarl.config import flat_dict, load_config, to_dict

TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "sampler.backend=serial",
        "policy.hidden_sizes=[8]"]


def args(root: Path, **kw) -> argparse.Namespace:
    base = dict(root=str(root), iterations=500, seeds=None, set=[], no_estimate=True, eval_tasks=2, eval_seed=0,
                families=list(ANIL2019), methods=None, ablate=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_the_campaign_without_ablate_is_unchanged(tmp_path):
    names = [d.name for _, d in reproduce.anil2019_jobs(args(tmp_path))]
    assert names == ["HalfCheetahDir__maml__1", "HalfCheetahDir__anil__1", "HalfCheetahDir__maml__2",
                     "HalfCheetahDir__anil__2", "HalfCheetahDir__maml__3", "HalfCheetahDir__anil__3",
                     "HalfCheetahVel__maml__1", "HalfCheetahVel__anil__1"]


@pytest.mark.parametrize("name", list(ANIL2019_ABLATIONS))
def test_each_ablation_changes_one_setting_of_the_2019_anil_run_to_the_locomotion_configs_value(tmp_path, name):
    (cfg, run_dir), = reproduce.anil2019_jobs(args(tmp_path, ablate=name))
    assert run_dir == tmp_path / "ablation" / name / "HalfCheetahDir__anil__1"
    (base, _), = [j for j in reproduce.anil2019_jobs(args(tmp_path)) if j[1].name == "HalfCheetahDir__anil__1"]
    ablated, plain = flat_dict(to_dict(cfg)), flat_dict(to_dict(base))
    changed = {k for k in plain if ablated.get(k) != plain[k]}
    assert len(changed) == 1, changed
    (key,) = changed
    locomotion = flat_dict(to_dict(load_config(CONFIGS / "halfcheetah_dir.yaml")))
    assert ablated[key] == locomotion[key] != plain[key]
    assert cfg.policy.adapt == "head" and cfg.iterations == 500


def test_an_unknown_ablation_is_refused_with_exit_2_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["anil2019", "--ablate", "depth", "--root", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'depth'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_tiny_ablation_run_is_trained_evaluated_and_tabulated_beside_both_setups(tmp_path, capsys):
    # the report reads the protocol's evaluation: 40 held-out tasks (cheap at this size)
    a = args(tmp_path, iterations=1, set=list(TINY), ablate="action_scale", eval_tasks=40)
    reproduce.cmd_anil2019(a)
    run = tmp_path / "ablation" / "action_scale" / "HalfCheetahDir__anil__1"
    assert (run / "checkpoints" / "best.pt").is_file()
    assert "best iteration" in capsys.readouterr().out
    # the same seed under the 2019 setup (MAML and ANIL), so that the fractions exist
    reproduce.cmd_anil2019(args(tmp_path, iterations=1, set=list(TINY), families=["HalfCheetahDir"], seeds=[1],
                                eval_tasks=40))
    loco = tmp_path / "loco"  # no locomotion runs here: its column stays empty
    text = anil2019_report.ablation(anil2019_report.ablation_rows(tmp_path, locomotion_root=loco))
    (row,) = [line for line in text.splitlines() if line.startswith("| action_scale")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "action_scale (`env.kwargs.action_scale=0.1`)" and cells[1:3] == ["ANIL", "1"]
    final = float(cells[3].split(" / ")[0].replace("−", "-"))
    maml = anil2019_report.final_one_step(anil2019_report.collect(tmp_path)[("HalfCheetahDir", "maml")][1])
    assert cells[4] == ("–" if maml <= 0 else f"{final / maml:.2f}".replace("-", "−"))
    assert cells[6:] == ["–", "–"]  # no locomotion setup, no share of the gap
    assert anil2019_report.ablation_rows(tmp_path / "none") == [] and anil2019_report.ablation([]) == ""


def test_the_share_of_the_gap_is_measured_on_the_anil_to_maml_fraction():
    assert anil2019_report.ratio(100.0, 400.0) == 0.25
    assert anil2019_report.ratio(100.0, -5.0) is None and anil2019_report.ratio(None, 1.0) is None


@pytest.mark.parametrize("name, fraction, share", [("action_scale", "0.50", "0.82"), ("horizon", "0.80", "0.27")])
def test_the_ablation_row_divides_by_maml_under_the_same_horizon(tmp_path, monkeypatch, name, fraction, share):
    loco = tmp_path / "loco"
    for d in (tmp_path / "ablation" / name, loco):
        d.mkdir(parents=True)
    fam = "HalfCheetahDir"
    runs = {tmp_path / "ablation" / name: {(fam, "anil"): {1: {"one": 200.0}}},
            tmp_path: {(fam, "anil"): {1: {"one": 380.0}}, (fam, "maml"): {1: {"one": 400.0}}},
            loco: {(fam, "anil"): {1: {"one": 100.0}}, (fam, "maml"): {1: {"one": 250.0}}}}
    monkeypatch.setattr(anil2019_report, "collect", lambda root: runs.get(root, {}))
    monkeypatch.setattr(anil2019_report, "final_one_step", lambda info: info["one"])
    monkeypatch.setattr(anil2019_report, "best_eval", lambda info: {"mean": [0.0, info["one"] + 1], "iteration": 7})
    monkeypatch.setattr(anil2019_report, "final_eval", lambda info: {"mean": [0.0, info["one"]]})
    rows = anil2019_report.ablation_rows(tmp_path, loco)
    (row,) = [r for r in anil2019_report.ablation(rows).splitlines() if r.startswith(f"| {name}")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 2019: 380 / 400 = 0.95; locomotion: 100 / 250 = 0.40; the row over MAML of its horizon (400, or 250)
    assert cells[3:] == ["200.0 / 201.0 (7)", fraction, "0.95", "0.40", share]


def test_the_verdict_weighs_the_difference_against_two_standard_errors_over_seeds():
    # means 300 and 310, sample variances 100 and 100 over 3 seeds: se = sqrt(200 / 3) = 8.16, 2 se = 16.3
    assert anil2019_report.verdict([290.0, 300.0, 310.0], [300.0, 310.0, 320.0]).startswith("ANIL matches MAML")
    assert anil2019_report.verdict([100.0, 110.0, 120.0], [300.0, 310.0, 320.0]).startswith("ANIL is below MAML")
    assert anil2019_report.verdict([400.0, 410.0, 420.0], [300.0, 310.0, 320.0]).startswith("ANIL is above MAML")


def test_the_conclusion_names_the_ablated_setting_with_the_largest_share(monkeypatch):
    fam = "HalfCheetahDir"
    def seeds(*returns):
        return {s: {"one": v, "done": 500, "budget": 500} for s, v in zip((1, 2, 3), returns, strict=True)}

    runs = {(fam, "maml"): seeds(380.0, 390.0, 400.0), (fam, "anil"): seeds(340.0, 330.0, 350.0)}
    monkeypatch.setattr(anil2019_report, "final_one_step", lambda info: info["one"])
    monkeypatch.setattr(anil2019_report, "best_eval", lambda info: {"mean": [0.0, info["one"]], "iteration": 7})
    rows = [{"setting": "action_scale", "seed": 1, "share": 0.8}, {"setting": "width", "seed": 1, "share": 0.1},
            {"setting": "horizon", "seed": 1, "share": None}]
    text = anil2019_report.conclusion(runs, rows)
    assert "final iteration: ANIL 340.0, MAML 390.0 (ANIL − MAML −50.0); ANIL is below MAML" in text
    assert "Of the settings ablated (action_scale, width; seed 1), `action_scale` at the locomotion campaign's " \
           "value accounts for the largest share of the gap between the two setups: 0.80" in text
    assert "Of the settings" not in anil2019_report.conclusion(runs, [])
    del runs[(fam, "anil")][3]
    assert anil2019_report.conclusion(runs, rows).startswith("**Conclusion: pending.**")


def test_the_pending_conclusion_gives_each_seed_both_methods_finished(monkeypatch):
    fam = "HalfCheetahDir"
    done = {"done": 500, "budget": 500}
    runs = {(fam, "maml"): {1: {"one": 380.0, **done}, 2: {"one": None, "done": 10, "budget": 500}},
            (fam, "anil"): {1: {"one": 361.0, **done}}}
    monkeypatch.setattr(anil2019_report, "final_one_step", lambda info: info["one"])
    monkeypatch.setattr(anil2019_report, "best_eval",
                        lambda info: None if info["one"] is None else {"mean": [0.0, info["one"]], "iteration": 7})
    text = anil2019_report.conclusion(runs, [])
    assert text.startswith("**Conclusion: pending.**") and "2 have" in text
    assert "Seed 1, both finished: ANIL 361.0, MAML 380.0 after one step at the final iteration (ANIL ÷ MAML " \
           "0.95)." in text and "Seed 2, both" not in text


def test_the_state_table_means_the_last_logged_iterations_before_the_checkpoint(tmp_path):
    from experiments.locomotion_report import last_logged
    from metarl import scalars

    w = scalars.ScalarsCSV(tmp_path)
    for it in range(8):  # iterations 6 and 7 lie past the checkpoint at 6: replayed on resume, not counted
        w.append(it, {"policy/log_std_mean": -0.1 * it, "adapt/step_norm": float("nan") if it < 3 else 0.2})
    w.close()
    info = {"dir": tmp_path, "done": 6}
    log_std, step, missing = last_logged(info, ("policy/log_std_mean", "adapt/step_norm", "nope"), 3)
    assert log_std == pytest.approx(-0.4) and step == pytest.approx(0.2) and missing is None  # its 3..5
    assert last_logged({"dir": tmp_path / "none", "done": 6}, ("adapt/step_norm",), 3) == [None]
