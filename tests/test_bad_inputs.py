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

CORPUS = _kwargs_cases() + VALUE_CASES + FILE_CASES + FLAG_CASES + PLOT_CASES + CHECKPOINT_CASES
FAST = {"kwargs-unknown-Navigation2D", "kwargs-abc-HalfCheetahVel-velocity_low", "kwargs-nan-Navigation2D-low",
        "horizon-1e12", "hidden-1e10", "workers-10000-local", "seed-2**70", "null-byte-escaped", "alias-bomb-9",
        "deep-list-50000", "set-dot", "set-env-scalar", "module-txt", "evaluate-out-readonly", "plot-out-readonly",
        "plot-adaptation-null-steps", "resume-truncated", "resume-latest-outside", "evaluate-nan",
        "analyze-wrong-shape", "resume-iterations-below", "resume-broadcastable-shape"}


def test_corpus_is_large_and_names_are_unique():
    names = [c.name for c in CORPUS]
    assert len(names) == len(set(names))
    assert len(CORPUS) >= 120, len(CORPUS)
    assert FAST <= set(names)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


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
    if case.setup is not None:
        case.setup(root)
    monkeypatch.chdir(root)
    before = snapshot(root)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = main(case.argv(root))
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
