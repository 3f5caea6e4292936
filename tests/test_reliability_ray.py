"""The Ray backend keeps the local sampler's promises (issue 35, class 8).

* ``sampler.ray_address`` that is not an address: exit 2, one line, no run directory; an unreachable one:
  one line (exit 1), no run directory, checked before the run directory is created (fast, default set);
* SIGTERM to the driver, or to its whole process group, during training: exit 143 after the interrupt
  checkpoint of the last completed iteration, the manifest "interrupted", no C++ dump or abort on stderr,
  no Ray process left, and ``--resume`` bit-identical to an uninterrupted run (slow: a Ray start-up each).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metarl import checkpoint
from tests.helpers_limits import run_main, set_args

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "log.checkpoint_every=3"]


def sets(*items: str) -> list[str]:
    return set_args(TINY, *items)


@pytest.mark.parametrize("address,code,says", [
    ("not an address", 2, "sampler.ray_address: must be HOST:PORT"),
    ("127.0.0.1", 2, "sampler.ray_address: must be HOST:PORT"),
    ("10.0.0.1:70000", 2, "sampler.ray_address: must be HOST:PORT"),
    ("127.0.0.1:1", 1, "cannot reach the Ray cluster at 127.0.0.1:1"),
    ("ray://127.0.0.1:1", 1, "cannot reach the Ray cluster at 127.0.0.1:1"),
])
@pytest.mark.parametrize("how", ["train", "seeds"])
def test_a_bad_or_unreachable_ray_address_is_one_line_and_no_run_directory(address, code, says, how, tmp_path,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", NAV, "--no-progress", *sets("sampler.backend=ray", f"sampler.ray_address={address}",
                                                 f"log.root={tmp_path / 'runs'}")]
    if how == "seeds":
        argv += ["--seeds", "1"]
    start = time.monotonic()
    got, err = run_main(argv)
    assert time.monotonic() - start < 30
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarl: error: ") and says in lines[0], err
    assert list(tmp_path.iterdir()) == []  # no run directory, no log.root


def _params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))["meta"]


def _ray_processes_of(session_marker: str) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(session_marker in a for a in (p.info["cmdline"] or [])):
                out.append(p.info["pid"])
    return out


def ray_sigterm_trial(tmp: Path, to_group: bool, after: int = 4, iterations: int = 30,
                      reference: Path | None = None) -> dict[str, object]:
    """One trial: a Ray-backed run signalled (SIGTERM, to the driver or its process group) once iteration
    ``after`` is printed, then resumed; returns what happened (asserted by the callers)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    common = sets(f"iterations={iterations}")
    if reference is None:
        reference = tmp / "ref"
        subprocess.run([sys.executable, "-m", "metarl", "train", NAV, "--run-dir", str(reference), "--no-progress",
                        *common, "--set", "sampler.backend=serial"], env=env, check=True, capture_output=True,
                       timeout=300)
    run = tmp / ("group" if to_group else "driver")
    temp_dir = f"/tmp/ray-metarl-{os.getpid()}-{run.name}"
    cmd = [sys.executable, "-m", "metarl", "train", NAV, "--run-dir", str(run), "--no-progress", *common,
           "--set", "sampler.backend=ray", "--set", "sampler.workers=2"]
    proc = subprocess.Popen(cmd, env={**env, "RAY_TMPDIR": temp_dir}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = 0
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if line.startswith(f"iteration {after}/"):
            seen = after
            break
        if time.monotonic() > deadline:
            break
    if to_group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    done = checkpoint.load(checkpoint.latest(run / "checkpoints"))["iteration"]
    status = json.loads((run / "manifest.json").read_text())["sessions"][-1]["status"]
    time.sleep(1.0)
    left = _ray_processes_of(temp_dir)
    resume = subprocess.run([sys.executable, "-m", "metarl", "train", "--resume", str(run), "--no-progress"],
                            env={**env, "RAY_TMPDIR": temp_dir}, capture_output=True, text=True, timeout=600)
    ref, got = _params(reference), _params(run)
    same = sorted(ref) == sorted(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    return {"code": proc.returncode, "err": err, "seen": seen, "done": done, "status": status, "left": left,
            "resume_code": resume.returncode, "resume_err": resume.stderr, "identical": same,
            "reference": reference}


def assert_clean_interrupt(r: dict[str, object]) -> None:
    err = str(r["err"])
    assert r["code"] == 143, (r["code"], err[-3000:])
    for dump in ("Traceback", "*** SIG", "received at time", "Aborted", "core dumped", "PC: @", "check failed"):
        assert dump.lower() not in err.lower(), (dump, err[-3000:])
    assert "interrupted; resume with: metarl train --resume" in err, err[-2000:]
    # the interrupt checkpoint (log.checkpoint_every is 3): nothing printed is lost
    assert int(r["done"]) >= int(r["seen"]) > 3, r
    assert r["status"] == "interrupted", r["status"]
    assert r["left"] == [], r["left"]
    assert r["resume_code"] == 0, str(r["resume_err"])[-2000:]
    assert r["identical"], "resumed parameters differ from the uninterrupted run"


@pytest.mark.slow
def test_sigterm_to_a_ray_driver_or_its_process_group_checkpoints_exits_143_and_resumes_identically(tmp_path):
    first = ray_sigterm_trial(tmp_path, to_group=False)
    assert_clean_interrupt(first)
    assert_clean_interrupt(ray_sigterm_trial(tmp_path, to_group=True, reference=Path(str(first["reference"]))))
