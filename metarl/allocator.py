"""Keep glibc's allocator from returning large tensor buffers to the kernel.

The outer step allocates and frees many temporaries of a few MB each (the
per-task activations and their tangents, ``(tasks, steps, hidden)`` floats).
glibc serves blocks above its mmap threshold (128 KiB at start, raised
dynamically only up to the size of the largest block freed so far) with a
fresh ``mmap`` and unmaps them on ``free``, and it trims the heap's top
whenever more than 128 KiB is free there.  Either way every new temporary
starts as untouched pages, and the page faults of filling them cost about
as much as the arithmetic: on the HalfCheetahVel outer step's Hessian-vector
product (4 tasks x 2,000 steps, one thread) they made up close to half of
the time (``benchmarks/bench_allocator.py``).

:func:`tune_allocator` sets the mmap threshold to glibc's maximum (32 MiB on
64-bit) and the trim threshold to 1 GiB, so such blocks are carved from the
heap and reused, and it keeps every thread on the main heap (one arena): the
curvature products run in short-lived Python threads, and a thread's own
arena lives in 64 MiB mmapped heaps that glibc unmaps again as soon as they
empty, which brought the page faults back.  The price is that the process keeps up to its peak heap
(plus 1 GiB of trim slack) mapped after the peak passes.  The numbers are
unchanged: only where the buffers live changes.

It is a process-wide setting of the C library, applied when a
:class:`~metarl.trainer.Trainer` is built and when the ``metarl`` command
starts (the sampler workers allocate only small blocks and keep the
defaults); ``METARL_MALLOC_TUNING=0`` turns it off.  Elsewhere than glibc it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # only glibc has gnu_get_libc_version; mallopt is what is used
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def tune_allocator() -> bool:
    """Apply the thresholds once per process; True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("METARL_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        _applied = False
        return False
    libc = _glibc()
    if libc is None:
        _applied = False
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(bool(libc.mallopt(option, value)) for option, value in
             ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))
    _applied = ok
    return ok
