"""Atomic checkpoints that load without executing code.

A checkpoint is a ``torch.save`` of plain tensors, numbers and strings, read
back with ``torch.load(weights_only=True)``.  Writes go to a temporary file
in the same directory, are fsync'ed, then renamed over the target, and the
``latest`` pointer is replaced the same way: a crash at any moment leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from metarl.fileio import atomic_write

LATEST = "latest"
BEST = "best.pt"
"""The checkpoint of the training iteration with the highest post-adaptation return (the MAML paper's
evaluation protocol), kept beside the latest one; its state adds ``best_return``."""


def file_name(iteration: int) -> str:
    """The checkpoint file's name for ``iteration``: ``iter_NNNNNN.pt``."""
    return f"iter_{iteration:06d}.pt"


def iteration_of(name: str) -> int | None:
    """The iteration a checkpoint file's name (or its stem) stands for; None if it is not one."""
    m = _NAME.fullmatch(name if name.endswith(".pt") else name + ".pt")
    return int(m[1]) if m else None


def on_cpu(state: Any) -> Any:
    """``state`` with every tensor (in nested dicts, lists and tuples) as a CPU tensor: what a checkpoint holds,
    whatever device the learner ran on, so that it loads on a machine without that device."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return type(state)((k, on_cpu(v)) for k, v in state.items())
    if isinstance(state, list | tuple):
        return type(state)(on_cpu(v) for v in state)
    return state


def save(ckpt_dir: Path, iteration: int, state: dict[str, Any]) -> Path:
    """Write ``state`` (its tensors as CPU tensors) as ``ckpt_dir/iter_{iteration:06d}.pt`` and point ``latest``
    at it."""
    path = ckpt_dir / file_name(iteration)
    buf = io.BytesIO()
    torch.save(on_cpu(state), buf)
    atomic_write(path, buf.getvalue())
    atomic_write(ckpt_dir / LATEST, path.name + "\n")
    return path


def save_best(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (with its ``best_return``; tensors on CPU) as ``ckpt_dir/best.pt``; the ``latest`` pointer
    is not moved."""
    buf = io.BytesIO()
    torch.save(on_cpu(state), buf)
    return atomic_write(Path(ckpt_dir) / BEST, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint or ``latest`` pointer that cannot be used (the message names the file)."""


_NAME = re.compile(r"iter_([0-9]{6,})\.pt")


def latest(ckpt_dir: Path) -> Path | None:
    """The checkpoint ``latest`` points at; None when there is no pointer.

    The pointer must name a file ``iter_NNNNNN.pt`` inside ``ckpt_dir``
    (never a path elsewhere) that exists; anything else raises
    :class:`CheckpointError`.
    """
    ckpt_dir = Path(ckpt_dir)
    name = _pointed_name(ckpt_dir)
    if name is None:
        return None
    path = ckpt_dir / name
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir / LATEST} names {name}, which does not exist")
    return path


def latest_iteration(ckpt_dir: Path) -> int:
    """The iteration ``latest`` points at, read from the pointer alone (0 when there is none).

    For reports over released artifacts; a pointer that is not ``iter_NNNNNN.pt`` raises
    :class:`CheckpointError`, as in :func:`latest`.
    """
    name = _pointed_name(Path(ckpt_dir))
    return 0 if name is None else int(_NAME.fullmatch(name)[1])


def _pointed_name(ckpt_dir: Path) -> str | None:
    """The file name ``ckpt_dir/latest`` holds, checked to be ``iter_NNNNNN.pt``; None without a pointer."""
    pointer = ckpt_dir / LATEST
    if not pointer.exists():
        return None
    try:
        name = pointer.read_bytes()[:256].decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {pointer}: {type(e).__name__}") from None
    if not _NAME.fullmatch(name):
        raise CheckpointError(f"{pointer} must name a checkpoint file iter_NNNNNN.pt in {ckpt_dir}, "
                              f"got {name[:60]!r}")
    return name


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint; refuses anything but tensors and plain containers.

    Also refuses a state without an ``iteration`` (a non-negative integer)
    and a ``meta`` mapping of finite tensors.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {first[:200]}") from None
    problem = _problem(state)
    if problem:
        raise CheckpointError(f"checkpoint {path}: {problem}")
    return state


def _problem(state: Any) -> str | None:
    """Why ``state`` is not a checkpoint (None: it is one)."""
    if not isinstance(state, dict):
        return f"expected a mapping, got {type(state).__name__}"
    it = state.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        return f"'iteration' must be a non-negative integer, got {str(it)[:40]}"
    meta = state.get("meta")
    if not isinstance(meta, dict) or not meta:
        return "'meta' must be a non-empty mapping of tensors"
    for k, v in meta.items():
        if isinstance(v, dict):  # nested state (e.g. an optimizer's)
            continue
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return f"'meta.{k}' holds NaN or infinite values"
    return None
