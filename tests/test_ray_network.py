"""Ray's network exposure: an unreachable cluster fails fast.

That a local instance listens on loopback only is checked by the local Ray sampler test (test_sampling.py)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")


def test_unreachable_address_fails_within_the_timeout():
    from metarl.sampling.ray_backend import RayUnreachableError, check_reachable

    start = time.monotonic()
    with pytest.raises(RayUnreachableError, match="cannot reach the Ray cluster at 192.0.2.1:6379 within 1 s"):
        check_reachable("192.0.2.1:6379", timeout=1.0)  # TEST-NET-1: never answers
    assert time.monotonic() - start < 5
    with pytest.raises(RayUnreachableError, match="127.0.0.1:1"):
        check_reachable("127.0.0.1:1")  # refused at once


@pytest.mark.integration
def test_unreachable_ray_address_is_one_line_from_the_command_line(tmp_path):
    from metarl.cli import main

    sets = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
            "iterations=1", "sampler.backend=ray", "sampler.ray_address=127.0.0.1:1"]
    buf = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(buf):
        code = main(["train", NAV, "--run-dir", str(tmp_path / "run"), "--no-progress",
                     *sum((["--set", s] for s in sets), [])])
    assert time.monotonic() - start < 60
    lines = [ln for ln in buf.getvalue().strip().splitlines() if ln.startswith("metarl:")]
    assert code == 1 and lines == [lines[-1]] and "cannot reach the Ray cluster at 127.0.0.1:1" in lines[-1]
    assert "Traceback" not in buf.getvalue()
