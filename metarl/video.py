"""Rollout videos of a trained run: held-out tasks before adaptation and after 1..K inner steps.

For each held-out task the meta-policy is adapted exactly as ``metarl
evaluate`` adapts it with the same seed (the same episodes, the same inner
steps), so the video shows the policies whose returns the adaptation curve
reports.  Each frame puts the K + 1 policies side by side (step 0 = before
adaptation, then after 1..K steps), each in its own episode on the same
task from the same initial state, acting with the policy's mean action.
Every panel carries a caption: the task, the step and the return so far.
Tasks follow one another; an episode that terminates early holds its last
frame, so a video has ``tasks x horizon`` frames of width ``(K + 1) x width``.

MuJoCo families render with MuJoCo's own offscreen renderer
(``mujoco.Renderer``); on a machine without a display that needs
``MUJOCO_GL=egl`` (the ``metarl video`` command sets it unless it is set)
and the EGL libraries (Debian: ``libegl1 libegl-mesa0 libgl1-mesa-dri``).
An RL² run (``algo.name: rl2``) adapts through its policy's hidden state, not
by inner steps: its panels are episodes 1..N of one trial on the task
(N: ``--steps``, default the run's ``rl2.episodes_per_trial``), played one
after another with the hidden state carried across them, each from the same
initial state, so the panels differ only by what the trial so far taught
the policy.

Navigation2D draws its trajectory with matplotlib.  Output: MP4 when
``imageio-ffmpeg`` is installed, else GIF (Pillow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

VIDEO_SEEDS = 7  # stream id of the videos' episode seeds (beside the trainer's 0..4)


class VideoError(RuntimeError):
    """Rendering or encoding cannot work here; the message says what to install."""


def mp4_available() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def default_suffix() -> str:
    return ".mp4" if mp4_available() else ".gif"


def caption(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frame (H, W, 3) uint8`` with ``lines`` written on a dark band at the top."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    band = 12 * len(lines) + 4
    draw.rectangle([0, 0, img.width, band], fill=(0, 0, 0))
    for i, text in enumerate(lines):
        draw.text((4, 2 + 12 * i), text, fill=(255, 255, 255))
    return np.asarray(img)


class MujocoPainter:
    """Renders a MuJoCo env's current state with a camera tracking its root body (side view)."""

    def __init__(self, env: Any, width: int, height: int):
        import mujoco

        try:
            self.renderer = mujoco.Renderer(env.model, height=height, width=width)
        except Exception as e:  # noqa: BLE001 - any GL failure becomes one actionable line
            raise VideoError(
                f"MuJoCo cannot render offscreen ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "on a headless machine set MUJOCO_GL=egl and install the EGL libraries "
                "(Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri), or MUJOCO_GL=osmesa with libosmesa6"
            ) from None
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.camera.trackbodyid = 1
        self.camera.distance = 3.0  # metres: the locomotion bodies are about 1 m long
        self.camera.elevation = -15.0
        self.camera.azimuth = 90.0
        self.env = env

    def frame(self, obs: np.ndarray) -> np.ndarray:
        self.renderer.update_scene(self.env.data, camera=self.camera)
        return self.renderer.render().copy()

    def close(self) -> None:
        self.renderer.close()


class PlanarPainter:
    """Draws a 2-D position family (Navigation2D): the goal, the path so far and the agent."""

    def __init__(self, env: Any, width: int, height: int):
        self.env, self.width, self.height = env, width, height
        self.path: list[np.ndarray] = []

    def frame(self, obs: np.ndarray) -> np.ndarray:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.path.append(np.array(obs[:2], dtype=np.float64))  # Navigation2D observes its position
        dpi = 100
        fig = Figure(figsize=(self.width / dpi, self.height / dpi), dpi=dpi)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0.08, 0.08, 0.88, 0.78))
        lim = max(abs(self.env.low), abs(self.env.high)) * 1.2
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        goal = self.env.get_task()["goal"]
        ax.plot([goal[0]], [goal[1]], "r*", markersize=12)
        p = np.array(self.path)
        ax.plot(p[:, 0], p[:, 1], "-", color="tab:blue", lw=1.5)
        ax.plot([p[-1, 0]], [p[-1, 1]], "o", color="tab:blue")
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        return rgba[..., :3].copy()

    def close(self) -> None:
        self.path.clear()


def painter_for(env: Any, width: int, height: int) -> MujocoPainter | PlanarPainter:
    if hasattr(env, "model") and hasattr(env, "data"):
        return MujocoPainter(env, width, height)
    from envs.navigation import Navigation2DEnv

    if isinstance(env, Navigation2DEnv):
        return PlanarPainter(env, width, height)
    raise VideoError(f"{type(env).__name__}: no renderer for this family (neither MuJoCo nor a 2-D position)")


def _task_text(task: Any) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        if isinstance(v, list | tuple):
            return "(" + ", ".join(fmt(x) for x in v) + ")"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    return fmt(task)


def episode_frames(env: Any, params: dict[str, torch.Tensor], policy: Any, seed: int, horizon: int, width: int,
                   height: int, label: str) -> tuple[list[np.ndarray], float]:
    """One mean-action episode of ``policy`` at ``params``: ``horizon`` captioned frames and its return."""
    obs, _ = env.reset(seed=seed)
    painter = painter_for(env, width, height)
    frames, total, done = [], 0.0, False
    frame = painter.frame(obs)
    try:
        for _t in range(horizon):
            if not done:
                with torch.no_grad():
                    mean, _ = policy(torch.as_tensor(obs, dtype=torch.float32)[None], params)
                obs, r, terminated, truncated, _ = env.step(mean[0].numpy().astype(np.float64))
                total += float(r)
                done = bool(terminated or truncated)
                frame = painter.frame(obs)
            frames.append(caption(frame, [label, f"return {total:.1f}" + (" (done)" if done else "")]))
    finally:
        painter.close()
    return frames, total


def trial_frames(env: Any, params: dict[str, torch.Tensor], policy: Any, seed: int, horizon: int, episodes: int,
                 width: int, height: int, label: str) -> tuple[list[list[np.ndarray]], list[float]]:
    """Episodes 1..``episodes`` of one mean-action RL² trial (:class:`~metarl.policies.GaussianGRUPolicy`),
    the hidden state carried across them and each reset with ``seed``: their captioned frames and returns.

    The inputs are the worker's (:func:`~metarl.policies.rl2_inputs`): the previous action and reward of
    the last live step, the done flag 1.0 on the first step of every episode but the first; the state stays
    as it was once an episode has ended."""
    from metarl.policies import rl2_inputs

    hidden = policy.initial_hidden(1)
    prev_a = torch.zeros(1, policy.act_dim)
    prev_r = torch.zeros(1)
    panels, returns = [], []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed)
        painter = painter_for(env, width, height)
        flag = torch.full((1,), 1.0 if e else 0.0)
        frames, total, done = [], 0.0, False
        frame = painter.frame(obs)
        try:
            for _t in range(horizon):
                if not done:
                    x = rl2_inputs(torch.as_tensor(obs, dtype=torch.float32)[None], prev_a, prev_r, flag)
                    with torch.no_grad():
                        mean, hidden = policy.step(x, hidden, params)
                    obs, r, terminated, truncated, _ = env.step(mean[0].numpy().astype(np.float64))
                    total += float(r)
                    prev_a, prev_r, flag = mean, torch.full((1,), float(r)), torch.zeros(1)
                    done = bool(terminated or truncated)
                    frame = painter.frame(obs)
                frames.append(caption(frame, [f"{label}  episode {e + 1}",
                                              f"return {total:.1f}" + (" (done)" if done else "")]))
        finally:
            painter.close()
        panels.append(frames)
        returns.append(total)
    return panels, returns


def render_run(run_dir: Path, out: Path, tasks: int = 2, steps: int | None = 1, width: int = 320, height: int = 240,
               fps: int | None = None, seed: int = 0, episodes: int | None = None,
               on_task: Callable[[int, list[float]], None] | None = None, loaded: Any = None) -> dict[str, Any]:
    """Write the video of ``run_dir`` to ``out`` (``.mp4`` or ``.gif``); returns what was drawn.

    ``loaded`` is the run as :func:`metarl.rundir.load_run` already returned it (then not loaded again)."""
    from metarl.policies import stack_params
    from metarl.run import EVAL_ROLLOUTS, build_sampler, derive_seed, held_out_tasks
    from metarl.rundir import load_run

    out = Path(out)
    if out.suffix not in (".mp4", ".gif"):
        raise VideoError(f"{out}: the video must be a .mp4 or .gif file")
    if out.suffix == ".mp4" and not mp4_available():
        raise VideoError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or use --out FILE.gif)")
    cfg, family, learner, iteration = loaded or load_run(run_dir)
    episodes = episodes or cfg.algo.episodes_per_task
    task_list = held_out_tasks(family, tasks, seed)
    meta = {k: v.detach() for k, v in learner.policy.params().items()}

    def task_panels(i: int, task: Any) -> tuple[list[list[np.ndarray]], list[float]]:
        """Task ``i``'s panels (frame lists, side by side) and their returns."""
        env = family.make_env(task)
        try:
            if trial:  # RL²: the episodes of one trial
                return trial_frames(env, meta, learner.policy, derive_seed(seed, VIDEO_SEEDS, i), family.horizon,
                                    n, width, height, f"task {_task_text(task)}")
            panels, rets = [], []
            for k, p in enumerate(stacked):
                frames, ret = episode_frames(env, {name: v[i] for name, v in p.items()}, learner.policy,
                                             derive_seed(seed, VIDEO_SEEDS, i), family.horizon, width, height,
                                             f"task {_task_text(task)}  step {k}")
                panels.append(frames)
                rets.append(ret)
            return panels, rets
        finally:
            env.close()

    trial = not getattr(learner, "adapts", True)
    n = (int(steps) if steps else int(learner.rl2.episodes_per_trial)) if trial else (1 if steps is None else steps)
    per_step = [meta]
    if not trial and n > 0:
        with build_sampler(cfg, family, learner.policy) as sampler:
            params = meta
            for k in range(n):  # the same episodes and steps as adaptation_curve with this seed
                batch = sampler.sample(task_list, params, episodes, derive_seed(seed, EVAL_ROLLOUTS, k))
                params = learner.adapt_further(params, batch, learner.advantages(batch))
                per_step.append(params)
    stacked = [] if trial else [stack_params(p, meta, len(task_list)) for p in per_step]
    video: list[np.ndarray] = []
    returns: list[list[float]] = []
    for i, task in enumerate(task_list):
        panels, rets = task_panels(i, task)
        video.extend(np.concatenate(row, axis=1) for row in zip(*panels, strict=True))
        returns.append(rets)
        if on_task is not None:
            on_task(i, rets)
    fps = fps or _default_fps(family)
    write_video(out, video, fps)
    return {"out": str(out), "frames": len(video), "size": [int(video[0].shape[1]), int(video[0].shape[0])],
            "fps": fps, "tasks": task_list, "returns": returns, "iteration": iteration}


def _default_fps(family: Any) -> int:
    env = family.make_env()
    dt = getattr(env, "dt", None)
    env.close()
    return int(round(1.0 / dt)) if dt else 20


def write_video(out: Path, frames: Sequence[np.ndarray], fps: int) -> None:
    """Encode ``frames`` (each ``(H, W, 3) uint8``) to ``out``, via a temporary file renamed into place."""
    import errno
    import os

    import imageio.v3 as iio

    from metarl.fileio import DISK_FULL, check_replaceable

    check_replaceable(out)  # never replace a FIFO, a device, a directory
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    try:
        if out.suffix == ".mp4":  # ffmpeg's own messages off: a failure is one line (below, or the caller's)
            iio.imwrite(tmp, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1,
                        ffmpeg_log_level="quiet")
        else:
            iio.imwrite(tmp, np.stack(frames), duration=1000.0 / fps, loop=0)
        os.replace(tmp, out)
    except OSError as e:
        # ffmpeg that stops on a full disk shows up as a broken pipe: name the full disk instead
        if e.errno not in DISK_FULL and _no_space(out.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(out)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _no_space(directory: Path) -> bool:
    """Less than a MiB free for unprivileged writes in ``directory`` (a full disk)."""
    import os

    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def read_video(path: Path) -> np.ndarray:
    """All frames of a video written by :func:`write_video`: ``(frames, H, W, 3) uint8``."""
    import imageio.v3 as iio

    arr = iio.imread(path)
    return arr[..., :3] if arr.ndim == 4 else arr[None, ..., :3]
