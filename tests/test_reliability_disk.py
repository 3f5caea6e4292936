"""A full disk on every command (issue 35, class 7): one clean line, exit 1, no thread traceback, no empty
``eval/`` or run directory left by a command that wrote nothing useful, nothing previously valid destroyed,
and a stopped training run that resumes to the uninterrupted result.

Two variants:

* patched (always runs): each write primitive the commands use -- ``os.replace`` (every atomic write: the
  config, ``modules.json``, the manifest, checkpoints, ``latest``, ``best.pt``, evaluation JSON, the video's
  rename), TensorBoard's record writer (its writer thread), ``scalars.csv`` rows, matplotlib's ``savefig`` and
  imageio's ``imwrite`` -- is wrapped; a first pass lists the write sites a command meets (the primitive and
  the file's name, digits folded), then the command is run once per site with that site's first write
  raising ``OSError(ENOSPC)``;
* tmpfs (root, where ``mount -t tmpfs`` works; skipped elsewhere): the commands on a real small file system
  filled to a few kB.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from metarl import checkpoint
from tests.helpers_limits import run_main, set_args, snapshot

ROOT = Path(__file__).resolve().parents[1]
NAV = str(ROOT / "experiments" / "configs" / "navigation2d.yaml")
TINY = ["algo.meta_batch_size=2", "algo.episodes_per_task=2", "env.horizon=5", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1"]


def sets(*items: str) -> list[str]:
    return set_args(TINY, *items)


def params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))["meta"]


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: object) -> None:
    assert sorted(got) == sorted(want), what
    for k in want:
        assert torch.equal(got[k], want[k]), (what, k)


def assert_one_clean_line(code: int, err: str, what: object) -> None:
    """Exit 1 and one ``metarl:`` line naming the full disk; no traceback of any thread, nothing "ignored"."""
    assert code == 1, (what, code, err[-2000:])
    for noise in ("Traceback", "Exception in thread", "Exception ignored"):
        assert noise not in err, (what, err[-3000:])
    ours = [ln for ln in err.splitlines() if ln.startswith("metarl:")]
    assert len(ours) == 1, (what, err[-2000:])
    line = ours[0]
    assert (line.startswith("metarl: error: no space left on device writing ")
            or (line.startswith("metarl: training stopped: ") and "No space left on device" in line)), (what, line)


# -- the write primitives, wrapped -------------------------------------------------------------------------

def _name(path: object) -> str:
    if not isinstance(path, str | os.PathLike):  # a buffer in memory (written atomically afterwards)
        return "memory"
    return re.sub(r"[0-9]+", "N", Path(str(path)).name)


class Sites:
    """Wraps the write primitives; ``seen`` lists the sites met (in order), ``fail`` the one that raises."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: str | None = None):
        self.seen: list[str] = []
        self.fail = fail
        import imageio.v3 as iio
        import matplotlib.figure
        from tensorboard.summary.writer import record_writer

        from metarl import scalars

        self._wrap(monkeypatch, os, "replace", lambda a, k: f"replace:{_name(a[1])}")
        self._wrap(monkeypatch, record_writer.RecordWriter, "write", lambda a, k: "tensorboard-record")
        self._wrap(monkeypatch, scalars.ScalarsCSV, "append", lambda a, k: "scalars.csv-row")
        self._wrap(monkeypatch, matplotlib.figure.Figure, "savefig", lambda a, k: f"savefig:{_name(a[1])}")
        self._wrap(monkeypatch, iio, "imwrite", lambda a, k: f"imwrite:{_name(a[0])}")

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, owner: object, attr: str,
              site: Callable[[tuple, dict], str]) -> None:
        real = getattr(owner, attr)
        sites = self

        def wrapped(*a, **k):
            key = site(a, k)
            first = key not in sites.seen
            sites.seen.append(key)
            if first and key == sites.fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*a, **k)

        monkeypatch.setattr(owner, attr, wrapped)

    def distinct(self, ignore: Callable[[str], bool] = lambda s: False) -> list[str]:
        return [s for s in dict.fromkeys(self.seen) if not ignore(s)]


def discover(argv: list[str], prepare: Callable[[], None]) -> list[str]:
    """The write sites ``argv`` meets, from a run with nothing failing (``prepare`` resets the scratch tree)."""
    prepare()
    with pytest.MonkeyPatch.context() as mp:
        sites = Sites(mp)
        code, err = run_main(argv)
    assert code == 0, err[-2000:]
    # temporaries of the video writer and the .tmp renames are the same sites as their targets
    return sites.distinct(ignore=lambda s: s.endswith((".tmp", ":memory")))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """A finished 2-iteration run, and the same run trained to 3 iterations (for resumes)."""
    base = tmp_path_factory.mktemp("disk")
    good, longer = base / "good", base / "longer"
    assert run_main(["train", NAV, "--run-dir", str(good), "--no-progress", *sets("iterations=2")])[0] == 0
    assert run_main(["train", NAV, "--run-dir", str(longer), "--no-progress", *sets("iterations=3")])[0] == 0
    return {"good": good, "longer": longer}


TRAIN_SITES_EXPECTED = {"replace:config.yaml", "replace:manifest.json", "replace:iter_N.pt", "replace:latest",
                        "tensorboard-record", "scalars.csv-row"}


@pytest.mark.parametrize("how", ["train", "seeds"])
def test_full_disk_at_each_write_site_of_train_is_one_line_and_resumes(how, reference, tmp_path):
    """``train CONFIG`` (a fresh run under ``log.root``), and ``--seeds 1`` (its seed directory there), with
    each write site failing in turn."""
    root = tmp_path / "runs"
    argv = ["train", NAV, "--no-progress", *sets("iterations=2", f"log.root={root}")]
    if how == "seeds":
        argv = [*argv[:2], "--seeds", "1", *argv[2:]]
    sites = discover(argv, lambda: shutil.rmtree(root, ignore_errors=True))
    assert TRAIN_SITES_EXPECTED <= set(sites), sites
    for site in sites:
        shutil.rmtree(root, ignore_errors=True)
        with pytest.MonkeyPatch.context() as mp:
            Sites(mp, fail=site)
            code, err = run_main(argv)
        assert_one_clean_line(code, err, site)
        runs = list(root.iterdir()) if root.exists() else []
        if not runs:  # nothing useful written: no run directory, no empty log.root
            assert not root.exists(), site
            continue
        (run,) = runs
        assert (run / "config.yaml").is_file(), (site, sorted(p.name for p in run.iterdir()))
        code, err = run_main(["train", "--resume", str(run), "--no-progress"])
        assert code == 0, (site, err[-2000:])
        assert_same(params(run), params(reference["good"]), site)


def test_full_disk_at_each_write_site_of_a_resume_keeps_the_checkpoint(reference, tmp_path):
    """``train --resume --iterations 3`` of a finished 2-iteration run, each write site failing in turn: the
    checkpoint it started from stays, and a resume without the fault ends as the 3-iteration reference."""
    run = tmp_path / "run"
    argv = ["train", "--resume", str(run), "--iterations", "3", "--no-progress"]

    def prepare() -> None:
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(reference["good"], run)

    sites = discover(argv, prepare)
    assert {"replace:config.yaml", "replace:iter_N.pt", "tensorboard-record"} <= set(sites), sites
    for site in sites:
        prepare()
        start = (run / "checkpoints" / checkpoint.file_name(2)).read_bytes()
        with pytest.MonkeyPatch.context() as mp:
            Sites(mp, fail=site)
            code, err = run_main(argv)
        assert_one_clean_line(code, err, site)
        assert (run / "checkpoints" / checkpoint.file_name(2)).read_bytes() == start, site
        assert checkpoint.latest(run / "checkpoints") is not None, site
        code, err = run_main(argv)
        assert code == 0, (site, err[-2000:])
        assert_same(params(run), params(reference["longer"]), site)


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "evaluate": lambda run: ["evaluate", str(run), "--tasks", "2", "--steps", "1"],
    "evaluate-out": lambda run: ["evaluate", str(run), "--tasks", "2", "--steps", "1", "--out",
                                 str(run.parent / "out" / "curve.json")],
    "analyze": lambda run: ["analyze", str(run), "--tasks", "2", "--max-states", "50"],
    "plot": lambda run: ["plot", str(run)],
    "plot-out": lambda run: ["plot", str(run), "--out", str(run.parent / "p.png")],
    "video": lambda run: ["video", str(run), "--tasks", "1", "--steps", "1", "--width", "32", "--height", "32",
                          "--out", str(run / "eval" / "v.gif")],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_full_disk_at_each_write_site_of_an_evaluation_changes_nothing(command, reference, tmp_path):
    """``evaluate``, ``analyze``, ``plot`` and ``video`` with each of their write sites failing in turn: one
    line, exit 1, and the scratch tree exactly as before (no empty ``eval/``, no half set of outputs, no
    TensorBoard file of this process in the run)."""
    scratch = tmp_path / "scratch"
    run = scratch / "good"
    argv = COMMANDS[command](run)

    def prepare() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        shutil.copytree(reference["good"], run)

    sites = discover(argv, prepare)
    assert sites, command
    for site in sites:
        prepare()
        before = snapshot(scratch)
        with pytest.MonkeyPatch.context() as mp:
            Sites(mp, fail=site)
            code, err = run_main(argv)
        assert_one_clean_line(code, err, (command, site))
        assert snapshot(scratch) == before, (command, site, set(snapshot(scratch)) ^ set(before))


# -- a real small file system ------------------------------------------------------------------------------

def _can_mount() -> bool:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/metarl-tmpfs-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_disk(tmp_path: Path, free: int) -> Iterator[Path]:
    """A 2 MiB tmpfs with ``free`` bytes left (a filler file takes the rest)."""
    mnt = tmp_path / f"mnt{free}"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        import gc

        gc.collect()  # a writer object of the failed command may still hold its file open
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(mnt: Path, free: int) -> None:
    st = os.statvfs(mnt)
    room = st.f_bavail * st.f_frsize - free
    if room > 0:
        with open(mnt / "filler", "wb") as f:
            with contextlib.suppress(OSError):
                f.write(b"\0" * room)


TMPFS = pytest.mark.skipif(not _can_mount(), reason="needs root and mount -t tmpfs")


@TMPFS
@pytest.mark.parametrize("free", [0, 4096, 12288])
def test_full_tmpfs_train_is_one_line_and_leaves_a_resumable_run_or_none(free, reference, tmp_path):
    with small_disk(tmp_path, free) as mnt:
        fill(mnt, free)
        root = mnt / "runs"
        code, err = run_main(["train", NAV, "--no-progress", *sets("iterations=2", f"log.root={root}")])
        assert_one_clean_line(code, err, free)
        runs = list(root.iterdir()) if root.exists() else []
        assert runs or not root.exists()
        if runs:
            (run,) = runs
            assert (run / "config.yaml").is_file()
            (mnt / "filler").unlink()
            assert run_main(["train", "--resume", str(run), "--no-progress"])[0] == 0
            assert_same(params(run), params(reference["good"]), free)


@TMPFS
@pytest.mark.parametrize("free", [0, 8192])
@pytest.mark.parametrize("command", ["evaluate", "analyze", "plot", "video", "resume"])
def test_full_tmpfs_commands_are_one_line_and_keep_the_run(command, free, reference, tmp_path):
    with small_disk(tmp_path, free) as mnt:
        run = mnt / "good"
        shutil.copytree(reference["good"], run)
        fill(mnt, free)
        argv = (["train", "--resume", str(run), "--iterations", "3", "--no-progress"] if command == "resume"
                else COMMANDS[command](run))
        if command == "video":  # frames larger than the space left
            argv = [*argv, "--width", "320", "--height", "240"]
        before = snapshot(run)
        code, err = run_main(argv)
        assert_one_clean_line(code, err, (command, free))
        if command != "resume":
            assert snapshot(run) == before, (command, free, set(snapshot(run)) ^ set(before))
            return
        assert (run / "checkpoints" / checkpoint.file_name(2)).stat().st_size == before[
            f"checkpoints/{checkpoint.file_name(2)}"][0]
        (mnt / "filler").unlink()
        assert run_main(argv)[0] == 0
        assert_same(params(run), params(reference["longer"]), (command, free))
