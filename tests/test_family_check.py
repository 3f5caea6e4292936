"""The one-file example family and the code of the "Adding a task family" guide (docs/guides/add-a-family.md)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import envs

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "families" / "swimmer_vel.py"
GUIDE = ROOT / "docs" / "guides" / "add-a-family.md"


def doc_text() -> str:
    """The guide that walks through adding a family (the whole page)."""
    text = GUIDE.read_text()
    assert text.startswith("# Adding a task family")
    return text


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
        exec(compile(code, f"docs/guides/add-a-family.md[block {i}]", "exec"), namespace)
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



# -- what check-family says about the commonest mistakes -----------------------------


def _swimmer_variant() -> type:
    """The example family's env class, to derive broken variants from (needs the ``at_root`` fixture)."""
    import experiments.families.swimmer_vel as mod

    return mod.SwimmerVelEnv


def _broken(cls) -> envs.TaskFamily:
    return envs.TaskFamily("BrokenSwimmer", cls, 20)


def test_check_family_names_declared_and_actual_observation_shape(at_root):
    base = _swimmer_variant()

    class NineDeclaredEight(base):  # one entry more than the 8 the constructor declares
        def _obs(self):
            return np.append(super()._obs(), np.float32(0.0)).astype(np.float32)

    with pytest.raises(AssertionError) as e:
        envs.check_family(_broken(NineDeclaredEight), n_tasks=1, steps=3)
    msg = str(e.value)
    assert "shape (9,)" in msg and "declares shape (8,)" in msg, msg
    assert msg.startswith("BrokenSwimmer: reset() returned an observation of shape (9,) and dtype float32"), msg


def test_check_family_names_the_float64_observation_dtype(at_root):
    base = _swimmer_variant()

    class Float64Obs(base):
        def _obs(self):
            return super()._obs().astype(np.float64)

    with pytest.raises(AssertionError) as e:
        envs.check_family(_broken(Float64Obs), n_tasks=1, steps=3)
    msg = str(e.value)
    assert "shape (8,) and dtype float64" in msg and "dtype float32" in msg, msg


def test_check_family_names_the_step_and_task_of_a_nan_reward(at_root):
    base = _swimmer_variant()

    class NaNAtStep4(base):
        def reset(self, **kwargs):
            self.t = 0
            return super().reset(**kwargs)

        def step(self, action):
            obs, r, term, trunc, info = super().step(action)
            self.t += 1
            if self.t == 5:  # the fifth step: step index 4
                info = {**info, "reward_forward": float("nan")}
                r = info["reward_forward"] + info["reward_ctrl"]
            return obs, r, term, trunc, info

    family = _broken(NaNAtStep4)
    task = family.sample_tasks(1, np.random.default_rng(0))[0]
    with pytest.raises(AssertionError) as e:
        envs.check_family(family, n_tasks=1, steps=10)
    assert str(e.value) == f"BrokenSwimmer: reward is NaN at step 4 for task {task!r}"


def test_unknown_family_gets_a_did_you_mean(at_root):
    import experiments.families.swimmer_vel  # noqa: F401

    with pytest.raises(KeyError, match=r"unknown task family 'SwimerVel' \(did you mean 'SwimmerVel'\?\)"):
        envs.check_family("SwimerVel")


def test_a_family_class_that_was_never_registered_gets_a_hint(at_root):
    base = _swimmer_variant()

    class OctopusVelEnv(base):
        family = "OctopusVel"

    msg = envs.unknown_family_message("OctopusVel")
    assert "OctopusVelEnv" in msg and "is not registered" in msg, msg
    assert "envs.register_family('OctopusVel', " in msg, msg
    # with no such class and no close name: how a family from one's own file gets registered
    other = envs.unknown_family_message("Zzyzx")
    assert "register_family" in other and "--module" in other and "did you mean" not in other, other
    assert OctopusVelEnv.family == "OctopusVel"


def test_cli_check_family_unknown_name_is_one_line_with_the_suggestion(capsys):
    from metarl.cli import main

    assert main(["check-family", "HalfCheetahVell"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "did you mean 'HalfCheetahVel'?" in err, err


def test_cli_check_family_verbose_lists_each_check_passed(at_root, capsys):
    from metarl.cli import main

    assert main(["check-family", "SwimmerVel", "--module", "experiments/families/swimmer_vel.py", "-v"]) == 0
    out = capsys.readouterr().out
    passed = [line for line in out.splitlines() if line.startswith("  ok: ")]
    assert len(passed) >= 8, out
    for what in ("float32 of the declared shape (8,)", "check_env", "batched path", "NaN and wrongly shaped actions",
                 "pickle"):
        assert any(what in line for line in passed), (what, out)
    assert out.rstrip().endswith("check-family SwimmerVel: ok")
    assert main(["check-family", "SwimmerVel", "--module", "experiments/families/swimmer_vel.py"]) == 0
    assert "ok: " not in capsys.readouterr().out.replace("SwimmerVel: ok", "")
