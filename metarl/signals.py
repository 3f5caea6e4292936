"""Ctrl-C and SIGTERM: an immediate exit during start-up, an interrupt once work has begun.

Cluster schedulers send SIGTERM before preemption; it is handled exactly like
Ctrl-C (SIGINT).  Within :func:`handled`:

* during start-up (imports, building the run), a signal calls the
  ``early`` callback, which reports and ends the process at once: nothing
  but atomic writes has happened yet, and third-party imports may swallow a
  :class:`KeyboardInterrupt` raised inside them;
* after :func:`begin_work` (called by ``Trainer.train``: the training loop
  owns workers and a checkpoint to write), SIGINT raises :class:`KeyboardInterrupt` and SIGTERM
  :class:`Terminated`, a :class:`KeyboardInterrupt`, so every path that
  handles Ctrl-C (the trainer's checkpoint, the sampler's shutdown of its
  workers) handles SIGTERM too.

An interrupt can be raised where something swallows it: a ``weakref``
finalizer or a ``__del__`` that the garbage collector runs at that moment
prints "Exception ignored in ..." and carries on. :func:`raise_swallowed`,
called by the training loop at each iteration boundary, raises such a lost
interrupt again, so one SIGTERM always stops a run.

Exit codes: :data:`EXIT_SIGINT` (130) and :data:`EXIT_SIGTERM` (143).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM during work."""


_state: dict[str, Any] = {"early": None, "defer": 0, "pending": None, "raised": None}


def exit_code(interrupt: BaseException | int) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (from the exception, or from the signal number)."""
    if isinstance(interrupt, int):
        return 128 + interrupt
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT


def _handler(signum: int, frame: Any) -> None:
    early = _state["early"]
    if early is not None:
        early(signum)  # expected not to return
    if _state["defer"] > 0:  # inside deferred(): raised when the block ends
        _state["pending"] = signum
        return
    _raise(signum)


def _raise(signum: int) -> None:
    _state["raised"] = signum  # until delivered(); see raise_swallowed()
    if signum == signal.SIGTERM:
        raise Terminated(f"signal {signum}")
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a SIGINT / SIGTERM that arrives inside the block until the block has finished.

    For a few statements that must happen together, such as logging an
    iteration's row and counting the iteration as done. The interrupt is
    then raised as usual when the block ends. If the block itself raises,
    that exception propagates and the held signal is dropped.
    """
    _state["defer"] += 1
    try:
        yield
    finally:  # on an exception from the block the statements after this are skipped: the signal is dropped
        _state["defer"] -= 1
        pending = None
        if _state["defer"] == 0:  # the outermost block takes the held signal
            pending, _state["pending"] = _state["pending"], None
    if pending is not None:
        _raise(pending)


def exit_at_once(message: str | Callable[[], str]) -> Callable[[int], None]:
    """An ``early`` callback for :func:`handled`: write ``message`` (or what it returns) as one line, then exit
    with :func:`exit_code` at once."""

    def early(signum: int) -> None:
        try:
            sys.stderr.write((message() if callable(message) else message) + "\n")
            sys.stderr.flush()
        finally:
            os._exit(exit_code(signum))

    return early


def begin_work() -> None:
    """From now on signals raise :class:`KeyboardInterrupt` / :class:`Terminated` instead of exiting at once."""
    _state["early"] = None


def raise_swallowed() -> None:
    """Raise again an interrupt that was raised but has not been :func:`delivered`.

    For a loop that leaves on the first interrupt it gets: the loop reaching
    this call after an interrupt was raised means something between (a
    finalizer run by the garbage collector, a library catching every
    exception) swallowed it. An interrupt swallowed between two runs of one
    process (during an evaluation, say) stops the next run at its start."""
    if _state["raised"] is not None:
        _raise(_state["raised"])


def delivered() -> None:
    """The interrupt raised has reached the code that handles it (the trainer's checkpoint on interrupt)."""
    _state["raised"] = None


@contextlib.contextmanager
def handled(early: Callable[[int], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described above (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if previous[signal.SIGINT] is signal.SIG_IGN:  # started in the background: Ctrl-C is not ours to handle
        del previous[signal.SIGINT]
    _state["early"] = early
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        _state["early"] = None
        _state["raised"] = None  # outside a scope nothing is raised again (the next scope starts clean)
        for s, h in previous.items():
            signal.signal(s, h)
