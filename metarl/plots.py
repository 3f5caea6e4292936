"""Figures and tables from runs and evaluations.

* :func:`write_adaptation_outputs`: CSV and PNG of an adaptation curve
  (the dict ``metarl.evaluation.adaptation_curve`` returns).
* :func:`log_adaptation_curve`: the same curve into the run's TensorBoard
  logs (a text table ``eval/adaptation`` at the checkpoint's iteration).
* :func:`plot_runs`: learning curves of several runs from their TensorBoard
  event files, seeds of one configuration drawn as mean +- std, plus their
  adaptation curves when ``RUN_DIR/eval/adaptation.json`` exists (an RL² run's
  ``RUN_DIR/eval/trials.json``, over the episodes of a trial).
* :func:`plot_similarity`: per-layer CKA / CCA bars
  (``metarl.analysis.representation.representation_similarity``).
* :func:`plot_freeze_ablation`: the paired gain of one inner step over
  step 0 per choice of adapted parameters, with its 95% confidence interval
  (``metarl.analysis.representation.freeze_ablation``).

matplotlib is a dependency, imported lazily (``pip install matplotlib`` if it is missing); it is
imported inside the functions that draw, with the Agg canvas (no pyplot, no
global backend change).  Every file is written atomically: to a temporary
file in the same directory, then renamed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metarl import scalars as scalars_csv
from metarl.fileio import atomic_write
from metarl.seedstats import bootstrap_ci, bootstrap_ci_curves

LEARNING_TAGS = ("returns/pre_adapt", "returns/post_adapt")
# Config keys that do not change a run's learning curve: runs differing only
# in these are seeds of one configuration.
GROUPING_IGNORES = ("seed", "iterations", "sampler.", "log.")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- files ------------------------------------------------------------------------------

def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # optional extra
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save_png(fig: Any, out: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write(Path(out), buf.getvalue())


# -- adaptation curves ------------------------------------------------------------------------

def _check_curve(result: Mapping[str, Any]) -> tuple[list[int], list[float], list[float], list[list[float]]]:
    missing = [k for k in ("steps", "mean", "stderr") if k not in result]
    if missing:
        raise ValueError(f"adaptation result lacks {missing}; expected the dict adaptation_curve returns")
    steps = [int(s) for s in result["steps"]]
    mean = [float(m) for m in result["mean"]]
    stderr = [float(s) for s in result["stderr"]]
    per_task = [[float(r) for r in row] for row in result.get("per_task", [[] for _ in steps])]
    if not (len(steps) == len(mean) == len(stderr) == len(per_task)):
        raise ValueError(f"adaptation result has {len(steps)} steps, {len(mean)} means, {len(stderr)} stderrs "
                         f"and {len(per_task)} per-task rows; they must match")
    if len({len(row) for row in per_task}) > 1:
        raise ValueError("adaptation result: per_task rows have different numbers of tasks")
    return steps, mean, stderr, per_task


def adaptation_csv(result: Mapping[str, Any]) -> str:
    """CSV text: ``step,mean,stderr,task_0,...`` with one row per inner step.

    Floats are written with ``repr`` so they read back exactly.
    """
    steps, mean, stderr, per_task = _check_curve(result)
    num_tasks = len(per_task[0]) if per_task else 0
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "mean", "stderr", *(f"task_{i}" for i in range(num_tasks))])
    for k, m, s, row in zip(steps, mean, stderr, per_task, strict=True):
        writer.writerow([k, repr(m), repr(s), *(repr(r) for r in row)])
    return buf.getvalue()


def write_adaptation_outputs(result: Mapping[str, Any], out_dir: Path, label: str = "adaptation") -> dict[str, Path]:
    """Write ``OUT_DIR/LABEL.csv`` and ``OUT_DIR/LABEL.png`` for an adaptation curve.

    ``result``: ``{"steps", "mean", "stderr", "per_task" (steps x tasks), ...}``
    as ``adaptation_curve`` returns (``run_dir`` and ``iteration`` go into the
    title when present).  Returns ``{"csv": path, "png": path}``.
    """
    out_dir = Path(out_dir)
    steps, mean, stderr, _ = _check_curve(result)
    csv_path = atomic_write(out_dir / f"{label}.csv", adaptation_csv(result).encode())

    fig, (ax,) = new_figure()
    m, s = np.asarray(mean), np.asarray(stderr)
    ax.plot(steps, m, marker="o", label="mean return")
    ax.fill_between(steps, m - s, m + s, alpha=0.25, label="± standard error")
    ax.set_xticks(steps)
    ax.set_xlabel("inner steps")
    ax.set_ylabel("mean episode return")
    title = label
    if "run_dir" in result:
        title = f"{Path(str(result['run_dir'])).name}"
        if "iteration" in result:
            title += f" (iteration {result['iteration']})"
    if "num_tasks" in result:
        title += f"\n{result['num_tasks']} held-out tasks"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    png_path = save_png(fig, out_dir / f"{label}.png")
    return {"csv": csv_path, "png": png_path}


def plot_shots(result: Mapping[str, Any], out: Path) -> Path:
    """The k-shot curve (:func:`metarl.evaluation.shots_curve`): return after one step vs adaptation
    episodes per task, ± standard error, beside the return before adaptation."""
    fig, (ax,) = new_figure()
    ax.errorbar(result["shots"], result["mean"], yerr=result["stderr"], marker="o", capsize=3, label="after 1 step")
    ax.axhline(result["before"], color="k", ls="--", label="before adaptation")
    ax.set_xscale("log")
    ax.set_xlim(min(result["shots"]) / 1.3, max(result["shots"]) * 1.3)  # set: NaN points (diverged) leave none
    ax.set_xticks(result["shots"], [str(m) for m in result["shots"]])
    ax.set_xlabel("adaptation episodes per task")
    ax.set_ylabel("mean return on held-out tasks")
    ax.set_title(f"k-shot adaptation ({result['num_tasks']} tasks, ± standard error)", fontsize=10)
    ax.legend()
    return save_png(fig, out)


def log_adaptation_curve(result: Mapping[str, Any], run_dir: Path) -> None:
    """Log the curve into RUN_DIR's TensorBoard logs as a text table ``eval/adaptation`` (inner step, mean
    return, standard error; :func:`metarl.tblog.adaptation_table`) at the checkpoint's iteration, so it sits
    on the run's iteration axis beside the training scalars (not as a series whose x-axis would be the inner
    step).  Written to a new event file next to the training ones, so TensorBoard shows it under the same run.
    """
    from torch.utils.tensorboard import SummaryWriter

    from metarl.tblog import adaptation_table

    steps, mean, stderr, _ = _check_curve(result)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a directory")
    writer = SummaryWriter(str(run_dir), filename_suffix=".eval")
    try:
        iteration = int(result.get("iteration") or 0)
        writer.add_text("eval/adaptation", adaptation_table(steps, mean, stderr, result.get("num_tasks")), iteration)
    finally:
        writer.close()


# -- learning curves of several runs ---------------------------------------------------------------

def event_files(run_dir: Path) -> list[Path]:
    """TensorBoard event files directly in ``run_dir``, in name (= time) order."""
    return sorted(p for p in Path(run_dir).glob("events.out.tfevents.*") if p.is_file())


def read_scalars(run_dir: Path, tags: Sequence[str] = LEARNING_TAGS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tag: (steps, values)}`` from RUN_DIR's event files (last value per step).

    Raises ``ValueError`` when the directory has no event files or lacks a tag.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a directory")
    if not event_files(run_dir) and (run_dir / scalars_csv.FILENAME).exists():
        return scalars_csv.read(run_dir, list(tags))  # a released run keeps its scalars as CSV only
    if not event_files(run_dir):
        raise ValueError(f"{run_dir}: no TensorBoard event files (events.out.tfevents.*); "
                         "is it a run directory written by metarl train?")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    available = acc.Tags().get("scalars", [])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tag in tags:
        if tag not in available:
            raise ValueError(f"{run_dir}: no scalar {tag!r} in its event files (found {sorted(available)})")
        last: dict[int, float] = {}
        for ev in acc.Scalars(tag):
            last[int(ev.step)] = float(ev.value)
        steps = np.array(sorted(last), dtype=np.int64)
        out[tag] = (steps, np.array([last[s] for s in steps.tolist()], dtype=np.float64))
    return out


def _read_config(run_dir: Path) -> dict[str, Any] | None:
    """RUN_DIR's config, flattened to dotted keys, with defaults filled in
    (so runs made before a key existed compare equal on it); the raw YAML
    if it no longer loads as a config."""
    from metarl.config import ConfigError, flat_dict, to_dict
    from metarl.rundir import RunDir
    from metarl.usermodules import ModuleImportError

    rd = RunDir(run_dir)
    if not rd.is_run():
        return None
    try:
        return flat_dict(to_dict(rd.config()))
    except ModuleImportError:
        raise
    except (ConfigError, ValueError, TypeError, KeyError):
        data = rd.raw_config()
        return flat_dict(data) if isinstance(data, Mapping) else None


def _ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in GROUPING_IGNORES)


@dataclass
class RunGroup:
    """Runs of one configuration (differing only in ignored keys such as the seed)."""

    label: str
    run_dirs: list[Path] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    config: dict[str, Any] | None = None


def group_runs(run_dirs: Sequence[Path], labels: Sequence[str] | None = None) -> list[RunGroup]:
    """Group run directories whose configs differ only in the seed (and in
    ``iterations``, ``sampler.*``, ``log.*``), in order of first appearance.

    ``labels`` (one per run) name the groups; runs with different labels are
    never grouped.  Without labels a group is named by the config keys that
    differ between groups (or the experiment name if there is one group).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("no run directories given")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"got {len(labels)} labels for {len(run_dirs)} run directories")
    groups: dict[str, RunGroup] = {}
    for i, run_dir in enumerate(run_dirs):
        cfg = _read_config(run_dir)
        if cfg is None:
            key = json.dumps(["dir", str(run_dir.resolve())])
        else:
            key = json.dumps({k: v for k, v in cfg.items() if not _ignored(k)}, sort_keys=True, default=str)
        if labels is not None:
            key = json.dumps([labels[i], key])
        group = groups.setdefault(key, RunGroup(label=labels[i] if labels is not None else "", config=cfg))
        group.run_dirs.append(run_dir)
        group.seeds.append(cfg.get("seed") if cfg else None)
    result = list(groups.values())
    if labels is None:
        _auto_labels(result)
    return result


def _auto_labels(groups: list[RunGroup], max_keys: int = 3) -> None:
    configs = [g.config for g in groups if g.config is not None]
    keys = sorted({k for c in configs for k in c if not _ignored(k)})
    differing = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    for g in groups:
        if g.config is None:
            g.label = g.run_dirs[0].name
        elif len(groups) == 1 or not differing:
            g.label = f"{g.config.get('env.family', '')} {g.config.get('name', '')}".strip() or g.run_dirs[0].name
        else:
            parts = [f"{k}={g.config.get(k)}" for k in differing[:max_keys]]
            if len(differing) > max_keys:
                parts.append("...")
            g.label = ", ".join(parts)


def aggregate_curves(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs at every step any run logged: ``(steps, mean, std)``."""
    steps = np.unique(np.concatenate([s for s, _ in curves]))
    mean, std = np.empty(len(steps)), np.empty(len(steps))
    for j, step in enumerate(steps):
        vals = np.array([v[s == step][0] for s, v in curves if np.any(s == step)])
        mean[j] = vals.mean()
        std[j] = vals.std(ddof=1) if len(vals) > 1 else 0.0
    return steps, mean, std


def is_trial_run(config: Mapping[str, Any] | None) -> bool:
    """Whether a run's flattened config (:func:`_read_config`) is RL²'s (``algo.name: rl2``): its adaptation
    curve is over the episodes of a trial (``eval/trials.json``), not over inner steps."""
    return bool(config) and config.get("algo.name") == "rl2"


def learning_tags(config: Mapping[str, Any] | None) -> tuple[tuple[str, str], tuple[str, str]]:
    """The two learning-curve scalars of a run and what they are: ``returns/pre_adapt`` and
    ``returns/post_adapt`` (before and after the inner loop), or for RL² the mean return of a training trial's
    first and last episode (``rl2/return_episode_1`` and ``_K``; RL²'s ``returns/*`` sum a trial's K
    episodes, which would not sit on one axis with the per-episode returns of the gradient methods)."""
    if is_trial_run(config):
        assert config is not None
        k = int(config.get("rl2.episodes_per_trial") or 2)
        return (("rl2/return_episode_1", "episode 1"), (f"rl2/return_episode_{k}", f"episode {k}"))
    return ((LEARNING_TAGS[0], "pre-adaptation"), (LEARNING_TAGS[1], "post-adaptation"))


def _load_adaptation(run_dir: Path, trials: bool = False) -> dict[str, Any] | None:
    """RUN_DIR's ``eval/adaptation.json``, or with ``trials`` (an RL² run) its ``eval/trials.json``; None when
    absent, ValueError when it is not a curve."""
    path = Path(run_dir) / "eval" / ("trials.json" if trials else "adaptation.json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: not an adaptation curve (nested too deeply)") from None
    try:
        _check_curve(data)
    except (TypeError, ValueError, AttributeError) as e:  # null or mistyped fields
        raise ValueError(f"{path}: not an adaptation curve ({type(e).__name__}: {e})") from None
    return data


def plot_runs(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """Learning curves of ``run_dirs`` (and their adaptation curves) into the PNG ``out``.

    Left: ``returns/pre_adapt`` (dashed) and ``returns/post_adapt`` (solid)
    vs meta-iteration (for an RL² run its trials' first and last episode, :func:`learning_tags`);
    runs of one configuration (see :func:`group_runs`)
    are drawn as the mean over seeds with a 95% percentile-bootstrap band
    (:func:`metarl.seedstats.bootstrap_ci_curves`) where every seed has a value.  Right, when any
    run has ``eval/adaptation.json`` (an RL² run: ``eval/trials.json``): those adaptation curves (mean +-
    standard error over tasks vs inner steps, or vs the episode index within a trial for RL²; the axis
    says which, both when RL² sits beside gradient methods), one line per run.
    Raises ``ValueError`` for a directory without event files.
    """
    run_dirs = [Path(d) for d in run_dirs]
    groups = group_runs(run_dirs, labels)
    configs = {d: g.config for g in groups for d in g.run_dirs}
    tags = {d: learning_tags(configs[d]) for d in run_dirs}
    scalars = {d: read_scalars(d, [t for t, _ in tags[d]]) for d in run_dirs}  # fails early on a bad run dir
    adaptation = {d: _load_adaptation(d, is_trial_run(configs[d])) for d in run_dirs}
    has_eval = any(a is not None for a in adaptation.values())
    kinds = {is_trial_run(configs[d]) for d in run_dirs if adaptation[d] is not None}

    fig, axes = new_figure(ncols=2 if has_eval else 1)
    ax = axes[0]
    colors = [f"C{i % 10}" for i in range(len(groups))]
    for g, color in zip(groups, colors, strict=True):
        n = len(g.run_dirs)
        for (tag, which), style in zip(tags[g.run_dirs[0]], ("--", "-"), strict=True):
            curves = [scalars[d][tag] for d in g.run_dirs]
            steps, mean, _ = aggregate_curves(curves)
            suffix = f" ({n} seeds, mean, 95% bootstrap CI)" if n > 1 else ""
            ax.plot(steps, mean, style, color=color, label=f"{g.label}: {which}{suffix}")
            common = np.array(sorted(set.intersection(*(set(s.tolist()) for s, _ in curves))), dtype=np.int64)
            if n > 1 and len(common):  # the interval where every seed has a value
                table = np.stack([v[np.searchsorted(s, common)] for s, v in curves])
                lo, hi = bootstrap_ci_curves(table)
                ax.fill_between(common, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("meta-iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("mean episode return")
    ax.set_title("learning curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    if has_eval:
        ax = axes[1]
        for g, color in zip(groups, colors, strict=True):
            for d, seed in zip(g.run_dirs, g.seeds, strict=True):
                a = adaptation[d]
                if a is None:
                    continue
                steps, mean, stderr, _ = _check_curve(a)
                name = g.label if len(g.run_dirs) == 1 else f"{g.label}, seed {seed}"
                ax.errorbar(steps, mean, yerr=stderr, color=color, marker="o", capsize=3, label=name)
        ax.set_xlabel({frozenset({False}): "inner steps (test time)",
                       frozenset({True}): "episode index within a trial (RL², test time)"}.get(
            frozenset(kinds), "inner steps (gradient methods) / episode index within a trial (RL²)"))
        ax.set_ylabel("mean return on held-out tasks")
        ax.set_title("adaptation (± standard error)", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_png(fig, Path(out))


# -- representation similarity ------------------------------------------------------------------------

def plot_similarity(result: Mapping[str, Any], out: Path) -> Path:
    """Bar chart of CKA and CCA per layer (before vs after adaptation) into the PNG ``out``.

    ``result``: the dict ``representation_similarity`` returns; error bars
    are the standard errors over tasks when present.
    """
    for key in ("layers", "cka", "cca"):
        if key not in result:
            raise ValueError(f"similarity result lacks {key!r}; expected the dict representation_similarity returns")
    layers = list(result["layers"])
    if not (len(layers) == len(result["cka"]) == len(result["cca"])):
        raise ValueError("similarity result: layers, cka and cca must have the same length")
    fig, (ax,) = new_figure(width=max(5.0, 1.2 * len(layers) + 2))
    x = np.arange(len(layers))
    width = 0.38
    for offset, key, name in ((-width / 2, "cka", "linear CKA"), (width / 2, "cca", "mean CCA (SVCCA)")):
        err = result.get(f"{key}_stderr")
        ax.bar(x + offset, result[key], width, yerr=err, capsize=3 if err is not None else 0, label=name)
    ax.set_xticks(x, layers)
    ax.set_ylim(0.0, 1.12)
    change = result.get("relative_change")
    if change is not None and len(change) == len(layers):
        # CKA/CCA ignore constant shifts; show how far the activations moved
        for xi, c in zip(x, change, strict=True):
            ax.text(xi, 1.06, f"|Δ|/|before| {c:.2f}", ha="center", va="center", fontsize=7)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("similarity before vs after adaptation")
    adapted = result.get("adapted_params")
    title = "representation similarity"
    if "num_tasks" in result:
        title += f" ({result['num_tasks']} held-out tasks)"
    if adapted is not None:
        title += "\nadapted: " + _short_names(adapted)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    return save_png(fig, Path(out))


def _short_names(names: Sequence[str]) -> str:
    layers: list[str] = []
    for n in names:
        base = n.rsplit(".", 1)[0] if n.endswith((".weight", ".bias")) else n
        if base not in layers:
            layers.append(base)
    return ", ".join(layers) if layers else "nothing"


def plot_freeze_ablation(result: Mapping[str, Any], out: Path) -> Path:
    """The layer-freezing ablation (``freeze_ablation``) into the PNG ``out``: per variant, the paired gain
    over step 0 (post-adaptation return minus the step-0 return, per task with common random numbers),
    mean over tasks with its 95% percentile-bootstrap interval over tasks, against a zero line (no gain).
    The legend says what the bars are; the title gives the step-0 return they are measured from."""
    if "variants" not in result or "step0" not in result:
        raise ValueError("ablation result lacks 'variants' or 'step0'; expected the dict freeze_ablation returns")
    names = list(result["variants"])
    step0 = [float(r) for r in result["step0"].get("per_task", [])]
    means, lows, highs = [], [], []
    for n in names:
        v = result["variants"][n]
        post = [float(r) for r in v.get("per_task", [])]
        gains = np.array([a - b for a, b in zip(post, step0, strict=True)]) if len(post) == len(step0) else None
        if gains is not None and gains.size and np.all(np.isfinite(gains)):  # paired per task
            mean = float(gains.mean())
            lo, hi = bootstrap_ci(gains)  # nan with one task: no bar
        else:  # an old result without per-task returns: its recorded gain, ± 1.96 standard errors
            mean = float(v.get("gain", v["mean"] - result["step0"]["mean"]))
            half = 1.96 * float(v.get("gain_stderr", float("nan")))
            lo, hi = mean - half, mean + half
        means.append(mean)
        lows.append(mean - lo if math.isfinite(lo) else 0.0)
        highs.append(hi - mean if math.isfinite(hi) else 0.0)
    num_tasks = len(step0) or result.get("num_tasks", "?")
    fig, (ax,) = new_figure(width=max(5.0, 1.1 * len(names) + 2), height=4.4)
    x = np.arange(len(names))
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", label="no gain (step 0)")
    ax.errorbar(x, means, yerr=[lows, highs], fmt="o", capsize=4, color="C2",
                label=f"paired gain over step 0: mean over {num_tasks} tasks, bars: 95% bootstrap CI")
    ax.set_xticks(x, names)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("return after one inner step − step-0 return")
    ax.set_title("layer-freezing ablation: parameters adapted at test time\n"
                 f"step-0 return (no adaptation): {result['step0']['mean']:.2f} "
                 f"± {result['step0']['stderr']:.2f} (standard error over tasks)", fontsize=9)
    lo = min(min((m - e for m, e in zip(means, lows, strict=True)), default=0.0), 0.0)
    hi = max(max((m + e for m, e in zip(means, highs, strict=True)), default=0.0), 0.0)
    pad = 0.12 * (hi - lo) if math.isfinite(hi - lo) and hi > lo else 1.0
    ax.set_ylim(lo - pad, hi + pad)
    # the legend below the axes, so it never covers an error bar
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=1, frameon=False)
    return save_png(fig, Path(out))
