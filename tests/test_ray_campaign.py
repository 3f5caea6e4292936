"""A campaign's runs as Ray tasks (``reproduce.py ... --parallel N``): the same checkpoints as one after another."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments import ray_campaign
from experiments.campaigns import config_for, run_name
from experiments.driver import train
from metarl.rundir import RunDir

TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=8", "policy.hidden_sizes=[4]",
        "sampler.backend=serial"]


def jobs(root: Path) -> list:
    return [(config_for("Navigation2D", m, s, 2, TINY), root / run_name("Navigation2D", m, s))
            for m in ("maml", "anil") for s in (1, 2)]


def test_a_task_reserves_its_samplers_cpus_and_a_gpu_when_asked():
    cfg = config_for("Navigation2D", "maml", 1, 2, TINY + ["sampler.workers=3"])
    assert ray_campaign.resources(cfg) == {"num_cpus": 3.0, "num_gpus": 0.0}
    cfg.device = "cuda:1"
    assert ray_campaign.resources(cfg)["num_gpus"] == 1.0


def test_an_unreachable_run_directory_fails_with_one_line(tmp_path):
    cfg = config_for("Navigation2D", "maml", 1, 2, TINY)
    with pytest.raises(ray_campaign.RunUnreachableError, match="cannot reach .*nowhere: --root must be on storage"):
        ray_campaign.train_task(train, cfg, str(tmp_path / "nowhere" / "run"), True)


@pytest.mark.integration
def test_four_runs_as_ray_tasks_equal_the_same_runs_one_after_another(tmp_path):
    seq, par = tmp_path / "sequential", tmp_path / "parallel"
    seq.mkdir()
    par.mkdir()
    for cfg, run_dir in jobs(seq):
        train(cfg, run_dir, latest_only=True, progress=False)
    lines: list[str] = []
    assert ray_campaign.train_jobs(train, jobs(par), True, parallel=2, report=lines.append) == []
    assert len([line for line in lines if "trained to iteration 2" in line]) == 4
    for (_, a), (_, b) in zip(jobs(seq), jobs(par), strict=True):
        sa, sb = RunDir(a).latest_state(), RunDir(b).latest_state()
        assert sa["iteration"] == sb["iteration"] == 2
        for k in sa["meta"]:
            assert torch.equal(sa["meta"][k], sb["meta"][k]), (a.name, k)
    # the same command again: every run is finished, nothing is trained twice
    lines.clear()
    assert ray_campaign.train_jobs(train, jobs(par), True, parallel=2, report=lines.append) == []
    assert all("trained to iteration 2" in line for line in lines[1:])


@pytest.mark.integration
def test_a_two_node_loopback_cluster_survives_losing_its_worker_node(tmp_path):
    """Head (no CPUs) and one worker node on 127.0.0.1; the worker node is killed mid-campaign and a new
    one joins: Ray runs the lost tasks again, each run resumes from its checkpoint, and every run ends
    with the checkpoint of the same run trained alone. Running the command again trains nothing."""
    import os
    import threading
    import time

    import ray
    import ray._private.ray_constants as constants
    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the nodes' servers on the loopback interface
    constants.ENABLE_RAY_CLUSTER = False
    long = TINY + ["log.checkpoint_every=2"]
    make = [(m, s) for m in ("maml", "anil") for s in (1, 2)]
    seq, par = tmp_path / "sequential", tmp_path / "cluster"
    seq.mkdir()
    par.mkdir()
    for m, s in make:
        train(config_for("Navigation2D", m, s, 30, long), seq / run_name("Navigation2D", m, s), True, progress=False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                             "node_ip_address": "127.0.0.1"})
    try:
        first = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
        jobs_ = [(config_for("Navigation2D", m, s, 30, long), par / run_name("Navigation2D", m, s)) for m, s in make]
        lines: list[str] = []
        result: list[list[str]] = []
        thread = threading.Thread(target=lambda: result.append(
            ray_campaign.train_jobs(train, jobs_, True, ray_address=cluster.address, report=lines.append)))
        thread.start()
        deadline = time.time() + 120
        while time.time() < deadline and not any((d / "checkpoints" / "latest").exists() for _, d in jobs_):
            time.sleep(0.2)
        unfinished = [d.name for _, d in jobs_ if (RunDir(d).done_iterations() or 0) < 30]
        cluster.remove_node(first)  # mid-campaign: the worker node and its tasks die
        assert unfinished, "every run had finished before the node was killed"
        cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
        thread.join(timeout=300)
        assert not thread.is_alive() and result == [[]], lines
        ray.shutdown()
        for _, d in jobs_:
            a, b = RunDir(seq / d.name).latest_state(), RunDir(d).latest_state()
            assert a["iteration"] == b["iteration"] == 30
            assert all(torch.equal(a["meta"][k], b["meta"][k]) for k in a["meta"]), d.name
        lines.clear()
        assert ray_campaign.train_jobs(train, jobs_, True, ray_address=cluster.address, report=lines.append) == []
    finally:
        ray.shutdown()
        cluster.shutdown()
