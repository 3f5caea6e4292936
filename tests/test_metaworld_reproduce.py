"""``reproduce.py metaworld``: the runs it builds, the report it writes from their artifacts, and a tiny
end-to-end run (slow)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jobs_of(argv: list[str]):
    script = load("reproduce")
    captured = {}

    def fake(args):
        captured["jobs"] = script.metaworld_jobs(args)

    script.cmd_metaworld = fake
    script.main(["metaworld", *argv])
    return captured["jobs"]


def test_metaworld_jobs_are_ml1_reach_and_ml10_with_their_budgets_and_subsampled_curvature(tmp_path):
    jobs = jobs_of(["--root", str(tmp_path), "--iterations", "7", "--ml10-iterations", "3"])
    by_name = {d.name: cfg for cfg, d in jobs}
    assert sorted(by_name) == ["ML1-reach__maml__1", "ML10__maml__1"]
    ml1, ml10 = by_name["ML1-reach__maml__1"], by_name["ML10__maml__1"]
    assert (ml1.env.family, ml1.env.kwargs["env_name"], ml1.iterations) == ("MetaWorldML1", "reach-v3", 7)
    assert (ml10.env.family, ml10.iterations, ml10.algo.meta_batch_size) == ("MetaWorldML10", 3, 20)
    for cfg in (ml1, ml10):
        assert cfg.trpo.cg_subsample == 0.3 and cfg.seed == 1 and cfg.policy.hidden_sizes == [512, 512]
    assert all(d.parent == tmp_path for _, d in jobs)
    only = jobs_of(["--root", str(tmp_path), "--benchmarks", "ML10", "--seeds", "2", "--set", "trpo.cg_subsample=1.0"])
    assert [(d.name, cfg.trpo.cg_subsample) for cfg, d in only] == [("ML10__maml__2", 1.0)]


def test_ml10_budget_below_one_is_a_usage_error(capsys):
    script = load("reproduce")
    with pytest.raises(SystemExit) as e:
        script.main(["metaworld", "--ml10-iterations", "0"])
    assert e.value.code == 2
    assert "--ml10-iterations must be >= 1, got 0" in capsys.readouterr().err


def fake_run(root: Path, name: str, budget: int, done: int, rows: list[dict[str, float]],
             ev: dict | None) -> Path:
    from metarl.config import load_config, to_dict

    d = root / name
    (d / "checkpoints").mkdir(parents=True)
    cfg = load_config(ROOT / "experiments" / "configs" / "metaworld_ml1_reach.yaml", [f"iterations={budget}"])
    (d / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg)))))
    (d / "checkpoints" / "latest").write_text(f"iter_{done:06d}.pt\n")
    with open(d / "scalars.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["iteration", *rows[0]])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"iteration": i, **r})
    if ev is not None:
        (d / "eval").mkdir()
        (d / "eval" / "metaworld.json").write_text(json.dumps(ev))
    return d


def row(t: float, s_pre: float, s_post: float) -> dict[str, float]:
    return {"time/iteration_s": t, "time/sampling_s": t / 2, "time/inner_s": 1.0, "time/outer_s": t / 2 - 1,
            "time/cg_s": t / 4, "returns/success_pre": s_pre, "returns/success_post": s_post}


def test_report_scores_costs_and_final_flag_come_from_the_artifacts(tmp_path):
    report = load("metaworld_report")
    ev = {"success_rate": 0.62, "success_stderr": 0.05, "success_rate_pre": 0.2, "success_stderr_pre": 0.04,
          "return_pre": 150.0, "return_post": 410.0, "num_tasks": 50, "iteration": 4}
    # iteration 0 (starts the workers) is slow and left out of the medians; iteration 4 is past the checkpoint
    rows = [row(500.0, 0, 0), row(60.0, 0.1, 0.2), row(64.0, 0.2, 0.4), row(70.0, 0.2, 0.5), row(999.0, 1, 1)]
    fake_run(tmp_path, "ML1-reach__maml__1", budget=4, done=4, rows=rows, ev=ev)
    fake_run(tmp_path, "ML1-reach__maml__2", budget=10, done=4, rows=rows, ev={**ev, "iteration": 3})
    just_started = fake_run(tmp_path, "ML10__maml__1", budget=10, done=0, rows=[row(1.0, 0, 0)], ev=None)
    (just_started / "scalars.csv").write_text("")  # created, no iteration logged yet
    (just_started / "checkpoints" / "latest").unlink()
    text = report.section(tmp_path)
    assert "| ML10 | MAML-TRPO | 1 | 0 / 10 | – | – | not evaluated yet | – |" in text
    assert "| ML10__maml__1 |" not in text and "ML10_success.png" not in text  # nothing logged: no cost, no curve
    lines = {ln.split(" | ")[2]: ln for ln in text.splitlines() if ln.startswith("| ML1-reach | MAML-TRPO")}
    assert "| 4 / 4 | 62.0% ± 5.0% | 20.0% ± 4.0% | final, 50 test tasks | 410 / 150 |" in lines["1"]
    assert "| 4 / 10 |" in lines["2"] and "at iteration 3, 50 test tasks" in lines["2"]
    cost = next(ln for ln in text.splitlines() if ln.startswith("| ML1-reach__maml__1 |"))
    # medians of iterations 1..3: 64 s total, 32 sampling, 1 inner, 31 outer, 16 CG
    assert cost.endswith("| 100,000 | 64 | 32 | 1 | 31 | 16 |")
    info = report.collect(tmp_path)[("ML1-reach", "maml")][1]
    assert info["curves"]["returns/success_post"].tolist() == [0, 0.2, 0.4, 0.5]
    md = tmp_path / "R.md"
    md.write_text("# Results\n\nhand-written text\n")
    assert report.main(["--root", str(tmp_path), "--results", str(md)]) == 0
    assert md.read_text().startswith("# Results\n\nhand-written text\n")
    assert (tmp_path / "ML1-reach_success.png").read_bytes()[:4] == b"\x89PNG"
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--check", "--no-plots"]) == 0
    (tmp_path / "ML1-reach__maml__2" / "eval" / "metaworld.json").write_text(json.dumps({**ev, "iteration": 4}))
    assert report.main(["--root", str(tmp_path), "--results", str(md), "--check", "--no-plots"]) == 1


def test_results_md_metaworld_section_is_generated_from_the_artifacts():
    report = load("metaworld_report")
    assert report.main(["--check", "--no-plots"]) == 0, "run: python experiments/metaworld_report.py"


@pytest.mark.slow
def test_tiny_metaworld_reproduction_trains_scores_every_test_goal_and_skips_when_finished(tmp_path, capsys):
    script = load("reproduce")
    tiny = ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=1", "--set", "env.horizon=10",
            "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial", "--no-estimate"]
    argv = ["metaworld", "--benchmarks", "ML1-reach", "--iterations", "1", "--root", str(tmp_path), *tiny]
    assert script.main(argv) == 0
    ev = json.loads((tmp_path / "ML1-reach__maml__1" / "eval" / "metaworld.json").read_text())
    assert ev["num_tasks"] == 50 and ev["iteration"] == 1 and 0.0 <= ev["success_rate"] <= 1.0
    assert "ML1-reach__maml__1: test success" in capsys.readouterr().out
    assert "| ML1-reach | MAML-TRPO | 1 | 1 / 1 |" in (tmp_path / "report.md").read_text()  # not RESULTS.md
    assert script.main(argv) == 0
    assert "ML1-reach__maml__1: finished (1 iterations)" in capsys.readouterr().out
