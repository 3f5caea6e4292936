"""The one-file example family and the code in the README's "Adding a task family" section."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import envs

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "families" / "swimmer_vel.py"
README = ROOT / "README.md"


def doc_text() -> str:
    """The README section that walks through adding a family."""
    text = README.read_text()
    start = text.index("## Adding a task family")
    end = text.index("\n## ", start + 1)
    return text[start:end]


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def _blocks(text: str) -> list[tuple[str, str, str | None]]:
    """``(language, code, file marker)`` for every fenced block of the markdown ``text``."""
    out = []
    fence = r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)\n```"
    for m in re.finditer(fence, text, re.S):
        out.append((m["lang"], m["code"] + "\n", m["file"]))
    return out


def test_swimmer_example_registers_and_passes_check_family(at_root):
    import experiments.families.swimmer_vel as mod

    assert "SwimmerVel" in envs.family_names()
    family = envs.make_family("SwimmerVel")
    assert family.env_cls is mod.SwimmerVelEnv and family.horizon == 200
    venv = family.make_vector(family.sample_tasks(2, np.random.default_rng(0)))
    assert isinstance(venv, envs.LoopBatchedEnv)
    envs.check_family("SwimmerVel")
    envs.check_family(envs.make_family("SwimmerVel", action_scale=0.1), n_tasks=2, steps=10)
    env = envs.make_family("SwimmerVel", action_scale=0.1).make_env()
    env.reset(seed=0)
    a = np.array([3.0, -25.0])
    _, _, _, _, info = env.step(a)
    assert np.array_equal(env.data.ctrl, [0.1 * 3.0, -1.0])  # clip(0.1 * a, [-1, 1])
    assert info["reward_ctrl"] == pytest.approx(-1e-4 * (0.3**2 + 1.0))
    assert len(EXAMPLE.read_text().splitlines()) <= 60


def test_swimmer_rejects_bad_tasks(at_root):
    import experiments.families.swimmer_vel  # noqa: F401

    family = envs.make_family("SwimmerVel")
    with pytest.raises(envs.TaskError, match="velocity"):
        family.make_env({"velocity": 5.0})
    with pytest.raises(envs.TaskError, match="missing"):
        family.make_env({"speed": 0.1})


def test_doc_shows_the_example_file_verbatim():
    blocks = _blocks(doc_text())
    shown = [code for _, code, f in blocks if f == "experiments/families/swimmer_vel.py"]
    assert shown == [EXAMPLE.read_text()]


def test_doc_python_blocks_run_as_written(at_root, capsys):
    blocks = [code for lang, code, f in _blocks(doc_text()) if lang == "python" and f is None]
    assert len(blocks) >= 3
    for i, code in enumerate(blocks):
        namespace: dict = {"__name__": f"doc_block_{i}"}
        exec(compile(code, f"README.md[adding a family, block {i}]", "exec"), namespace)
    assert "reward_forward" in capsys.readouterr().out


def test_doc_shell_commands_name_existing_files():
    shell = "\n".join(code for lang, code, _ in _blocks(doc_text()) if lang == "sh")
    paths = set(re.findall(r"experiments/\S+\.(?:py|yaml)", shell))
    assert paths, "expected the shell examples to name files"
    for p in paths:
        assert (ROOT / p).exists(), p
    assert "metarl check-family SwimmerVel --module experiments/families/swimmer_vel.py" in shell
    assert "--set env.family=SwimmerVel" in shell


def test_check_family_reports_unknown_names():
    with pytest.raises(KeyError, match="NoSuchFamily"):
        envs.check_family("NoSuchFamily")


def test_check_family_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_tasks"):
        envs.check_family("HalfCheetahDir", n_tasks=0)

