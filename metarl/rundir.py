"""Run directories: created exclusively, cleaned of metarl's own outputs, tidied after a crash.

What metarl writes in a run directory (and all that :func:`clean` removes):
``config.yaml``, ``checkpoints/`` (``iter_*.pt``, ``latest``, ``best.pt``), TensorBoard
``events.out.tfevents.*``, ``scalars.csv``, ``manifest.json`` and ``eval/``;
interrupted atomic writes leave ``.<name>.*.tmp`` beside their target
(:func:`metarl.fileio.atomic_write`).  Any other file is left alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

OUTPUT_FILES = ("scalars.csv", "manifest.json")
EVENTS_GLOB = "events.out.tfevents.*"
MAX_SUFFIX = 1000


def create_unique(base: Path) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ... if taken) exclusively and return it.

    ``mkdir`` without ``exist_ok`` is atomic, so runs launched at the same
    moment with the same name get distinct directories.
    """
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SUFFIX + 1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base} and {MAX_SUFFIX - 1} suffixed variants already exist")


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files left by interrupted atomic writes, in the run directory and its subdirectories."""
    run_dir = Path(run_dir)
    found: list[Path] = []
    for d in (run_dir, run_dir / "checkpoints", run_dir / "eval"):
        if d.is_dir():
            found += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()]
    return sorted(found)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete :func:`stale_temporaries`; returns what was removed."""
    removed = stale_temporaries(run_dir)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def clean(run_dir: Path, keep_config: bool = False) -> None:
    """Remove everything metarl writes in ``run_dir`` (``config.yaml`` too unless ``keep_config``)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir():
        for p in ckpt.iterdir():
            ours = p.name in ("latest", "best.pt") or (p.name.startswith("iter_") and p.name.endswith(".pt"))
            if p.is_file() and ours:
                p.unlink()
    remove_stale_temporaries(run_dir)
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()
    for p in run_dir.glob(EVENTS_GLOB):
        p.unlink()
    names = OUTPUT_FILES if keep_config else (*OUTPUT_FILES, "config.yaml")
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "eval").is_dir():
        shutil.rmtree(run_dir / "eval")
