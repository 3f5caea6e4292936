"""The bad-input corpus: every case exits 2 with one line on stderr and writes nothing.

Cases are built programmatically where they come in families (every task
family's constructor parameters, every checkpoint corruption under every
command that loads one).  Each runs ``metarl.cli.main`` in-process with the
working directory inside a scratch tree, which is snapshotted before and
after (paths, sizes, modification times): no file may appear, change or
vanish.  docs/reliability.md records the count (``pytest tests/test_bad_inputs.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import envs
from metarl import checkpoint
from metarl.cli import main
from metarl.inputs import constructor_parameters
from metarl.trainer import Trainer
from tests.helpers_limits import snapshot

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "iterations=1"]


@dataclass
class Case:
    name: str
    argv: Callable[[Path], list[str]]  # scratch root -> argv
    setup: Callable[[Path], None] | None = None


def _sets(*items: str) -> list[str]:
    out: list[str] = []
    for s in [*TINY, *items]:
        out += ["--set", s]
    return out


def train_set(name: str, *items: str, config: str = NAV) -> Case:
    return Case(name, lambda root: ["train", config, "--no-progress", *_sets(*items)])


def train_file(name: str, text: str | bytes) -> Case:
    def setup(root: Path) -> None:
        p = root / "bad.yaml"
        p.write_bytes(text.encode() if isinstance(text, str) else text)

    return Case(name, lambda root: ["train", str(root / "bad.yaml"), "--no-progress"], setup)


# -- env.kwargs: every family, unknown names and mistyped values ------------------------

def _kwargs_cases() -> list[Case]:
    cases = []
    for fam in envs.family_names():
        cases.append(train_set(f"kwargs-unknown-{fam}", f"env.family={fam}", "env.kwargs.bogus=1"))
        params, _ = constructor_parameters(envs.family_class(fam))
        numeric = [n for n, p in sorted(params.items())
                   if isinstance(p.default, int | float) and not isinstance(p.default, bool)]
        for n in numeric:
            cases.append(train_set(f"kwargs-abc-{fam}-{n}", f"env.family={fam}", f"env.kwargs.{n}=abc"))
            cases.append(train_set(f"kwargs-nan-{fam}-{n}", f"env.family={fam}", f"env.kwargs.{n}=.nan"))
        ranges = [n for n, p in sorted(params.items()) if isinstance(p.default, tuple)][:1]
        for n in ranges:
            cases.append(train_set(f"kwargs-range-{fam}-{n}", f"env.family={fam}", f"env.kwargs.{n}=[1, .nan]"))
    cases.append(train_set("kwargs-not-a-mapping", "env.kwargs=5"))
    return cases


# -- values without bounds, seeds, --set syntax -------------------------------------------

VALUE_CASES = [
    train_set("horizon-1e12", "env.horizon=1e12"),
    train_set("horizon-0", "env.horizon=0"),
    train_set("hidden-1e10", "policy.hidden_sizes=[1e10]"),
    train_set("hidden-100000", "policy.hidden_sizes=[100000]"),
    train_set("hidden-too-many-layers", "policy.hidden_sizes=[" + ",".join(["4"] * 40) + "]"),
    train_set("hidden-weights", "policy.hidden_sizes=[16000, 16000]"),
    train_set("workers-10000-local", "sampler.backend=local", "sampler.workers=10000"),
    train_set("workers-10000-ray", "sampler.backend=ray", "sampler.workers=10000"),
    train_set("workers-0", "sampler.workers=0"),
    train_set("hang-timeout-0", "sampler.hang_timeout=0"),
    train_set("hang-timeout-negative", "sampler.hang_timeout=-5"),
    train_set("hang-timeout-text", "sampler.hang_timeout=soon"),
    train_set("batch-steps", "algo.meta_batch_size=100000", "algo.episodes_per_task=10000", "env.horizon=1000"),
    train_set("seed-2**70-set", f"seed={2**70}"),
    train_set("seed-negative-set", "seed=-1"),
    train_set("null-byte-name", 'name="a\\0b"'),
    train_set("null-byte-kwarg", 'env.kwargs.xml_file="a\\0b"', "env.family=HalfCheetahVel"),
    train_set("inner-lr-text", "algo.inner_lr=abc"),
    train_set("inner-lr-1e-3-negative", "algo.inner_lr=-1e-3"),
    train_set("set-dot", ".=1"),
    train_set("set-env-scalar", "env=1"),
    train_set("set-double-dot", "algo..gamma=1"),
    train_set("set-empty-key", "=1"),
    train_set("set-no-equals", "algo.gamma"),
    train_set("set-unknown-section-key", "algo.bogus=1"),
    train_set("set-through-scalar", "iterations.x=1"),
    train_set("set-alias-bomb", "env.kwargs=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                                "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                                "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"),
    train_set("set-deep", "env.kwargs.x=" + "[" * 2000 + "]" * 2000),
]


# -- config files ------------------------------------------------------------------------

def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


FILE_CASES = [
    train_file("alias-bomb-9", _bomb(9)),
    train_file("alias-bomb-in-kwargs", "env:\n  kwargs:\n    x: " + _bomb(7).replace("\n", " ")[:0] + "1\n"
               + _bomb(7).replace("a", "env_a")),
    train_file("deep-list-50000", "x: " + "[" * 50000 + "]" * 50000 + "\n"),
    train_file("deep-map-50000", "x: " + "{a: " * 50000 + "1" + "}" * 50000 + "\n"),
    train_file("deep-block-40", "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "v: 1\n"),
    train_file("null-byte-escaped", 'name: "a\\0b"\n'),
    train_file("null-byte-raw", b"name: a\x00b\n"),
    train_file("binary", bytes(range(256)) * 4),
    train_file("latin-1", "name: caf\xe9\n".encode("latin-1")),
    train_file("huge-file", "# " + "x" * (1 << 20) + "\n"),
    train_file("top-level-list", "- 1\n- 2\n"),
    train_file("top-level-scalar", "hello\n"),
    train_file("malformed", "algo: [1, 2\n"),
    train_file("tab-indent", "algo:\n\tgamma: 0.9\n"),
    train_file("unknown-top-key", "bogus: 1\n"),
    train_file("env-scalar", "env: 1\n"),
    train_file("seed-huge", f"seed: {2**64}\n"),
    train_file("kwargs-nan", "env:\n  kwargs:\n    low: .nan\n"),
    train_file("kwargs-unknown", "env:\n  kwargs:\n    bogus: 1\n"),
    train_file("horizon-huge", "env:\n  horizon: 1000000000000\n"),
    Case("config-missing", lambda root: ["train", str(root / "nope.yaml")]),
    Case("config-directory", lambda root: ["train", str(root)]),
]


# -- command-line flags --------------------------------------------------------------------

def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)

    return setup


FLAG_CASES = [
    Case("seed-2**64", lambda root: ["train", NAV, "--seed", str(2**64)]),
    Case("seed-2**70", lambda root: ["train", NAV, "--seed", str(2**70)]),
    Case("seed-negative", lambda root: ["train", NAV, "--seed", "-3"]),
    Case("seed-text", lambda root: ["train", NAV, "--seed", "abc"]),
    Case("seeds-huge", lambda root: ["train", NAV, "--seeds", "1", str(2**65)]),
    Case("seeds-repeated", lambda root: ["train", NAV, "--seeds", "1", "1"]),
    Case("seeds-zero", lambda root: ["train", NAV, "--seeds", "0"]),
    Case("module-txt", lambda root: ["tasks", "--module", str(root / "notes.txt")], _write("notes.txt", "hello")),
    Case("module-yaml", lambda root: ["train", NAV, "--module", NAV]),
    Case("module-missing", lambda root: ["tasks", "--module", str(root / "nope.py")]),
    Case("module-syntax-error", lambda root: ["tasks", "--module", str(root / "bad.py")], _write("bad.py", "def (:\n")),
    Case("module-raises", lambda root: ["tasks", "--module", str(root / "boom.py")],
         _write("boom.py", "raise RuntimeError('boom\\nsecond line')\n")),
    Case("module-null-bytes", lambda root: ["tasks", "--module", str(root / "nul.py")],
         _write("nul.py", b"x = 1\x00\n")),
    Case("iterations-without-resume", lambda root: ["train", NAV, "--iterations", "5"]),
    Case("resume-missing", lambda root: ["train", "--resume", str(root / "nope")]),
    Case("resume-with-config", lambda root: ["train", NAV, "--resume", str(root / "good")]),
    Case("resume-iterations-below", lambda root: ["train", "--resume", str(root / "good"), "--iterations", "0"]),
    Case("no-command", lambda root: []),
    Case("unknown-command", lambda root: ["fly"]),
    Case("unknown-flag", lambda root: ["train", NAV, "--bogus"]),
    Case("train-nothing", lambda root: ["train"]),
    Case("check-family-unknown", lambda root: ["check-family", "Nope"]),
    Case("run-dir-not-empty", lambda root: ["train", NAV, "--run-dir", str(root / "good"), *_sets()]),
    Case("run-dir-under-file", lambda root: ["train", NAV, "--run-dir", str(root / "notes.txt" / "run"), *_sets()],
         _write("notes.txt", "hello")),
    Case("evaluate-out-under-file", lambda root: ["evaluate", str(root / "good"), "--out",
                                                  str(root / "notes.txt" / "a.json")], _write("notes.txt", "x")),
    Case("evaluate-out-directory", lambda root: ["evaluate", str(root / "good"), "--out", str(root)]),
    Case("evaluate-out-readonly", lambda root: ["evaluate", str(root / "good"), "--out", "/proc/metarl.json"]),
    Case("evaluate-not-a-run", lambda root: ["evaluate", str(root)]),
    Case("evaluate-tasks-0", lambda root: ["evaluate", str(root / "good"), "--tasks", "0"]),
    Case("evaluate-inner-lr-nan", lambda root: ["evaluate", str(root / "good"), "--inner-lr", "nan"]),
    Case("analyze-not-a-run", lambda root: ["analyze", str(root)]),
    Case("analyze-out-under-file", lambda root: ["analyze", str(root / "good"), "--out-dir",
                                                 str(root / "notes.txt" / "d")], _write("notes.txt", "x")),
    Case("plot-out-under-file", lambda root: ["plot", str(root / "good"), "--out", str(root / "notes.txt" / "a.png")],
         _write("notes.txt", "x")),
    Case("plot-out-readonly", lambda root: ["plot", str(root / "good"), "--out", "/proc/metarl.png"]),
    Case("plot-out-not-png", lambda root: ["plot", str(root / "good"), "--out", str(root / "a.jpg")]),
    Case("plot-missing-dir", lambda root: ["plot", str(root / "nope"), "--out", str(root / "a.png")]),
    Case("plot-labels-mismatch", lambda root: ["plot", str(root / "good"), "--labels", "a", "b", "--out",
                                               str(root / "a.png")]),
    Case("video-bad-suffix", lambda root: ["video", str(root / "good"), "--out", str(root / "v.avi")]),
    Case("video-odd-width", lambda root: ["video", str(root / "good"), "--width", "321"]),
]


# -- adaptation.json given to plot ----------------------------------------------------------

ADAPTATION = [
    ("null-steps", {"steps": None, "mean": [1.0], "stderr": [0.0]}),
    ("null-mean-entry", {"steps": [0], "mean": [None], "stderr": [0.0]}),
    ("null-stderr", {"steps": [0, 1], "mean": [1.0, 2.0], "stderr": None}),
    ("null-per-task", {"steps": [0], "mean": [1.0], "stderr": [0.0], "per_task": None}),
    ("missing-keys", {"mean": [1.0]}),
    ("not-a-mapping", [1, 2, 3]),
    ("lengths-differ", {"steps": [0, 1], "mean": [1.0], "stderr": [0.0]}),
    ("text-mean", {"steps": [0], "mean": ["high"], "stderr": [0.0]}),
]


def _plot_case(name: str, data: object | str) -> Case:
    def setup(root: Path) -> None:
        run = root / "plotrun"
        shutil.copytree(root / "good", run)
        (run / "eval").mkdir(exist_ok=True)
        (run / "eval" / "adaptation.json").write_text(data if isinstance(data, str) else json.dumps(data))

    return Case(f"plot-adaptation-{name}", lambda root: ["plot", str(root / "plotrun"), "--out",
                                                         str(root / "p.png")], setup)


PLOT_CASES = [_plot_case(n, d) for n, d in ADAPTATION] + [_plot_case("not-json", "{steps: ")]


# -- checkpoints: every corruption under every command that loads one ---------------------------

def _corrupt(kind: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        run = root / "bad"
        shutil.copytree(root / "good", run)
        ckpt = run / "checkpoints"
        path = checkpoint.latest(ckpt)
        data = path.read_bytes()
        state = checkpoint.load(path)
        if kind == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif kind == "random":
            path.write_bytes(os.urandom(len(data)))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "wrong-shape":
            state["meta"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state["meta"].items()}
            torch.save(state, path)
        elif kind == "broadcastable-shape":
            state["meta"] = {k: torch.zeros(1) for k in state["meta"]}
            torch.save(state, path)
        elif kind == "missing-tensor":
            state["meta"].pop(next(iter(state["meta"])))
            torch.save(state, path)
        elif kind == "nan":
            state["meta"] = {k: torch.full_like(v, float("nan")) for k, v in state["meta"].items()}
            torch.save(state, path)
        elif kind == "not-a-dict":
            torch.save([1, 2, 3], path)
        elif kind == "no-iteration":
            state.pop("iteration")
            torch.save(state, path)
        elif kind == "pickled-code":
            torch.save({"iteration": 1, "meta": _Evil()}, path)
        elif kind == "latest-empty":
            (ckpt / "latest").write_text("")
        elif kind == "latest-outside":
            (root / "outside.pt").write_bytes(data)
            (ckpt / "latest").write_text("../../outside.pt\n")
        elif kind == "latest-absolute":
            (ckpt / "latest").write_text(str(path) + "\n")
        elif kind == "latest-missing":
            (ckpt / "latest").write_text("iter_000099.pt\n")
        elif kind == "latest-binary":
            (ckpt / "latest").write_bytes(b"\xff\xfe\x00")
        else:
            raise AssertionError(kind)

    return setup


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


CORRUPTIONS = ["truncated", "random", "empty", "wrong-shape", "broadcastable-shape", "missing-tensor", "nan",
               "not-a-dict", "no-iteration", "pickled-code", "latest-empty", "latest-outside", "latest-absolute",
               "latest-missing", "latest-binary"]
COMMANDS = {
    "resume": lambda root: ["train", "--resume", str(root / "bad"), "--no-progress"],
    "resume-iterations": lambda root: ["train", "--resume", str(root / "bad"), "--iterations", "5", "--no-progress"],
    "evaluate": lambda root: ["evaluate", str(root / "bad"), "--tasks", "1", "--steps", "0"],
    "analyze": lambda root: ["analyze", str(root / "bad"), "--tasks", "1"],
}
CHECKPOINT_CASES = [Case(f"{cmd}-{kind}", argv, _corrupt(kind)) for cmd, argv in COMMANDS.items()
                    for kind in CORRUPTIONS]

# -- issue 35: paths beyond train CONFIG (one validation path, the lock, damaged run directories, --out) -------------

_LOCKS: list[int] = []  # run-directory locks the cases hold while metarl runs (released after each case)


def _hold_lock(run: Path) -> None:
    """Hold ``run``'s lock as another process would (a separate open file description, so this process's own
    :meth:`RunDir.lock` conflicts with it)."""
    import fcntl

    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _LOCKS.append(fd)


def _release_locks() -> None:
    while _LOCKS:
        os.close(_LOCKS.pop())


def _copy_good(root: Path, rel: str = "bad") -> Path:
    run = root / rel
    run.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "good", run)
    return run


def _locked(rel: str = "busy") -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        _hold_lock(_copy_good(root, rel))

    return setup


RESUME = lambda root: ["train", "--resume", str(root / "bad"), "--iterations", "3", "--no-progress"]  # noqa: E731

LOCK_CASES = [
    Case("lock-resume", lambda root: ["train", "--resume", str(root / "busy"), "--iterations", "3", "--no-progress"],
         _locked()),
    Case("lock-resume-same-budget", lambda root: ["train", "--resume", str(root / "busy"), "--no-progress"],
         _locked()),
    Case("lock-force", lambda root: ["train", NAV, "--run-dir", str(root / "busy"), "--force", "--no-progress",
                                     *_sets()], _locked()),
    Case("lock-seeds", lambda root: ["train", NAV, "--seeds", "1", "--run-dir", str(root / "base"), "--no-progress",
                                     *_sets("iterations=3")], _locked("base/seed1")),
]


def _damage(kind: str) -> Callable[[Path], None]:
    """A copy of the good run, ``bad``, with one file damaged."""

    def setup(root: Path) -> None:
        run = _copy_good(root)
        if kind == "checkpoints-file":
            shutil.rmtree(run / "checkpoints")
            (run / "checkpoints").write_text("not a directory\n")
        elif kind == "eval-file":
            (run / "eval").write_text("not a directory\n")
        elif kind == "scalars-header":
            (run / "scalars.csv").write_text("step,returns/pre_adapt\n0,1.0\n")
        elif kind == "scalars-binary":
            (run / "scalars.csv").write_bytes(bytes(range(256)) * 8)
        elif kind == "scalars-nul":
            (run / "scalars.csv").write_bytes(b"iteration,a\n0,\x001.0\n")
        elif kind == "scalars-iteration":
            text = (run / "scalars.csv").read_text().splitlines()
            text[1] = "zero" + text[1][text[1].index(","):]
            (run / "scalars.csv").write_text("\n".join(text) + "\n")
        elif kind == "scalars-negative":
            text = (run / "scalars.csv").read_text().splitlines()
            text[1] = "-1" + text[1][text[1].index(","):]
            (run / "scalars.csv").write_text("\n".join(text) + "\n")
        elif kind == "scalars-directory":
            (run / "scalars.csv").unlink()
            (run / "scalars.csv").mkdir()
        elif kind == "manifest-shape":
            (run / "manifest.json").write_text(json.dumps({"sessions": 5}))
        elif kind == "manifest-sessions":
            (run / "manifest.json").write_text(json.dumps({"sessions": [1, 2]}))
        elif kind == "manifest-versions":
            data = json.loads((run / "manifest.json").read_text())
            data["versions"] = ["torch"]
            (run / "manifest.json").write_text(json.dumps(data))
        elif kind == "manifest-not-json":
            (run / "manifest.json").write_text("{sessions: ")
        elif kind == "manifest-deep":
            (run / "manifest.json").write_text("[" * 100000 + "]" * 100000)
        else:
            raise AssertionError(kind)

    return setup


DAMAGES = ["checkpoints-file", "eval-file", "scalars-header", "scalars-binary", "scalars-nul", "scalars-iteration",
           "scalars-negative", "scalars-directory", "manifest-shape", "manifest-sessions", "manifest-versions",
           "manifest-not-json", "manifest-deep"]
DAMAGED_RUN_CASES = [Case(f"resume-{kind}", RESUME, _damage(kind)) for kind in DAMAGES] + [
    Case("resume-plain-checkpoints-file", lambda root: ["train", "--resume", str(root / "bad"), "--no-progress"],
         _damage("checkpoints-file")),
    Case("seeds-checkpoints-file", lambda root: ["train", NAV, "--seeds", "1", "--run-dir", str(root / "base"),
                                                 "--no-progress", *_sets("iterations=3")],
         lambda root: _damage("checkpoints-file")(root) or (root / "base").mkdir() or (root / "bad").rename(
             root / "base" / "seed1")),
] + [Case(f"{cmd}-{kind}", argv, _damage(kind))
     for kind in ("manifest-shape", "manifest-versions", "manifest-deep", "checkpoints-file", "eval-file")
     for cmd, argv in (("evaluate", lambda root: ["evaluate", str(root / "bad"), "--tasks", "1", "--steps", "0"]),
                       ("analyze", lambda root: ["analyze", str(root / "bad"), "--tasks", "1"]))]


def _config_text(text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        run = _copy_good(root)
        (run / "config.yaml").write_bytes(text.encode() if isinstance(text, str) else text)

    return setup


def _edit_config(**changes: object) -> Callable[[Path], None]:
    """The good run's ``config.yaml`` with dotted keys set (a hand edit)."""
    import yaml

    def setup(root: Path) -> None:
        run = _copy_good(root)
        data = yaml.safe_load((run / "config.yaml").read_text())
        for key, value in changes.items():
            *parents, last = key.split("__")
            node = data
            for k in parents:
                node = node.setdefault(k, {})
            node[last] = value
        (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    return setup


PLOT_BAD = lambda root: ["plot", str(root / "bad"), "--out", str(root / "p.png")]  # noqa: E731
CONFIG_IN_RUN_CASES = [
    Case("plot-config-malformed", PLOT_BAD, _config_text("algo: [1, 2\n")),
    Case("plot-config-deep", PLOT_BAD, _config_text("x: " + "[" * 50000 + "]" * 50000 + "\n")),
    Case("plot-config-alias-bomb", PLOT_BAD, _config_text(_bomb(9))),
    Case("plot-config-binary", PLOT_BAD, _config_text(bytes(range(256)) * 4)),
    Case("plot-config-duplicate-key", PLOT_BAD, _config_text("name: a\nname: b\n")),
    Case("plot-config-null-byte", PLOT_BAD, _config_text('name: "a\\0b"\n')),
    Case("evaluate-config-alias-bomb", lambda root: ["evaluate", str(root / "bad")], _config_text(_bomb(9))),
    Case("resume-config-deep", RESUME, _config_text("x: " + "{a: " * 50000 + "1" + "}" * 50000 + "\n")),
    _plot_case("deep-list", "[" * 100000 + "]" * 100000),
    _plot_case("deep-map", '{"steps": ' * 100000 + "1" + "}" * 100000),
]


def _fifo(rel: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(root / rel)

    return setup


def _link(rel: str, target: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)

    return setup


GOOD = lambda root: str(root / "good")  # noqa: E731
OUT_CASES = [
    Case("evaluate-out-fifo", lambda root: ["evaluate", GOOD(root), "--out", str(root / "a.json")], _fifo("a.json")),
    Case("evaluate-out-dev-null", lambda root: ["evaluate", GOOD(root), "--out", "/dev/null"]),
    Case("evaluate-out-link-to-dev-null", lambda root: ["evaluate", GOOD(root), "--out", str(root / "a.json")],
         _link("a.json", "/dev/null")),
    Case("evaluate-shots-out-fifo", lambda root: ["evaluate", GOOD(root), "--shots", "1", "--out",
                                                  str(root / "s.json")], _fifo("s.json")),
    Case("plot-out-fifo", lambda root: ["plot", GOOD(root), "--out", str(root / "p.png")], _fifo("p.png")),
    Case("plot-out-link-to-dev-null", lambda root: ["plot", GOOD(root), "--out", str(root / "p.png")],
         _link("p.png", "/dev/null")),
    Case("plot-out-directory", lambda root: ["plot", GOOD(root), "--out", str(root / "d.png")],
         lambda root: (root / "d.png").mkdir()),
    Case("analyze-out-fifo", lambda root: ["analyze", GOOD(root), "--out-dir", str(root / "an")],
         _fifo("an/analysis.json")),
    Case("video-out-fifo", lambda root: ["video", GOOD(root), "--out", str(root / "v.gif")], _fifo("v.gif")),
    Case("video-out-link-to-dev-null", lambda root: ["video", GOOD(root), "--out", str(root / "v.gif")],
         _link("v.gif", "/dev/null")),
]

SEEDS = lambda root, *items, run_dir=None: ["train", NAV, "--seeds", "1", "--no-progress",  # noqa: E731
                                            *(["--run-dir", run_dir] if run_dir else []), *_sets(*items)]
VALIDATION_CASES = [
    Case("seeds-low-above-high", lambda root: SEEDS(root, "env.kwargs.low=1", "env.kwargs.high=0")),
    Case("seeds-2-low-above-high", lambda root: ["train", NAV, "--seeds", "2", "--no-progress",
                                                 *_sets("env.kwargs.low=1", "env.kwargs.high=0")]),
    Case("seeds-run-dir-dev-null", lambda root: SEEDS(root, run_dir="/dev/null")),
    Case("seeds-run-dir-under-file", lambda root: SEEDS(root, run_dir=str(root / "notes.txt")),
         _write("notes.txt", "x")),
    Case("seeds-run-dir-readonly", lambda root: SEEDS(root, run_dir="/proc/metarl-runs")),
    Case("seeds-es-too-many-numbers", lambda root: SEEDS(root, "algo.name=es", "es.method=cma", "es.params=all",
                                                         "policy.hidden_sizes=[512, 512]")),
    Case("seeds-resume-edited-shape", lambda root: SEEDS(root, "iterations=3", run_dir=str(root / "base")),
         lambda root: _edit_config(policy__hidden_sizes=[16])(root) or (root / "base").mkdir()
         or (root / "bad").rename(root / "base" / "seed1")),
    Case("resume-edited-low-above-high", RESUME, _edit_config(env__kwargs__low=1.0, env__kwargs__high=0.0)),
    Case("evaluate-edited-low-above-high", lambda root: ["evaluate", str(root / "bad")],
         _edit_config(env__kwargs__low=1.0, env__kwargs__high=0.0)),
    Case("analyze-edited-low-above-high", lambda root: ["analyze", str(root / "bad")],
         _edit_config(env__kwargs__low=1.0, env__kwargs__high=0.0)),
    Case("video-edited-low-above-high", lambda root: ["video", str(root / "bad"), "--out", str(root / "v.gif")],
         _edit_config(env__kwargs__low=1.0, env__kwargs__high=0.0)),
    Case("evaluate-edited-unknown-kwarg", lambda root: ["evaluate", str(root / "bad")],
         _edit_config(env__kwargs__bogus=1)),
    Case("evaluate-edited-es-cma-too-large", lambda root: ["evaluate", str(root / "bad")],
         _edit_config(algo__name="es", es={"method": "cma", "params": "all"}, policy__hidden_sizes=[512, 512])),
]

SMALLER_CASES = [
    Case("config-fifo", lambda root: ["train", str(root / "c.yaml"), "--no-progress"], _fifo("c.yaml")),
    Case("config-dev-zero", lambda root: ["train", "/dev/zero", "--no-progress"]),
    Case("seeds-config-fifo", lambda root: ["train", str(root / "c.yaml"), "--seeds", "1"], _fifo("c.yaml")),
    Case("name-300", lambda root: ["train", NAV, "--no-progress", *_sets("name=" + "n" * 300)]),
    Case("name-250", lambda root: ["train", NAV, "--no-progress", *_sets("name=" + "n" * 250)]),
    Case("seeds-name-300", lambda root: SEEDS(root, "name=" + "n" * 300)),
    Case("run-dir-component-300", lambda root: ["train", NAV, "--no-progress", "--run-dir",
                                                str(root / "runs" / ("r" * 300)), *_sets()]),
    Case("evaluate-protocol-metaworld-on-navigation", lambda root: ["evaluate", GOOD(root), "--protocol",
                                                                    "metaworld"]),
    Case("evaluate-protocol-metaworld-on-navigation-tasks", lambda root: ["evaluate", GOOD(root), "--protocol",
                                                                          "metaworld", "--tasks", "3"]),
    train_file("duplicate-key", "name: a\nalgo:\n  gamma: 0.9\n  gamma: 0.8\n"),
    train_file("duplicate-top-level-key", "name: a\nname: b\n"),
    train_file("duplicate-kwargs-key", "env:\n  kwargs:\n    low: -1.0\n    low: -2.0\n"),
    train_file("duplicate-flow-key", "env: {horizon: 5, horizon: 6}\n"),
    train_set("set-duplicate-key", "env.kwargs={low: -1.0, low: -2.0}"),
    Case("resume-edited-hidden-sizes", RESUME, _edit_config(policy__hidden_sizes=[16])),
    Case("resume-edited-family", RESUME, _edit_config(env__family="HalfCheetahVel", env__kwargs={})),
    Case("resume-edited-task-range", RESUME, _edit_config(env__kwargs__low=-2.0, env__kwargs__high=2.0)),
    Case("resume-edited-horizon", RESUME, _edit_config(env__horizon=7)),
    Case("resume-edited-adapt", RESUME, _edit_config(policy__adapt="head")),
    Case("resume-edited-activation", RESUME, _edit_config(policy__activation="relu")),
    Case("resume-edited-oracle", RESUME, _edit_config(env__oracle=True)),
]

BIG = str(10**9)
SIZE_CASES = [
    train_set("horizon-null-batch", "env.horizon=null", "algo.meta_batch_size=300000"),
    train_set("horizon-null-batch-halfcheetah", "env.family=HalfCheetahVel", "env.horizon=null",
              "algo.meta_batch_size=300000"),
    train_set("inner-steps-1e6", "algo.inner_steps=1000000"),
    train_set("inner-steps-101", "algo.inner_steps=101"),
    train_set("inner-steps-times-batch", "algo.inner_steps=100", "algo.meta_batch_size=100000"),
    Case("seeds-inner-steps-1e6", lambda root: SEEDS(root, "algo.inner_steps=1000000")),
    Case("evaluate-tasks-1e9", lambda root: ["evaluate", GOOD(root), "--tasks", BIG]),
    Case("evaluate-episodes-1e9", lambda root: ["evaluate", GOOD(root), "--episodes", BIG]),
    Case("evaluate-shots-1e9", lambda root: ["evaluate", GOOD(root), "--shots", "1", BIG]),
    Case("evaluate-steps-1e6", lambda root: ["evaluate", GOOD(root), "--steps", "1000000"]),
    Case("evaluate-tasks-times-episodes", lambda root: ["evaluate", GOOD(root), "--tasks", "100000", "--episodes",
                                                        "1000"]),
    Case("analyze-tasks-1e9", lambda root: ["analyze", GOOD(root), "--tasks", BIG]),
    Case("video-steps-1e9", lambda root: ["video", GOOD(root), "--steps", BIG, "--out", str(root / "v.gif")]),
    Case("video-tasks-1e9", lambda root: ["video", GOOD(root), "--tasks", BIG, "--out", str(root / "v.gif")]),
    Case("video-frame-bytes", lambda root: ["video", GOOD(root), "--width", "4096", "--height", "4096", "--steps",
                                            "20", "--out", str(root / "v.gif")]),
]

def _family_module(name: str, body: str) -> str:
    """A module registering Navigation2D under ``name`` with ``body`` (methods) in its env class."""
    return ("from envs import register_family\nfrom envs.navigation import Navigation2DEnv\n\n\n"
            f"class Env(Navigation2DEnv):\n    family = {name!r}\n\n{body}\n\n"
            f"register_family({name!r}, Env, horizon=5)\n")


UNPRINTABLE = "class Unprintable(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n\n\n"
MODULE_CASES = [
    Case("module-sys-exit", lambda root: ["tasks", "--module", str(root / "ex.py")],
         _write("ex.py", "import sys\nsys.exit(3)\n")),
    Case("module-sys-exit-0", lambda root: ["tasks", "--module", str(root / "ex.py")],
         _write("ex.py", "import sys\nsys.exit(0)\n")),
    Case("module-sys-exit-text", lambda root: ["train", NAV, "--module", str(root / "ex.py")],
         _write("ex.py", "raise SystemExit('bye\\nnow')\n")),
    Case("module-unprintable-exception", lambda root: ["tasks", "--module", str(root / "un.py")],
         _write("un.py", UNPRINTABLE + "raise Unprintable()\n")),
    Case("train-family-constructor-raises", lambda root: ["train", NAV, "--module", str(root / "fam.py"),
                                                          "--no-progress", *_sets("env.family=BoomInit")],
         _write("fam.py", _family_module("BoomInit", "    def __init__(self, *a, **k):\n"
                                                     "        raise RuntimeError('no\\nway')\n"))),
    Case("train-family-constructor-unprintable", lambda root: ["train", NAV, "--module", str(root / "fam.py"),
                                                               "--no-progress", *_sets("env.family=BoomStr")],
         _write("fam.py", UNPRINTABLE + _family_module("BoomStr", "    def __init__(self, *a, **k):\n"
                                                                  "        raise Unprintable()\n"))),
    Case("seeds-family-constructor-raises", lambda root: ["train", NAV, "--module", str(root / "fam.py"),
                                                          "--seeds", "1", "--no-progress",
                                                          *_sets("env.family=BoomSeeds")],
         _write("fam.py", _family_module("BoomSeeds", "    def __init__(self, *a, **k):\n"
                                                      "        raise OSError('disk')\n"))),
]

BIG_OBSERVATION = ("    def __init__(self, *a, **k):\n        super().__init__(*a, **k)\n"
                   "        import gymnasium\n        import numpy as np\n"
                   "        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2_000_000,), np.float32)\n")
MODULE_CASES += [
    Case("train-family-huge-observation", lambda root: ["train", NAV, "--module", str(root / "big.py"),
                                                        "--no-progress", *_sets("env.family=BigObs",
                                                                                "policy.hidden_sizes=[64]")],
         _write("big.py", _family_module("BigObs", BIG_OBSERVATION))),
    Case("seeds-family-huge-observation", lambda root: ["train", NAV, "--module", str(root / "big.py"), "--seeds",
                                                        "1", "--no-progress", *_sets("env.family=BigObsSeeds",
                                                                                     "policy.hidden_sizes=[64]")],
         _write("big.py", _family_module("BigObsSeeds", BIG_OBSERVATION))),
]

# issue 35 part III: non-finite and huge floats (class 3), pass counts (class 2), the Ray address (class 8)
EVAL_GOOD = lambda root, *flags: ["evaluate", GOOD(root), *flags]  # noqa: E731
NONFINITE_CASES = [
    train_set("init-log-std-1e6", "policy.init_log_std=1e6"),
    train_set("init-log-std-minus-1e6", "policy.init_log_std=-1e6"),
    train_set("init-log-std-1e308", "policy.init_log_std=1e308"),
    train_set("init-log-std-inf", "policy.init_log_std=inf"),
    train_set("init-log-std-nan", "policy.init_log_std=.nan"),
    train_set("inner-lr-1e308", "algo.inner_lr=1e308"),
    train_set("inner-lr-1e4", "algo.inner_lr=1e4"),
    train_set("inner-lr-inf", "algo.inner_lr=.inf"),
    Case("seeds-init-log-std-1e6", lambda root: SEEDS(root, "policy.init_log_std=1e6")),
    Case("evaluate-edited-init-log-std-1e6", lambda root: ["evaluate", str(root / "bad")],
         _edit_config(policy__init_log_std=1e6)),
    Case("resume-edited-inner-lr-1e308", RESUME, _edit_config(algo__inner_lr=1e308)),
    Case("evaluate-inner-lr-1e308", lambda root: EVAL_GOOD(root, "--inner-lr", "1e308")),
    Case("evaluate-inner-lr-inf", lambda root: EVAL_GOOD(root, "--inner-lr", "inf")),
    Case("evaluate-inner-lr-minus-inf", lambda root: EVAL_GOOD(root, "--inner-lr", "-inf")),
    Case("evaluate-inner-lr-1e4", lambda root: EVAL_GOOD(root, "--inner-lr", "1e4")),
    Case("evaluate-inner-lr-1e400", lambda root: EVAL_GOOD(root, "--inner-lr", "1e400")),
    Case("evaluate-shots-inner-lr-1e308", lambda root: EVAL_GOOD(root, "--shots", "1", "2", "--inner-lr", "1e308")),
    Case("evaluate-protocol-inner-lr-nan", lambda root: EVAL_GOOD(root, "--protocol", "adaptation", "--inner-lr",
                                                                  "NaN")),
    Case("check-family-timeout-1e308", lambda root: ["check-family", "Navigation2D", "--check-timeout", "1e308"]),
    Case("check-family-timeout-inf", lambda root: ["check-family", "Navigation2D", "--check-timeout", "inf"]),
    Case("check-family-timeout-nan", lambda root: ["check-family", "Navigation2D", "--check-timeout", "nan"]),
]
PASS_CASES = [
    train_set("proximal-epochs-1e9", "algo.name=maml_ppo", "proximal.epochs=1000000000"),
    train_set("promp-epochs-10001", "algo.name=promp", "proximal.epochs=10001"),
    train_set("rl2-epochs-1e9", "algo.name=rl2", "policy.kind=gru", "rl2.epochs=1000000000"),
    train_set("rl2-minibatches-1e9", "algo.name=rl2", "policy.kind=gru", "rl2.minibatches=1000000000"),
    train_set("rl2-episodes-per-trial-1e9", "algo.name=rl2", "policy.kind=gru",
              "rl2.episodes_per_trial=1000000000"),
    train_set("trpo-cg-iters-1e9", "trpo.cg_iters=1000000000"),
    train_set("trpo-ls-max-steps-1e9", "trpo.ls_max_steps=1000000000"),
    train_set("es-population-1e9", "algo.name=es", "es.population=1000000000"),
    Case("seeds-proximal-epochs-1e9", lambda root: SEEDS(root, "algo.name=maml_ppo", "proximal.epochs=1000000000")),
    Case("resume-edited-cg-iters-1e9", RESUME, _edit_config(trpo__cg_iters=1000000000)),
]
RAY_CASES = [
    train_set("ray-address-not-an-address", "sampler.backend=ray", "sampler.ray_address=not an address"),
    train_set("ray-address-no-port", "sampler.backend=ray", "sampler.ray_address=127.0.0.1"),
    train_set("ray-address-port-0", "sampler.backend=ray", "sampler.ray_address=127.0.0.1:0"),
    train_set("ray-address-port-99999", "sampler.backend=ray", "sampler.ray_address=127.0.0.1:99999"),
    train_set("ray-address-scheme-only", "sampler.backend=ray", "sampler.ray_address=ray://"),
    train_set("ray-address-url", "sampler.backend=ray", "sampler.ray_address=http://10.0.0.1:6379/x"),
    Case("seeds-ray-address-not-an-address", lambda root: SEEDS(root, "sampler.backend=ray",
                                                                "sampler.ray_address=not an address")),
    Case("evaluate-edited-ray-address", lambda root: ["evaluate", str(root / "bad")],
         _edit_config(sampler__backend="ray", sampler__ray_address="not an address")),
]

ISSUE_35_CASES = (NONFINITE_CASES + PASS_CASES + RAY_CASES + LOCK_CASES + DAMAGED_RUN_CASES + CONFIG_IN_RUN_CASES
                  + OUT_CASES + VALIDATION_CASES
                  + SMALLER_CASES + SIZE_CASES + MODULE_CASES)
CORPUS = (_kwargs_cases() + VALUE_CASES + FILE_CASES + FLAG_CASES + PLOT_CASES + CHECKPOINT_CASES
          + ISSUE_35_CASES)
FAST = {"kwargs-unknown-Navigation2D", "kwargs-abc-HalfCheetahVel-velocity_low", "kwargs-nan-Navigation2D-low",
        "horizon-1e12", "hidden-1e10", "workers-10000-local", "seed-2**70", "null-byte-escaped", "alias-bomb-9",
        "deep-list-50000", "set-dot", "set-env-scalar", "module-txt", "evaluate-out-readonly", "plot-out-readonly",
        "plot-adaptation-null-steps", "resume-truncated", "resume-latest-outside", "evaluate-nan",
        "analyze-wrong-shape", "resume-iterations-below", "resume-broadcastable-shape",
        # issue 35: the lock, damaged run directories, --out, every command's validation, the smaller ones
        "lock-resume", "lock-force", "resume-checkpoints-file", "resume-scalars-iteration", "plot-config-alias-bomb",
        "evaluate-manifest-shape", "evaluate-out-fifo", "plot-out-link-to-dev-null", "seeds-low-above-high",
        "seeds-run-dir-dev-null", "evaluate-edited-low-above-high", "config-fifo", "name-300", "duplicate-key",
        "resume-edited-task-range", "evaluate-protocol-metaworld-on-navigation", "horizon-null-batch",
        "inner-steps-1e6", "evaluate-tasks-1e9", "video-frame-bytes",
        # issue 35 part III: non-finite and huge floats, pass counts, the Ray address
        "init-log-std-1e6", "evaluate-inner-lr-1e308", "evaluate-inner-lr-inf", "check-family-timeout-1e308",
        "proximal-epochs-1e9", "rl2-epochs-1e9", "ray-address-not-an-address", "ray-address-port-99999"}


def test_corpus_is_large_and_names_are_unique():
    names = [c.name for c in CORPUS]
    assert len(names) == len(set(names))
    assert len(CORPUS) >= 120, len(CORPUS)
    assert FAST <= set(names)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    from metarl.config import load_config

    run = tmp_path_factory.mktemp("good") / "good"
    run.mkdir()
    Trainer(load_config(NAV, TINY + ["log.checkpoint_every=1"]), run).train()
    return run


def run_case(case: Case, good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(good, root / "good")
    _release_locks()
    if case.setup is not None:
        case.setup(root)
    monkeypatch.chdir(root)
    before = snapshot(root)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
            code = main(case.argv(root))
    finally:
        _release_locks()
    err = buf.getvalue()
    assert code == 2, (case.name, code, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarl: error: "), (case.name, err[:2000])
    assert len(lines[0]) < 500, (case.name, lines[0][:600])
    assert snapshot(root) == before, (case.name, set(snapshot(root)) ^ set(before))


@pytest.mark.parametrize("case", [c for c in CORPUS if c.name in FAST], ids=lambda c: c.name)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, good_run, tmp_path, monkeypatch):
    run_case(case, good_run, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_bad_input_corpus(case, good_run, tmp_path, monkeypatch):
    run_case(case, good_run, tmp_path, monkeypatch)


def test_messages_name_the_key(good_run, tmp_path, monkeypatch):
    for item, key in ((".=1", "--set ."), ("env=1", "env:"), ("policy.hidden_sizes=[1e10]", "policy.hidden_sizes"),
                      ("env.kwargs.bogus=1", "env.kwargs.bogus")):
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            assert main(["train", NAV, "--set", item]) == 2
        assert key in buf.getvalue(), (item, buf.getvalue())


@pytest.mark.parametrize("argv", [["video", "{good}", "--out", "{root}/v.gif"], ["tasks"], ["check-family", "Nope"]])
def test_an_invalid_mujoco_gl_is_one_line(argv, good_run, tmp_path, monkeypatch):
    """``MUJOCO_GL=garbage``: one line naming it, exit 2, nothing written (mujoco would raise at import)."""
    monkeypatch.setenv("MUJOCO_GL", "garbage")
    case = Case("mujoco-gl", lambda root: [a.format(good=root / "good", root=root) for a in argv])
    run_case(case, good_run, tmp_path, monkeypatch)


@pytest.mark.parametrize("kind", ["raises", "unprintable", "hangs"])
def test_check_family_prints_its_failed_line_when_a_step_fails_or_hangs(kind, tmp_path, capsys):
    """A family whose ``step`` raises anything (or an exception whose ``__str__`` raises) or hangs: check-family
    prints its FAILED line and exits 1; a hanging check ends after ``--check-timeout`` seconds."""
    import time

    name = f"CheckStep{kind.title()}"
    body = {"raises": "    def step(self, action):\n        raise RuntimeError('boom')\n",
            "unprintable": "    def step(self, action):\n        raise Unprintable()\n",
            "hangs": "    def step(self, action):\n        while True:\n            time.sleep(0.01)\n"}[kind]
    path = tmp_path / f"{kind}.py"
    path.write_text("import time\n" + UNPRINTABLE + _family_module(name, body))
    t0 = time.monotonic()
    assert main(["check-family", name, "--module", str(path), "--check-timeout", "2"]) == 1
    assert time.monotonic() - t0 < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"check-family {name}: FAILED: "), err
    assert {"raises": "RuntimeError: boom", "unprintable": "cannot be printed", "hangs": "within 2 s"}[kind] in err[0]


def test_1e_minus_3_is_a_number():
    from metarl.config import load_config

    assert load_config(NAV, ["algo.inner_lr=1e-3"]).algo.inner_lr == 1e-3
    assert load_config(NAV, ["proximal.lr=2E-4"]).proximal.lr == 2e-4


def test_every_constructor_parameter_is_known_to_the_check():
    for fam in envs.family_names():
        params, open_ended = constructor_parameters(envs.family_class(fam))
        assert not open_ended and params, fam
        assert all(p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                   for p in params.values())
