"""Atomic file writes: a crash at any moment leaves either the old file or the new one.

A write never replaces what is not a regular file (a FIFO, a device such as
``/dev/null``, a directory, a socket): :func:`check_replaceable` raises
:class:`NotRegularFileError` first.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file


class NotRegularFileError(OSError):
    """A write would replace something that is not a regular file (its ``strerror`` says what it is)."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a full disk (or an exhausted quota)."""


def disk_full(e: BaseException | None) -> OSError | None:
    """The :data:`DISK_FULL` ``OSError`` that ``e`` is or that it was raised from (``__cause__`` /
    ``__context__``, a few levels deep: a library that wraps the write's error), else None."""
    for _ in range(8):
        if e is None:
            return None
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


def quiet_writer_threads() -> None:
    """A TensorBoard writer thread whose write fails (a full disk) keeps its exception for the thread that
    writes next (``add_*``, ``flush``, ``close`` re-raise it there, where it becomes one line); Python's
    default hook would also print the thread's traceback.  This hook leaves such an ``OSError`` to that
    re-raise and passes everything else on.  Likewise a full disk met again by a writer's ``__del__`` (an
    image writer closing the file whose write failed) is not printed as "Exception ignored": the command has
    already stopped on it with one line.  Installed once per process."""
    import sys
    import threading

    previous = threading.excepthook
    if not getattr(previous, "metarl_quiet", False):
        def hook(args: Any) -> None:
            if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
                return
            previous(args)

        hook.metarl_quiet = True  # type: ignore[attr-defined]
        threading.excepthook = hook
    unraisable = sys.unraisablehook
    if not getattr(unraisable, "metarl_quiet", False):
        def quiet(u: Any) -> None:
            if disk_full(u.exc_value) is not None:
                return
            unraisable(u)

        quiet.metarl_quiet = True  # type: ignore[attr-defined]
        sys.unraisablehook = quiet


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotRegularFileError` when ``path`` exists (a symbolic link followed) and is not a regular
    file; a missing path, or a regular file, may be written."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(errno.EEXIST, f"it is {_kind(mode)}, not a regular file", str(path))


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory,
    fsync, rename over the target, and fsync the directory.  A ``path`` that is not a regular file
    (:func:`check_replaceable`) is left as it is: :class:`NotRegularFileError`."""
    path = Path(path)
    check_replaceable(path)
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
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # a full disk names the file it could not write
            e.filename = str(path)
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
