"""The reproduction script runs end to end on a tiny budget and resumes instead of retraining."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest

from metarl.evaluation import adaptation_curve
from metarl.run import build_sampler, load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2", "--set", "env.horizon=10",
        "--set", "policy.hidden_sizes=[8]", "--set", "sampler.backend=serial", "--eval-tasks", "3", "--no-estimate"]


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_maml_reproduction_writes_table_and_plot_then_skips_finished_runs(tmp_path, capsys):
    script = load_script()
    assert script.main(["maml", "--iterations", "2", "--root", str(tmp_path), *TINY]) == 0
    table = (tmp_path / "maml_Navigation2D.md").read_text()
    for method in ("maml", "pretrained", "random", "oracle", "MAML (paper, fig. 5)"):
        assert f"| {method} |" in table
    assert (tmp_path / "maml_Navigation2D.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert script.main(["maml", "--iterations", "2", "--root", str(tmp_path), *TINY]) == 0
    assert "Navigation2D__maml__1: finished (2 iterations)" in capsys.readouterr().out


@pytest.mark.integration
def test_anil_reproduction_extends_the_budget_by_resuming(tmp_path, capsys):
    script = load_script()
    args = ["anil", "--families", "Navigation2D", "--seeds", "1", "2", "--root", str(tmp_path), *TINY]
    assert script.main([*args[:1], "--iterations", "1", *args[1:]]) == 0
    assert script.main([*args[:1], "--iterations", "2", *args[1:]]) == 0
    table = (tmp_path / "anil_table.md").read_text()
    assert script.done_iterations(tmp_path / "Navigation2D__anil__2") == 2
    # our column: mean ± std over the seeds of the return after one step, evaluated here independently
    for method in ("maml", "anil"):
        finals = []
        for seed in (1, 2):
            cfg, family, learner, iteration = load_run(tmp_path / f"Navigation2D__{method}__{seed}")
            assert iteration == 2
            with build_sampler(cfg, family, learner.policy) as sampler:
                curve = adaptation_curve(learner, family, sampler, 3, 1, cfg.algo.episodes_per_task, seed=0)
            finals.append(curve["mean"][1])
        row = [ln for ln in table.splitlines() if ln.startswith(f"| Navigation2D | {method.upper()} |")]
        assert len(row) == 1, table
        assert f"| {statistics.mean(finals):.1f} ± {statistics.stdev(finals):.1f} (2 seeds) |" in row[0], row[0]
