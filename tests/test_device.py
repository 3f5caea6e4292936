"""The learner's device (``device: auto | cpu | cuda[:N]``), checked on a CPU-only machine.

The learner (meta-parameters, inner loop, outer step, baseline fit) runs on the run's device; workers
sample on CPU; checkpoints hold CPU tensors.  Without CUDA here, the tests check what can be checked:
every tensor factory in the learner names its device, a learner moves whole to another device (``meta``),
``device: cuda`` without CUDA exits 2 before anything is written, workers never initialise CUDA, a
checkpoint written on one device loads on another, and ``device: cpu`` is bit-identical to a run without
the key.
"""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from metarl import checkpoint, manifest
from metarl.algos import ALGOS
from metarl.cli import main
from metarl.config import ConfigError, load_config, resolve_device
from metarl.trainer import Trainer
from tests.helpers_core import random_batch, tiny_policy
from tests.helpers_limits import time_limit, tiny_cli_sets

ROOT = Path(__file__).resolve().parents[1]
NAV_CONFIG = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
SMALL = ["algo.meta_batch_size=4", "algo.episodes_per_task=4", "env.horizon=20", "policy.hidden_sizes=[8]",
         "sampler.backend=serial", "log.checkpoint_every=2"]

# -- the audit: every tensor the learner makes names its device -----------------------------

LEARNER_MODULES = ["metarl/adaptation.py", "metarl/baselines.py", "metarl/episodes.py", "metarl/losses.py",
                   "metarl/policies.py",
                   *(str(p.relative_to(ROOT)) for d in ("algos", "inner_updates")
                     for p in sorted((ROOT / "metarl" / d).glob("*.py")))]
FACTORIES = {"zeros", "ones", "empty", "full", "eye", "arange", "linspace", "logspace", "tensor", "as_tensor",
             "rand", "randn", "randint", "randperm", "scalar_tensor", "empty_strided", "tril_indices",
             "triu_indices"}
"""``torch.<name>(...)`` calls that make a tensor from nothing (``*_like``, ``Tensor.new_*`` and operations on
existing tensors follow their inputs' device)."""
ALLOWED = {
    ("metarl/policies.py", "GaussianMLPPolicy.__init__"): "the module is built on CPU from the seed (the same "
                                                          "initialisation on every device) and moved whole",
    ("metarl/policies.py", "<module>"): "a Python float constant (log 2π)",
    ("metarl/policies.py", "GaussianGRUPolicy.__init__"): "built on CPU from the seed and moved whole, as the MLP",
}


def _factory_calls_without_device(path: str, root: Path = ROOT) -> list[str]:
    tree = ast.parse((root / path).read_text(), path)
    out: list[str] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name if scope == "<module>" else f"{scope}.{child.name}")
                continue
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"
                    and child.func.attr in FACTORIES and not any(k.arg == "device" for k in child.keywords)
                    and (path, scope) not in ALLOWED):
                out.append(f"{path}:{child.lineno} torch.{child.func.attr} in {scope}")
            visit(child, scope)

    visit(tree, "<module>")
    return out


def test_every_tensor_factory_in_the_learner_passes_a_device():
    assert len(LEARNER_MODULES) > 10
    missing = [hit for path in LEARNER_MODULES for hit in _factory_calls_without_device(path)]
    assert not missing, "tensor factories without device= (use device=, *_like or new_*):\n" + "\n".join(missing)


def test_the_audit_catches_a_factory_without_a_device(tmp_path):
    src = ("import torch\nclass A:\n    def f(self, x):\n        a = torch.zeros(3, dtype=x.dtype)\n"
           "        return a + torch.eye(2, device=x.device) + x.new_zeros(2) + torch.ones_like(x)\n")
    (tmp_path / "probe.py").write_text(src)
    assert _factory_calls_without_device("probe.py", tmp_path) == ["probe.py:4 torch.zeros in A.f"]


@pytest.mark.parametrize("algo,rule", [("maml_trpo", "sgd"), ("maml_trpo", "meta_sgd"), ("maml_trpo", "kronecker"),
                                       ("maml_trpo", "lstm"), ("maml_trpo", "blur"), ("promp", "sgd"),
                                       ("maml_ppo", "sgd")])
def test_a_learner_moves_whole_to_another_device(algo, rule):
    """``to(device)`` moves every meta-parameter and the outer loop's own tensors; the rule's stay leaves that
    require grad; the state dict then lives on that device."""
    policy = tiny_policy()
    learner = ALGOS[algo](policy, [k for k in policy.params()], inner_update=rule)
    moved = learner.to("meta")
    assert moved is learner and learner.device == torch.device("meta")
    assert all(v.device.type == "meta" for v in learner.meta_params().values())
    assert all(v.is_leaf and v.requires_grad for v in learner.rule_params.values())
    floats = {k: v for k, v in learner.state_dict().items() if v.is_floating_point() and v.dim() > 0}
    assert floats and all(v.device.type == "meta" for v in floats.values())


def test_the_inner_loop_runs_on_the_meta_device():
    """Shapes flow through advantages' GAE, the inner loss and its gradient step with every tensor on ``meta``
    (no data: the check is that nothing the inner loop makes lands on another device)."""
    from metarl.adaptation import adapt
    from metarl.episodes import gae, normalize

    policy = tiny_policy().to("meta")
    batch = random_batch().to("meta")
    values = torch.zeros_like(batch.rewards)
    adv = normalize(gae(batch.rewards, values, batch.mask, 0.99, 1.0), batch.mask)
    adapted = adapt(policy, policy.params(), batch, adv, 0.1, 1, False, list(policy.params()))
    assert adv.device.type == "meta" and all(v.device.type == "meta" for v in adapted.values())


# -- device resolution and the bad-device error ----------------------------------------------

def test_resolve_device_forms(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")  # silently
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device(spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="sees 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("value", ["gpu", "cuda:-1", "cuda:x", "CPU", "mps"])
def test_a_bad_device_form_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"^device: must be auto, cpu, cuda or cuda:N"):
        load_config(NAV_CONFIG, [f"device={value}"])


@pytest.mark.parametrize("value,message", [
    ("cuda", "device: cuda asked for, but torch sees no CUDA device here"),
    ("cuda:1", "device: cuda:1 asked for, but torch sees no CUDA device here"),
    ("gpu", "device: must be auto, cpu, cuda or cuda:N, got 'gpu'"),
])
def test_cli_device_cuda_without_cuda_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch,
                                                                                 value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, or a GPU one pretending
    with time_limit(30):
        assert main(["train", NAV_CONFIG, *tiny_cli_sets(), "--set", f"device={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_resuming_a_cuda_run_without_cuda_exits_2_with_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    sets = [a for s in [*SMALL, "iterations=1"] for a in ("--set", s)]
    assert main(["train", NAV_CONFIG, *sets, "--run-dir", str(run), "--no-progress"]) == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("device: auto", "device: cuda"))
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--resume", str(run), "--iterations", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "device: cuda asked for, but torch sees no CUDA device here" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_the_trainer_refuses_a_missing_cuda_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="no CUDA device"):
        Trainer(load_config(NAV_CONFIG, [*SMALL, "iterations=1", "device=cuda"]), run)
    assert list(run.iterdir()) == []


def test_the_manifest_records_the_device_auto_chose(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "run").mkdir()
    Trainer(load_config(NAV_CONFIG, [*SMALL, "iterations=1", "device=auto"]), tmp_path / "run").train()
    data = json.loads((tmp_path / "run" / manifest.FILENAME).read_text())
    assert data["device"] == "cpu" and data["sessions"][-1]["device"] == "cpu"
    assert manifest.device_record(None) is None


# -- workers never initialise CUDA ----------------------------------------------------------

@pytest.mark.integration
def test_local_workers_never_initialise_cuda(tmp_path):
    """A spy family reports, from inside each worker process, whether CUDA state is initialised there and how
    the process started; workers come from the fork server (or spawn), never a fork of the learner's process."""
    import envs
    from envs.base import TaskFamily
    from metarl.policies import GaussianMLPPolicy
    from metarl.sampling import PolicySpec
    from metarl.sampling.local import LocalSampler

    class CudaSpy(TaskFamily):  # defined here: pickled by value into the workers
        def make_vector(self, tasks):
            import torch as worker_torch

            report = {"pid": os.getpid(), "cuda_initialized": worker_torch.cuda.is_initialized(),
                      "cuda_in_bad_fork": bool(getattr(worker_torch.cuda, "_is_in_bad_fork", lambda: False)())}
            (Path(self.report_dir) / f"{os.getpid()}.json").write_text(json.dumps(report))
            return super().make_vector(tasks)

    nav = envs.make_family("Navigation2D", horizon=5)
    spy = CudaSpy(nav.name, nav.env_cls, nav.horizon, dict(nav.kwargs))
    spy.report_dir = str(tmp_path)
    policy = GaussianMLPPolicy(spy.obs_dim, spy.act_dim, (4,))
    with LocalSampler(spy, PolicySpec.of(policy), workers=2) as sampler:
        assert sampler._ctx.get_start_method() != "fork"
        batch = sampler.sample(spy.sample_tasks(2, __import__("numpy").random.default_rng(0)), policy.params(), 2, 0)
    assert batch.obs.shape[:3] == (2, 5, 2)
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(reports) == 2 and all(r["pid"] != os.getpid() for r in reports)
    assert not any(r["cuda_initialized"] or r["cuda_in_bad_fork"] for r in reports), reports
    assert multiprocessing.current_process().name == "MainProcess"


def test_the_sampler_sends_cpu_copies_of_parameters_on_another_device():
    """``sample`` takes the learner's tensors wherever they live and sends the workers CPU arrays (here a
    ``meta`` tensor, which has no data, must fail in the copy, not reach a worker as a non-CPU tensor)."""
    import envs
    from metarl.policies import GaussianMLPPolicy
    from metarl.sampling import PolicySpec
    from metarl.sampling.serial import SerialSampler

    nav = envs.make_family("Navigation2D", horizon=5)
    policy = GaussianMLPPolicy(nav.obs_dim, nav.act_dim, (4,))
    sent = []
    sampler = SerialSampler(nav, PolicySpec.of(policy))
    real = sampler._dispatch
    sampler._dispatch = lambda tasks, arrays, shards, seed: sent.append(arrays) or real(tasks, arrays, shards, seed)
    tasks = nav.sample_tasks(2, __import__("numpy").random.default_rng(0))
    sampler.sample(tasks, policy.params(), 2, 0)
    assert sent and all(type(v).__module__ == "numpy" for v in sent[0].values())
    with pytest.raises(NotImplementedError):
        sampler.sample(tasks, {k: v.to("meta") for k, v in policy.params().items()}, 2, 0)


# -- checkpoints are device-independent -------------------------------------------------------

def test_a_checkpoint_holds_cpu_tensors_and_loads_onto_another_device(tmp_path):
    policy = tiny_policy()
    learner = ALGOS["maml_trpo"](policy, list(policy.params()), inner_update="meta_sgd")
    state = {"iteration": 3, "meta": learner.state_dict()}
    path = checkpoint.save(tmp_path, 3, state)
    loaded = checkpoint.load(path)  # map_location="cpu"
    assert all(v.device.type == "cpu" for v in loaded["meta"].values())
    on_meta = ALGOS["maml_trpo"](tiny_policy(seed=5), list(policy.params()), inner_update="meta_sgd").to("meta")
    on_meta.load_state_dict(loaded["meta"])  # CPU tensors into a learner on another device
    assert on_meta.device.type == "meta"
    back = ALGOS["maml_trpo"](tiny_policy(seed=5), list(policy.params()), inner_update="meta_sgd")
    back.load_state_dict(loaded["meta"])
    assert all(torch.equal(v, learner.state_dict()[k]) for k, v in back.state_dict().items())


def test_on_cpu_converts_nested_tensors():
    state = {"a": [torch.ones(1)], "b": (torch.zeros(1), 2), "c": "text"}
    out = checkpoint.on_cpu(state)
    assert out["c"] == "text" and out["b"][1] == 2 and isinstance(out["b"], tuple)
    assert torch.equal(out["a"][0], state["a"][0])


# -- device: cpu is today's run ------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["maml_trpo", "promp"])
def test_device_cpu_is_bit_identical_to_a_run_without_the_key(tmp_path, algo):
    """``device: cpu`` (and ``auto`` on this machine) trains exactly as a config without the key did."""
    runs = {}
    for name, extra in (("none", []), ("cpu", ["device=cpu"]), ("auto", ["device=auto"])):
        (tmp_path / name).mkdir()
        cfg = load_config(NAV_CONFIG, [*SMALL, "iterations=2", f"algo.name={algo}", *extra])
        if not extra:
            assert cfg.device == "auto"  # the default
        trainer = Trainer(cfg, tmp_path / name)
        if name == "auto" and torch.cuda.is_available():
            continue  # auto picks CUDA on a GPU machine: bench_device.py compares those runs
        results = trainer.train()
        ckpt = checkpoint.load(checkpoint.latest(tmp_path / name / "checkpoints"))
        runs[name] = ([r.scalars["returns/post_adapt"] for r in results], ckpt["meta"])
    base_returns, base_meta = runs.pop("none")
    for returns, meta in runs.values():
        assert returns == base_returns
        assert meta.keys() == base_meta.keys() and all(torch.equal(meta[k], base_meta[k]) for k in meta)


# -- benchmarks/bench_device.py ----------------------------------------------------------------

def test_bench_device_says_plainly_when_there_is_no_cuda(monkeypatch, capsys):
    from benchmarks import bench_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["bench_device.py"])
    assert bench_device.main() == 0
    assert capsys.readouterr().out.startswith("no CUDA here: torch")


def test_bench_device_runs_and_compares_returns():
    import argparse

    from benchmarks import bench_device

    args = argparse.Namespace(family="Navigation2D", tasks=2, episodes=2, horizon=10, backend="serial", workers=1,
                              iterations=2, seed=3)
    cpu = bench_device.run(args, "cpu")
    assert len(cpu) == 2 and set(cpu[0]) == set(bench_device.KEYS)
    assert bench_device.off_tolerance(cpu, cpu, 1e-2) == []
    drifted = [dict(r) for r in cpu]
    drifted[0]["returns/pre_adapt"] += 1e-9  # iteration 0's pre-adaptation return must be exact
    drifted[1]["returns/post_adapt"] *= 1.5
    bad = bench_device.off_tolerance(cpu, drifted, 1e-2)
    assert len(bad) == 2 and "must be equal" in bad[0] and "rtol 0.01" in bad[1]
