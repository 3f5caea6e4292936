"""Atomic checkpoints that load without executing code.

A checkpoint is a ``torch.save`` of plain tensors, numbers and strings, read
back with ``torch.load(weights_only=True)``.  Writes go to a temporary file
in the same directory, are fsync'ed, then renamed over the target, and the
``latest`` pointer is replaced the same way: a crash at any moment leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from metarl.fileio import atomic_write

LATEST = "latest"


def save(ckpt_dir: Path, iteration: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``ckpt_dir/iter_{iteration:06d}.pt`` and point ``latest`` at it."""
    path = ckpt_dir / f"iter_{iteration:06d}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())
    atomic_write(ckpt_dir / LATEST, path.name + "\n")
    return path


def latest(ckpt_dir: Path) -> Path | None:
    pointer = ckpt_dir / LATEST
    if not pointer.exists():
        return None
    path = ckpt_dir / pointer.read_text().strip()
    return path if path.exists() else None


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint; refuses anything but tensors and plain containers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot load checkpoint {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
