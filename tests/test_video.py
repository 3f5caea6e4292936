"""metarl video: frame count and size, frames that change, adapted panels, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metarl import cli
from metarl.video import read_video

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "iterations=1", "--set", "algo.meta_batch_size=2", "--set", "algo.episodes_per_task=2",
        "--set", "env.horizon=12", "--set", "sampler.backend=serial", "--set", "policy.hidden_sizes=[16]",
        "--no-progress"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "metarl.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=full_env)


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("video") / "run"
    r = _run(["train", "experiments/configs/halfcheetah_dir.yaml", "--run-dir", str(run), *TINY])
    assert r.returncode == 0, r.stderr
    return run


@pytest.mark.integration
@pytest.mark.parametrize("suffix", [".mp4", pytest.param(".gif", marks=pytest.mark.slow)])  # .mp4: the default
def test_video_has_one_frame_per_step_panels_side_by_side_and_moving_frames(cheetah_run, tmp_path, suffix):
    out = tmp_path / f"v{suffix}"
    r = _run(["video", str(cheetah_run), "--tasks", "2", "--steps", "1", "--width", "96", "--height", "64",
              "--out", str(out)])
    assert r.returncode == 0, r.stderr
    frames = read_video(out)
    assert frames.shape[:3] == (2 * 12, 64, 2 * 96)  # tasks x horizon frames; panels for steps 0 and 1
    diffs = [np.abs(frames[t + 1].astype(int) - frames[t].astype(int)).mean() for t in range(len(frames) - 1)]
    assert min(diffs[:5]) > 0.0, "the body moves from frame to frame"
    left, right = frames[:, :, :96].astype(int), frames[:, :, 96:].astype(int)
    # identical policies would give identical panels (0.0); the GIF palette shrinks real differences
    # (mean 0.41 under mujoco 3.3.0, 0.50 under 4.0; MP4 ~2.6-2.9)
    assert np.abs(left - right).mean() > 0.25, "the adapted panel shows a different policy"


def test_video_without_a_gl_backend_is_one_clear_line(cheetah_run, tmp_path, monkeypatch, capsys):
    import mujoco

    def broken(*args, **kwargs):
        raise RuntimeError("Failed to initialize OpenGL")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    out = tmp_path / "v.gif"
    assert cli.main(["video", str(cheetah_run), "--steps", "0", "--tasks", "1", "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("metarl: error")]
    assert len(err) == 1 and "MUJOCO_GL=egl" in err[0] and "libegl" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("args,match", [
    (["--width", "17"], "even number of pixels"),
    (["--height", "0"], "even number of pixels"),
    (["--out", "{run}/config.yaml/v.gif"], "cannot write"),
    (["--out", "{run}/v.avi"], ".mp4 or .gif"),
])
def test_video_bad_options_exit_2_with_one_line(cheetah_run, capsys, args, match):
    args = [a.replace("{run}", str(cheetah_run)) for a in args]
    assert cli.main(["video", str(cheetah_run), "--steps", "0", "--tasks", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


def test_video_of_a_non_run_directory(tmp_path, capsys):
    assert cli.main(["video", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
