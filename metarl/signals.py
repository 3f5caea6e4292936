"""SIGTERM handled like Ctrl-C.

Cluster schedulers send SIGTERM before preemption.  :func:`sigterm_as_interrupt`
makes it raise :class:`Terminated`, a :class:`KeyboardInterrupt`, so every
path that handles Ctrl-C (the trainer's checkpoint on interrupt, the
sampler's shutdown of its workers) handles SIGTERM too; the command line
exits with :data:`EXIT_SIGTERM` instead of :data:`EXIT_SIGINT`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def exit_code(interrupt: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
