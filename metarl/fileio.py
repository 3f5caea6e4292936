"""Atomic file writes: a crash at any moment leaves either the old file or the new one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory,
    fsync, rename over the target, and fsync the directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)  # mkstemp creates files readable by the owner only
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path``; None when the file is missing, unreadable or not JSON (a partial write by
    something other than :func:`atomic_write`, a file of someone else's, one nested too deeply)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return None


def replace_section(text: str, new: str, begin: str, end: str) -> str:
    """``text`` with the part from the marker line ``begin`` to ``end`` replaced by ``new`` (which holds
    both markers); ``new`` is appended when the markers are absent.  Used for generated report sections."""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + new.rstrip("\n") + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + new
