"""Samplers: identical batches for every backend and split, worker faults, clean shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import BACKENDS, PolicySpec, SerialSampler, Shard, assemble, make_sampler, split_grid
from metarl.sampling.local import LocalSampler
from metarl.sampling.worker import RowwiseMLP
from tests.helpers_processes import alive, listening_addresses

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("obs", "actions", "rewards", "mask")
SEED = 11


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def _assert_same(a, b) -> None:
    for k in FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.shape == y.shape, k
        assert torch.equal(x, y), f"{k} differs in {(x != y).sum().item()} entries"


class Setup:
    """A family, a policy with per-task parameters, tasks and a serial reference batch."""

    def __init__(self, name: str, num_tasks: int, episodes: int, horizon: int | None = None):
        self.family = envs.make_family(name, horizon=horizon)
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(self.family.obs_dim, self.family.act_dim, (64, 64), "tanh")
        self.spec = PolicySpec.of(policy)
        self.tasks = self.family.sample_tasks(num_tasks, np.random.default_rng(3))
        gen = torch.Generator().manual_seed(1)
        # per-task (adapted-looking) parameters, except the shared log-std
        self.params = {k: v.detach() + 0.3 * torch.randn(num_tasks, *v.shape, generator=gen)
                       for k, v in policy.params().items() if k != "log_std"}
        self.params["log_std"] = policy.log_std.detach() - 0.5
        self.episodes = episodes
        self.reference = SerialSampler(self.family, self.spec).sample(self.tasks, self.params, episodes, SEED)

    def sample(self, sampler, seed: int = SEED):
        return sampler.sample(self.tasks, self.params, self.episodes, seed)


FAMILIES = ["Navigation2D"] + [n for n in ("HalfCheetahVel",) if n in envs.family_names()]


@pytest.fixture(scope="module")
def setups() -> dict[str, Setup]:
    out = {"Navigation2D": Setup("Navigation2D", num_tasks=5, episodes=6)}
    if "HalfCheetahVel" in envs.family_names():
        out["HalfCheetahVel"] = Setup("HalfCheetahVel", num_tasks=3, episodes=3, horizon=40)
    return out


@pytest.fixture(scope="module")
def nav(setups) -> Setup:
    return setups["Navigation2D"]


@pytest.fixture(scope="module")
def pool(nav):
    """A two-worker local sampler shared by the tests that leave it healthy."""
    with make_sampler("local", nav.family, nav.spec, workers=2) as sampler:
        yield sampler


# -- grid splitting ------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.integers(1, 16))
def test_split_grid_covers_every_pair_once(num_tasks, episodes, parts):
    shards = split_grid(num_tasks, episodes, parts)
    assert 1 <= len(shards) <= parts
    seen = [(t, e) for s in shards for t in s.task_ids for e in range(s.ep_start, s.ep_stop)]
    assert sorted(seen) == [(t, e) for t in range(num_tasks) for e in range(episodes)]
    sizes = [len(s.task_ids) * (s.ep_stop - s.ep_start) for s in shards]
    if num_tasks >= parts:  # whole tasks, near-equal counts
        assert all(s.ep_start == 0 and s.ep_stop == episodes for s in shards)
        assert max(sizes) - min(sizes) <= episodes


def test_assemble_places_each_shard():
    num_tasks, episodes, horizon = 3, 5, 4
    shards = split_grid(num_tasks, episodes, 7)  # fewer tasks than parts: episodes are split
    assert any(s.ep_start > 0 for s in shards)
    results = []
    for s in shards:
        n, b = len(s.task_ids), s.ep_stop - s.ep_start
        tid = np.array(s.task_ids, dtype=np.float32)[:, None, None]
        ep = np.arange(s.ep_start, s.ep_stop, dtype=np.float32)[None, None, :]
        t = np.arange(horizon, dtype=np.float32)[None, :, None]
        code = np.broadcast_to(100 * tid + 10 * ep + t, (n, horizon, b))
        results.append({"rewards": code.copy(), "obs": np.repeat(code[..., None], 2, axis=-1)})
    out = assemble(shards, results, num_tasks, episodes)
    expect = (100 * np.arange(num_tasks)[:, None, None] + 10 * np.arange(episodes)[None, None, :]
              + np.arange(horizon)[None, :, None])
    np.testing.assert_array_equal(out["rewards"], expect)
    np.testing.assert_array_equal(out["obs"][..., 1], expect)
    assert out["obs"].shape == (num_tasks, horizon, episodes, 2)


def test_assemble_with_whole_task_shards():
    shards = [Shard((0, 1), 0, 2), Shard((2,), 0, 2)]
    results = [{"mask": np.ones((2, 3, 2), np.float32)}, {"mask": 2 * np.ones((1, 3, 2), np.float32)}]
    out = assemble(shards, results, 3, 2)["mask"]
    assert (out[:2] == 1).all() and (out[2] == 2).all()


# -- determinism ---------------------------------------------------------------------

def test_rowwise_forward_matches_policy_and_ignores_batch_shape():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(20, 6, (64, 64), "tanh")
    n, b = 7, 9
    p = {k: v.detach() + 0.1 * torch.randn(n, *v.shape) for k, v in policy.params().items()}
    names = policy.layer_names()

    def mlp(params, rows):
        return RowwiseMLP([params[f"{k}.weight"] for k in names], [params[f"{k}.bias"] for k in names],
                          "tanh", rows)

    obs = torch.randn(n, b, 20)
    with torch.inference_mode():
        full = mlp(p, b)(obs).clone()
        torch.testing.assert_close(full, policy(obs, p)[0], rtol=1e-5, atol=1e-5)
        # every split of tasks and rows gives the same bits as the full batch
        for tasks in (slice(0, 1), slice(2, 5), slice(1, 7)):
            for rows in (slice(0, 1), slice(3, 4), slice(2, 9), slice(0, 5)):
                sub = {k: v[tasks] for k, v in p.items()}
                part = mlp(sub, rows.stop - rows.start)(obs[tasks, rows].contiguous())
                assert torch.equal(part, full[tasks, rows])


@pytest.mark.parametrize("family", FAMILIES)
def test_serial_batch_independent_of_split(setups, family):
    s = setups[family]
    for shards in (2, 4, 7, 13):  # 7 and 13 exceed the task count: episodes are split too
        _assert_same(s.sample(SerialSampler(s.family, s.spec, shards=shards)), s.reference)


def test_same_seed_same_batch_other_seed_differs(nav):
    sampler = SerialSampler(nav.family, nav.spec)
    _assert_same(nav.sample(sampler), nav.reference)
    assert not torch.equal(nav.sample(sampler, seed=SEED + 1).actions, nav.reference.actions)


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_workers_come_from_the_preloading_fork_server_by_default_and_spawn_gives_the_same_batch(nav, method):
    """By default the workers are children of multiprocessing's fork server (which imported torch once), not of
    this process; ``spawn`` (the fallback where there is no fork server) starts them from this process."""
    import multiprocessing.forkserver

    import psutil

    from metarl.sampling.local import default_start_method

    assert default_start_method() == "forkserver"  # Linux has one
    with LocalSampler(nav.family, nav.spec, workers=2, start_method=None if method == "forkserver" else method) \
            as sampler:
        _assert_same(nav.sample(sampler), nav.reference)
        parents = {psutil.Process(pid).ppid() for pid in sampler.pids()}
    if method == "spawn":
        assert parents == {os.getpid()}
    else:
        server = multiprocessing.forkserver._forkserver._forkserver_pid
        assert parents == {server} and server != os.getpid()
        assert "torch" in " ".join(psutil.Process(server).cmdline())  # started with the preload list


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("workers", [1, 2])
def test_local_matches_serial(setups, family, workers, request):
    s = setups[family]
    if (family, workers) == ("Navigation2D", 2):
        sampler = request.getfixturevalue("pool")  # same configuration; saves a start-up
        stats_before = sampler.stats()["worker_restarts"]
        _assert_same(s.sample(sampler), s.reference)
        stats = sampler.stats()
        stats["worker_restarts"] -= stats_before
    else:
        with make_sampler("local", s.family, s.spec, workers=workers) as sampler:
            _assert_same(s.sample(sampler), s.reference)
            stats = sampler.stats()
    assert isinstance(sampler, LocalSampler) and sampler.num_workers == workers
    assert stats["worker_restarts"] == 0
    assert set(stats) >= {f"utilisation_w{i}" for i in range(workers)}
    assert all(0.0 < stats[f"utilisation_w{i}"] <= 1.0 for i in range(workers))


def _repeated(s: Setup, other: dict) -> tuple[list, dict]:
    """The task list twice, with the reference parameters on the first copy and ``other`` on the second."""
    return s.tasks * 2, {k: torch.cat([v.expand_as(other[k]) if v.dim() < other[k].dim() else v, other[k]])
                         for k, v in s.params.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_draw_ids_give_each_repeat_of_a_task_list_the_episodes_of_a_call_of_its_own(setups, family, pool):
    """Several parameter sets on one task list in one call (ES's candidates): with each task's own draw id on
    every repeat, each set's episodes are, to the bit, those of a call with that set alone; without them the
    repeats draw other episodes."""
    s = setups[family]
    n = len(s.tasks)
    gen = torch.Generator().manual_seed(7)
    other = {k: v.expand(n, *v.shape[-1:]) + 0.2 * torch.randn(n, *v.shape[-1:], generator=gen) if k == "log_std"
             else v + 0.2 * torch.randn(v.shape, generator=gen) for k, v in s.params.items()}
    alone = SerialSampler(s.family, s.spec).sample(s.tasks, other, s.episodes, SEED)
    tasks, both = _repeated(s, other)
    samplers = [SerialSampler(s.family, s.spec), SerialSampler(s.family, s.spec, shards=7)]
    if family == "Navigation2D":
        samplers.append(pool)  # two workers: the repeats fall in different shards
    for sampler in samplers:
        batch = sampler.sample(tasks, both, s.episodes, SEED, draw_ids=list(range(n)) * 2)
        _assert_same(batch.tasks(0, n), s.reference)
        _assert_same(batch.tasks(n, 2 * n), alone)
    plain = SerialSampler(s.family, s.spec).sample(tasks, both, s.episodes, SEED)
    _assert_same(plain.tasks(0, n), s.reference)
    assert not torch.equal(plain.tasks(n, 2 * n).rewards, alone.rewards)
    with pytest.raises(ValueError, match=r"^draw_ids has 3 ids for 10 tasks$" if n == 5 else "draw_ids has 3 ids"):
        SerialSampler(s.family, s.spec).sample(tasks, both, s.episodes, SEED, draw_ids=[0, 1, 2])


def test_pool_is_reused_across_calls(pool, nav):
    pids = pool.pids()
    _assert_same(nav.sample(pool), nav.reference)
    # fewer tasks than workers: the second worker gets half of each task's episodes
    one = nav.tasks[:1]
    params = {k: v if k == "log_std" else v[:1] for k, v in nav.params.items()}
    batch = pool.sample(one, params, nav.episodes, SEED)
    for k in FIELDS:
        assert torch.equal(getattr(batch, k)[0], getattr(nav.reference, k)[0])
    assert pool.pids() == pids


def test_ray_is_imported_only_when_its_backend_is_used():
    code = ("import sys, envs, metarl.sampling as s; from metarl.sampling.local import LocalSampler; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_backends_registered():
    assert {"serial", "local", "ray"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="unknown sampler backend"):
        make_sampler("nope", None, None)


# -- faults --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["kill", "segv"])
def test_dead_worker_is_replaced_and_batch_unchanged(nav, kind, caplog):
    with caplog.at_level(logging.WARNING, logger="metarl.sampling.local"):
        with LocalSampler(nav.family, nav.spec, workers=2, fault=(1, kind)) as sampler:
            first = sampler.pids()
            start = time.monotonic()
            _assert_same(nav.sample(sampler), nav.reference)
            assert time.monotonic() - start < 30
            assert sampler.stats()["worker_restarts"] == 1
            assert sampler.pids()[0] == first[0] and sampler.pids()[1] != first[1]
            assert not alive(first[1])
    assert any("died" in r.getMessage() and "re-running" in r.getMessage() for r in caplog.records)


def test_worker_killed_from_outside_between_calls(pool, nav):
    before = pool.stats()["worker_restarts"]
    victim = pool.pids()[0]
    os.kill(victim, signal.SIGKILL)
    _assert_same(nav.sample(pool), nav.reference)
    assert pool.stats()["worker_restarts"] == before + 1
    assert pool.pids()[0] != victim


def test_hung_worker_is_killed_after_timeout_without_busy_waiting(nav):
    with LocalSampler(nav.family, nav.spec, workers=2, timeout=2.0, fault=(0, "hang")) as sampler:
        wall, cpu = time.perf_counter(), time.process_time()
        _assert_same(nav.sample(sampler), nav.reference)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert sampler.stats()["worker_restarts"] == 1
    assert wall >= 2.0
    assert cpu < 0.25 * wall, f"the parent used {cpu:.2f} s of CPU in {wall:.2f} s while waiting"


def test_worker_exception_surfaces_traceback_and_leaves_no_process(nav):
    with LocalSampler(nav.family, nav.spec, workers=2, fault=(1, "raise")) as sampler:
        pids = sampler.pids()
        with pytest.raises(RuntimeError) as err:
            nav.sample(sampler)
    text = str(err.value)
    assert "Traceback (most recent call last)" in text
    assert "ValueError: fault injected for testing" in text and "in _inject" in text
    assert _wait_gone(pids, 5.0) == []


def test_close_joins_every_worker(nav):
    sampler = LocalSampler(nav.family, nav.spec, workers=2)
    nav.sample(sampler)
    pids = sampler.pids()
    assert all(alive(p) for p in pids)
    sampler.close()
    assert [p for p in pids if alive(p)] == []  # joined: gone at once, not eventually
    sampler.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        nav.sample(sampler)


SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import envs
    from metarl.policies import GaussianMLPPolicy
    from metarl.sampling import PolicySpec
    from metarl.sampling.local import LocalSampler

    if __name__ == "__main__":
        mode = sys.argv[1]
        family = envs.make_family("Navigation2D")
        policy = GaussianMLPPolicy(family.obs_dim, family.act_dim)
        tasks = family.sample_tasks(4, np.random.default_rng(0))
        fault = {"sigint": (0, "hang"), "raise": (0, "raise"), "parent_killed": None}[mode]
        sampler = LocalSampler(family, PolicySpec.of(policy), workers=2, fault=fault)
        sampler.sample(tasks, policy.params(), 2, seed=0) if mode == "parent_killed" else None
        print("pids", *sampler.pids(), flush=True)
        if mode == "parent_killed":
            time.sleep(600)
        sampler.sample(tasks, policy.params(), 2, seed=0)  # hangs (sigint) or raises (raise)
""")


@pytest.mark.parametrize("mode", ["sigint", pytest.param("raise", marks=pytest.mark.slow), "parent_killed"])
def test_no_worker_outlives_its_parent(tmp_path, mode):
    script = tmp_path / "run_sampler.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("pids"), proc.stderr.read() if not line else line
        pids = [int(p) for p in line.split()[1:]]
        assert all(alive(p) for p in pids)
        if mode == "sigint":
            time.sleep(1.0)  # let the call start and block on the hung worker
            proc.send_signal(signal.SIGINT)
        elif mode == "parent_killed":
            proc.kill()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if mode == "sigint":
        assert "KeyboardInterrupt" in err
    if mode == "raise":
        assert "fault injected for testing" in err and proc.returncode != 0
    assert _wait_gone(pids, 10.0) == []


# -- ray -----------------------------------------------------------------------------

@pytest.mark.slow  # two Ray nodes take about a minute to start here; the local-instance test below runs in CI
def test_ray_two_node_cluster_spreads_actors_and_matches_serial(setups, monkeypatch):
    import ray
    import ray._private.ray_constants
    from ray.cluster_utils import Cluster

    from metarl.sampling.ray_backend import RaySampler

    if ray.is_initialized():
        ray.shutdown()
    # ray.init(address="127.0.0.1:port") rewrites a loopback host to the machine's
    # network IP, where a cluster bound to 127.0.0.1 does not listen; this flag
    # makes Ray keep loopback addresses (as it does on macOS/Windows).
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    node_args = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node_args)
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        nav = setups["Navigation2D"]
        sampler = make_sampler("ray", nav.family, nav.spec, workers=None, ray_address=cluster.address)
        try:
            assert isinstance(sampler, RaySampler) and sampler.num_workers == 2
            placement = sampler.placement()
            assert len({node for node, _ in placement}) == 2, placement
            _assert_same(nav.sample(sampler), nav.reference)
            # a killed actor is replaced and its shard re-run with the same seed
            os.kill(placement[1][1], signal.SIGKILL)
            _assert_same(nav.sample(sampler), nav.reference)
            assert sampler.stats()["worker_restarts"] == 1
            assert {f"utilisation_w{i}" for i in range(2)} <= set(sampler.stats())
        finally:
            sampler.close()
        for name, s in setups.items():
            if name != "Navigation2D":
                with make_sampler("ray", s.family, s.spec, workers=2, ray_address=cluster.address) as other:
                    _assert_same(s.sample(other), s.reference)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.integration
def test_ray_local_instance_matches_serial_replaces_a_killed_actor_and_surfaces_errors(nav):
    import ray

    from metarl.sampling.ray_backend import LOOPBACK

    if ray.is_initialized():
        ray.shutdown()
    sampler = make_sampler("ray", nav.family, nav.spec, workers=2)
    try:
        _assert_same(nav.sample(sampler), nav.reference)
        # the instance the sampler started exposes nothing beyond loopback
        sockets = listening_addresses(os.getpid())
        names = {name for _, name, _, _ in sockets}
        assert any("gcs" in n for n in names) and any("raylet" in n for n in names), names
        exposed = [s for s in sockets if s[2] not in LOOPBACK]
        assert not exposed, exposed
        # a killed actor is replaced and its shard re-run with the same seed
        placement = sampler.placement()
        os.kill(placement[1][1], signal.SIGKILL)
        _assert_same(nav.sample(sampler), nav.reference)
        assert sampler.stats()["worker_restarts"] == 1
        bad = [dict(t) for t in nav.tasks]
        bad[-1]["goal"] = (5.0, 5.0)  # outside the task range: the env raises in the actor
        with pytest.raises(RuntimeError, match="(?s)Traceback.*outside"):
            sampler.sample(bad, nav.params, nav.episodes, SEED)
    finally:
        sampler.close()
    assert not ray.is_initialized()  # the sampler started Ray, so it shut it down
