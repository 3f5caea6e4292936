"""The allocator thresholds: freed tensor buffers are reused, not unmapped and refaulted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from metarl import allocator

# 15 rounds, each a fresh thread (as the curvature products' thread pool is) that
# allocates and frees 40 buffers of 2 MiB: 307,200 pages touched.  glibc's defaults
# refault nearly all of them (each thread's arena heap is unmapped when it empties);
# with the thresholds the heap is kept and only a few thousand faults remain.
PROBE = textwrap.dedent("""
    import resource, threading, torch
    from metarl.allocator import tune_allocator
    applied = tune_allocator()
    def work():
        xs = [torch.ones(512 * 1024) for _ in range(40)]
        del xs
    def rounds(n):
        for _ in range(n):
            t = threading.Thread(target=work); t.start(); t.join()
    rounds(2)  # the first rounds map the heap
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(15)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
""")

glibc = pytest.mark.skipif(allocator._glibc() is None, reason="the thresholds are glibc's")


def probe(tuning: str) -> tuple[str, int]:
    env = dict(os.environ, METARL_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    return out[0], int(out[1])


@glibc
def test_tuned_allocator_reuses_freed_buffers_and_the_switch_restores_glibcs_defaults():
    applied, tuned = probe("1")
    assert applied == "True" and tuned < 20_000
    applied, default = probe("0")
    assert applied == "False" and default > 150_000


def test_tune_allocator_is_applied_once_per_process(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("METARL_MALLOC_TUNING", "off")
    assert allocator.tune_allocator() is False
    monkeypatch.setenv("METARL_MALLOC_TUNING", "1")
    assert allocator.tune_allocator() is False  # decided once; the process's first call wins
