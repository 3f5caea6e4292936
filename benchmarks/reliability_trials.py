"""Reliability trials behind the figures of docs/reliability.md (issue 35): short Navigation2D runs.

    python benchmarks/reliability_trials.py --ray-signals 4 --disk 1 --concurrency 3

* ``--ray-signals N``: N Ray-backed runs (``sampler.backend: ray``, 2 actors) signalled with SIGTERM, odd
  trials at the driver, even ones at its whole process group, once iteration 4, 5, ... is printed; each
  must exit 143 with no traceback or C++ dump, an interrupt checkpoint at or after the last printed
  iteration, the manifest "interrupted", no Ray process left, and resume (``--resume``, Ray again)
  bit-identical to an uninterrupted serial run (``tests/test_reliability_ray.py``'s trial).
* ``--disk R``: R rounds of the full-disk trials on a real 2 MiB tmpfs (root only): ``train`` with 0 to 28 kB
  left (4 kB steps), and ``--resume``, ``evaluate``, ``analyze``, ``plot``, ``video`` with 0 and 8 kB left;
  each must exit 1 with one ``metarl:`` line and no traceback, leave no run directory without a
  ``config.yaml`` (train) and no change to the run (the others), and a stopped training run must resume
  bit-identical once space is back.
* ``--concurrency N``: N times two ``train --resume`` of one run started together: exactly one trains, the
  other exits 2 with one line naming the first's pid; afterwards ``scalars.csv`` holds every iteration once.

The kill -9 and serial-sampler SIGTERM trials are pytest's (``METARL_KILL_TRIALS``, ``METARL_SIGNAL_TRIALS``
in ``tests/test_resume_signals.py``).  Prints one line per trial and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def ray_signals(n: int, tmp: Path) -> tuple[int, int]:
    from test_reliability_ray import assert_clean_interrupt, ray_sigterm_trial

    ok, reference = 0, None
    for i in range(n):
        where = tmp / f"ray{i}"
        where.mkdir()
        to_group = i % 2 == 1
        r = ray_sigterm_trial(where, to_group=to_group, after=4 + i // 2, reference=reference)
        reference = Path(str(r["reference"]))
        try:
            assert_clean_interrupt(r)
            verdict = "ok"
            ok += 1
        except AssertionError as e:
            verdict = f"FAILED: {str(e)[:300]}"
        print(f"ray SIGTERM trial {i + 1} ({'process group' if to_group else 'driver'}, after iteration "
              f"{r['seen']}): exit {r['code']}, checkpoint at {r['done']}, manifest {r['status']}, "
              f"{len(r['left'])} Ray processes left, resume identical: {r['identical']}: {verdict}", flush=True)
    return ok, n


def disk(rounds: int, tmp: Path) -> tuple[int, int]:
    import pytest
    import test_reliability_disk as t

    if not t._can_mount():
        print("full-disk trials: skipped (needs root and mount -t tmpfs)")
        return 0, 0
    ok = total = 0
    base = tmp / "disk"
    base.mkdir()
    with pytest.MonkeyPatch.context():
        ref = {"good": base / "good", "longer": base / "longer"}
        assert t.run_main(["train", t.NAV, "--run-dir", str(ref["good"]), "--no-progress",
                           *t.sets("iterations=2")])[0] == 0
        assert t.run_main(["train", t.NAV, "--run-dir", str(ref["longer"]), "--no-progress",
                           *t.sets("iterations=3")])[0] == 0
    trials = [("train", free) for free in range(0, 28673, 4096)]
    trials += [(c, free) for c in ("resume", "evaluate", "analyze", "plot", "video") for free in (0, 8192)]
    for r in range(rounds):
        for command, free in trials:
            total += 1
            where = tmp / f"d{r}-{command}-{free}"
            where.mkdir()
            try:
                if command == "train":
                    t.test_full_tmpfs_train_is_one_line_and_leaves_a_resumable_run_or_none(free, ref, where)
                else:
                    t.test_full_tmpfs_commands_are_one_line_and_keep_the_run(command, free, ref, where)
                verdict = "ok"
                ok += 1
            except AssertionError as e:
                verdict = f"FAILED: {str(e)[:300]}"
            print(f"full-disk trial {command} with {free // 1024} kB left: {verdict}", flush=True)
    return ok, total


def concurrency(n: int, tmp: Path) -> tuple[int, int]:
    from metarl.cli import main

    nav = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
    sets = sum((["--set", s] for s in ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5",
                                         "policy.hidden_sizes=[8]", "sampler.backend=serial",
                                         "log.checkpoint_every=1", "iterations=1"]), [])
    ok = 0
    for i in range(n):
        run = tmp / f"conc{i}"
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", nav, "--run-dir", str(run), "--no-progress", *sets]) == 0
        argv = [sys.executable, "-m", "metarl", "train", "--resume", str(run), "--iterations", "40", "--no-progress"]
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.pid, p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
        codes = sorted(c for _, c, _ in results)
        refused = [(pid, err) for pid, c, err in results if c == 2]
        others = [pid for pid, c, _ in results if c == 0]
        named = bool(refused and others and f"process {others[0]}" in refused[0][1]
                     and len(refused[0][1].strip().splitlines()) == 1)
        with open(run / "scalars.csv", newline="") as f:
            its = [int(r[0]) for r in list(csv.reader(f))[1:]]
        once = its == list(range(40))
        good = codes == [0, 2] and named and once
        ok += good
        print(f"concurrency trial {i + 1}: exit codes {codes}, the refused one names the other: {named}, "
              f"scalars.csv iterations 0..39 once each: {once}: {'ok' if good else 'FAILED'}", flush=True)
    return ok, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-signals", type=int, default=0, metavar="N")
    parser.add_argument("--disk", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--concurrency", type=int, default=0, metavar="N")
    args = parser.parse_args()
    summary = []
    with tempfile.TemporaryDirectory(prefix="metarl-trials-") as d:
        tmp = Path(d)
        for name, n, trial in (("Ray SIGTERM", args.ray_signals, ray_signals), ("full disk", args.disk, disk),
                               ("concurrent resumes", args.concurrency, concurrency)):
            if n:
                start = time.monotonic()
                ok, total = trial(n, tmp)
                summary.append(f"{name}: {ok} of {total} ({time.monotonic() - start:.0f} s)")
        shutil.rmtree(tmp, ignore_errors=True)
    print("; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
