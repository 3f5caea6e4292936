"""Guards for tests that call the CLI in-process: tiny sizes and a time limit,
so that a regression cannot turn an error test into a long training run."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

TINY_SETS = ["iterations=1", "algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5",
             "policy.hidden_sizes=[4]", "sampler.backend=serial"]
"""Overrides that make any accidental training run take well under a second."""


def tiny_cli_sets() -> list[str]:
    out: list[str] = []
    for s in TINY_SETS:
        out += ["--set", s]
    return out


class TimeLimitExceeded(BaseException):
    """Raised in the main thread when a :func:`time_limit` block runs too long
    (a BaseException, so that the CLI's error handling cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def set_args(base: list[str], *items: str) -> list[str]:
    """``--set`` options for the overrides ``base`` then ``items``."""
    return sum((["--set", s] for s in [*base, *items]), [])


def run_main(argv: list[str]) -> tuple[int, str]:
    """``metarl`` in-process: its exit code and what it wrote on stderr (stdout dropped)."""
    from metarl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (relative) with its size and mtime: equal before and after means nothing was
    written, created, removed or touched."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out
