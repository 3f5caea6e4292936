"""What the report scripts share: finding a campaign's runs, statistics over seeds, smoothing, costs.

Pure functions of run artifacts, read through :class:`metarl.rundir.RunDir`;
nothing is trained or rolled out here.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metarl.rundir import RunDir

SMOOTH_ITERATIONS = 10  # iterations in the moving average of the plotted learning curves


def campaign_runs(root: Path, name: re.Pattern[str]) -> Iterator[tuple[RunDir, re.Match[str]]]:
    """The run directories directly under ``root`` whose name matches ``name`` and that hold a config, in
    name order, with the match."""
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        m = name.match(d.name)
        rd = RunDir(d)
        if m and rd.is_run():
            yield rd, m


def num(x: float, digits: int = 1, sign: bool = False) -> str:
    """A number with a typographic minus, as RESULTS.md writes them (``sign``: ``+`` too)."""
    return f"{x:{'+' if sign else ''}.{digits}f}".replace("-", "−")


def mean_pm_std(values: list[float]) -> str:
    """``mean ± std`` over seeds (sample std); a single seed has no spread, so it is given alone."""
    if len(values) == 1:
        return num(values[0])
    return f"{num(statistics.mean(values))} ± {num(statistics.stdev(values))}"


def welch_se(a: list[float], b: list[float]) -> float:
    """The standard error of ``mean(a) - mean(b)`` from the two samples' own variances (Welch's); each needs
    two values or more."""
    return (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5


def n_seeds(n: int) -> str:
    """``1 seed``, ``3 seeds``."""
    return f"{n} seed{'' if n == 1 else 's'}"


def over_seeds(values: list[float]) -> str:
    """:func:`mean_pm_std` with the number of seeds, ``–`` without any."""
    if not values:
        return "–"
    return f"{mean_pm_std(values)} ({n_seeds(len(values))})"


def smooth(values: Any, width: int) -> Any:
    """Moving average over ``width`` points (a shorter window at the start); shorter series unchanged."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if len(v) < width:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:width] / np.arange(1, width)
    return np.concatenate([head, (c[width:] - c[:-width]) / width])


def env_steps_per_iteration(cfg: Any) -> int:
    """Env steps of one meta-iteration whose episodes never end early: tasks × episodes × horizon, for the
    train and the valid batch."""
    return 2 * cfg.algo.meta_batch_size * cfg.algo.episodes_per_task * cfg.env.horizon


def maml_table(curves: dict[str, list[float]], paper: list[float] | None) -> list[str]:
    """Markdown rows: each method's mean return after 0..3 inner steps, then the MAML paper's (fig. 5)."""
    rows = ["| method | 0 steps | 1 step | 2 steps | 3 steps |", "|---|---|---|---|---|"]
    for m, c in curves.items():
        rows.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in c) + " |")
    if paper:
        rows.append("| MAML (paper, fig. 5) | " + " | ".join(f"{v:.1f}" for v in paper) + " |")
    return rows


def maml_figure(curves: dict[str, list[float]], paper: list[float] | None, family: str, out: Path) -> Path:
    """Mean return vs inner steps at test time, one line per method, the MAML paper's dashed."""
    from metarl.plots import new_figure, save_png

    fig, (ax,) = new_figure()
    for m, c in curves.items():
        ax.plot(range(len(c)), c, marker="o", label=m)
    if paper:
        ax.plot(range(4), paper, "k--", label="MAML (paper)")
    ax.set_xticks(range(4))
    ax.set_xlabel("inner steps at test time")
    ax.set_ylabel("mean return on held-out tasks")
    ax.set_title(f"{family}: adaptation")
    ax.legend()
    return save_png(fig, out)
