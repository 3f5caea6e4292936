"""The one owner of a run directory: its layout, lifecycle, modules, config, checkpoints and results.

Layout (what metarl writes in a run directory, and all that :func:`clean` removes)::

    config.yaml            the run's config (:mod:`metarl.config`), written first
    modules.json           the ``--module`` files the run needs (absent: none), with
    modules/<name>.py      a copy of each
    checkpoints/           iter_NNNNNN.pt, ``latest`` (pointer), best.pt (:mod:`metarl.checkpoint`)
    events.out.tfevents.*  TensorBoard
    scalars.csv            every scalar, every iteration (:mod:`metarl.scalars`)
    manifest.json          code, versions, machine of every session (:mod:`metarl.manifest`)
    eval/                  evaluations; eval/iter_NNNNNN/ those of a budget the run was extended past

Interrupted atomic writes leave ``.<name>.*.tmp`` beside their target
(:func:`metarl.fileio.atomic_write`).  Any other file is left alone.

Every command asks a :class:`RunDir` for the config (:meth:`RunDir.config`,
which first re-imports the run's recorded modules), for checkpoints
(:meth:`RunDir.state_at`, :meth:`RunDir.load`) and for result files
(:meth:`RunDir.eval_path`, :meth:`RunDir.cached`); nobody reads ``config.yaml``
by hand.

One process at a time trains in a run directory: ``metarl train`` (a new run,
``--force``, ``--resume``, each ``--seeds`` directory) and
:meth:`RunDir.prepare_training` take an exclusive ``fcntl.flock`` on the directory itself
(nothing is written; ``/proc/locks`` names the holder) before they change
anything, and hold it until the process ends (:meth:`RunDir.unlock` lets an in-process caller go
on); a second process gets :class:`RunDirBusy` naming the first.  Before
that, :meth:`RunDir.check_files` refuses damaged files (a ``checkpoints`` or
``eval`` that is not a directory, a ``scalars.csv`` or ``manifest.json`` that
is not one), so a command stops before it has changed anything.

Modules: ``metarl train --module my_family.py`` records the file's absolute
path in ``modules.json`` and copies it to ``modules/my_family.py``.  Later
commands import the recorded path while it exists (the file as the user keeps
it, like the rest of the code) and the copy otherwise (a moved checkout or
home).  A run without ``modules.json`` needs none.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from envs.base import TaskFamily
from metarl import checkpoint, manifest, scalars, usermodules
from metarl.algos import MetaLearner
from metarl.config import Config, ConfigError, load_config, to_yaml
from metarl.fileio import DISK_FULL, atomic_write, read_json
from metarl.run import build_family, build_learner, write_json

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
MODULES_RECORD = "modules.json"
MODULES_DIR = "modules"
OUTPUT_FILES = ("scalars.csv", "manifest.json")
EVENTS_GLOB = "events.out.tfevents.*"
MAX_SUFFIX = 1000


NAME_MAX = 255  # bytes in one path component (Linux, macOS)


def check_creatable(path: Path) -> None:
    """Raise OSError (one line) unless ``path`` could be created: no component longer than :data:`NAME_MAX`
    bytes, the nearest existing ancestor a writable directory. Nothing is created."""
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, f"a path component is longer than {NAME_MAX} bytes ({part[:40]}...)")
    parent = path
    while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OSError(errno.ENOTDIR, f"{_show(parent)} is not a directory")
    if parent != path:
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, f"{_show(parent)} is not writable")
        probe_writable(parent)  # permissions are not the whole story (read-only or special file systems, root)


def create_unique(base: Path) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ... if taken) exclusively and return it.

    ``mkdir`` without ``exist_ok`` is atomic, so runs launched at the same
    moment with the same name get distinct directories.
    """
    base = Path(base)
    check_creatable(base.with_name(f"{base.name}-{MAX_SUFFIX}"))
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SUFFIX + 1):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{base} and {MAX_SUFFIX - 1} suffixed variants already exist")


def stale_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files left by interrupted atomic writes, in the run directory and its subdirectories."""
    run_dir = Path(run_dir)
    found: list[Path] = []
    for d in (run_dir, run_dir / CHECKPOINTS, run_dir / EVAL, run_dir / MODULES_DIR):
        if d.is_dir():
            found += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()]
    return sorted(found)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete :func:`stale_temporaries`; returns what was removed."""
    removed = stale_temporaries(run_dir)
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def clean(run_dir: Path, keep_config: bool = False) -> None:
    """Remove everything metarl writes in ``run_dir`` (the run's definition, ``config.yaml`` and its
    recorded modules, too unless ``keep_config``)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINTS
    if ckpt.is_dir():
        for p in ckpt.iterdir():
            if p.is_file() and (p.name in (checkpoint.LATEST, checkpoint.BEST) or checkpoint.iteration_of(p.name)
                                is not None):
                p.unlink()
    remove_stale_temporaries(run_dir)
    if ckpt.is_dir() and not any(ckpt.iterdir()):
        ckpt.rmdir()
    for p in run_dir.glob(EVENTS_GLOB):
        p.unlink()
    names = OUTPUT_FILES if keep_config else (*OUTPUT_FILES, CONFIG, MODULES_RECORD)
    for name in names:
        (run_dir / name).unlink(missing_ok=True)
    for d in (EVAL,) if keep_config else (EVAL, MODULES_DIR):
        if (run_dir / d).is_dir():
            shutil.rmtree(run_dir / d)


class RunDirError(ValueError):
    """A run directory that cannot be created or written, or holds a damaged file (one line naming it)."""


class RunDirBusy(RunDirError):
    """Another process holds the run directory's lock (the message names it)."""


_HELD: dict[str, int] = {}  # resolved run directory -> the descriptor that holds its lock


def flock_holder(st: os.stat_result) -> int | None:
    """The pid of the process holding an ``flock`` on the file ``st`` describes, from ``/proc/locks``
    (Linux); None when no process does, or when ``/proc/locks`` cannot be read (:func:`locks_readable`)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; waiters carry "->"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want and fields[4].isdigit():
            return int(fields[4])
    return None


def locks_readable() -> bool:
    """Whether :func:`flock_holder` can see locks (``/proc/locks`` is readable)."""
    return os.access("/proc/locks", os.R_OK)


def _lock_holder(fd: int) -> str:
    """The process holding the ``flock`` on the file ``fd`` names, as words for a message: its pid from
    ``/proc/locks`` (Linux), else "another process"."""
    pid = flock_holder(os.fstat(fd))
    if pid is None or pid == os.getpid():
        return "another process"
    return f"process {pid}{_command_of(pid)}"


def _command_of(pid: int) -> str:
    """`` (metarl train ...)``: the command line of ``pid``, cut short, or nothing where it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(400).split(b"\0")
    except OSError:
        return ""
    text = " ".join(a.decode("utf-8", "replace") for a in argv if a)
    return f" ({text[:100]}{'...' if len(text) > 100 else ''})" if text else ""


def default_path(cfg: Config) -> Path:
    """``<log.root>/<family>__<name>__<seed>__<time>``: a fresh run's directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.log.root) / f"{cfg.env.family}__{cfg.name}__{cfg.seed}__{stamp}"


def seed_path(cfg: Config | None, seed: int, base: str | Path | None = None) -> Path:
    """The stable directory of one seed of a ``--seeds`` run: ``BASE/seed<S>``, else (``cfg`` needed)
    ``<log.root>/<family>__<name>__seed<S>``."""
    if base:
        return Path(base) / f"seed{seed}"
    assert cfg is not None, "a seed's default directory depends on its config"
    return Path(cfg.log.root) / f"{cfg.env.family}__{cfg.name}__seed{seed}"


def curve_file(tasks: int, steps: int, seed: int, best: bool = False) -> str:
    """The campaigns' cached adaptation curve: ``curve_[best_]<tasks>_<steps>_<seed>.json`` in ``eval/``."""
    return f"curve_{'best_' if best else ''}{tasks}_{steps}_{seed}.json"


def first_missing(path: Path) -> Path | None:
    """The highest directory of ``path`` and its parents that does not exist yet (None: ``path`` exists)."""
    missing = None
    for d in (path, *path.parents):
        if d.exists():
            return missing
        missing = d
    return missing


def probe_writable(directory: Path) -> None:
    """Create and remove a file in ``directory`` (OSError if that fails; a leftover after a kill is a
    stale temporary).  The directory's times are put back: a probe changes nothing."""
    st = os.stat(directory)
    fd, probe = tempfile.mkstemp(prefix=".metarl-probe-", suffix=".tmp", dir=directory)
    os.close(fd)
    os.unlink(probe)
    with contextlib.suppress(OSError):
        os.utime(directory, ns=(st.st_atime_ns, st.st_mtime_ns))


FIXED_ON_RESUME = ("env.family", "env.kwargs", "env.horizon", "env.oracle", "policy.hidden_sizes",
                   "policy.activation", "policy.adapt", "policy.context_size", "algo.name", "algo.inner_update")
"""Config keys (dotted prefixes) that a resumed run may not change: the parameters' shapes, the tasks."""


_MISSING = object()


def _at(tree: Any, dotted: str) -> Any:
    """The value at ``a.b`` in nested mappings, or ``_MISSING``."""
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _show(path: Any, limit: int = 120) -> str:
    """``repr(str(path))``, its middle cut out past ``limit`` characters (messages stay one short line)."""
    text = str(path)
    return repr(text if len(text) <= limit else text[:limit // 2] + "..." + text[-limit // 2:])


def _short(value: Any) -> str:
    from metarl.inputs import short_repr

    return short_repr(value, 60)


class LoadedRun(NamedTuple):
    """A run directory's config, family and learner, restored from the checkpoint at ``iteration``."""

    cfg: Config
    family: TaskFamily
    learner: MetaLearner
    iteration: int


@dataclass
class TrainingPlan:
    """What training a config in a run directory amounts to (:meth:`RunDir.prepare_training`).

    ``action``: ``finished`` (the budget is reached: nothing to do), ``resume``
    (from ``done`` iterations, with the run's own config and the new budget:
    ``cfg``) or ``start`` (from iteration 0). ``archived``: where the
    evaluations at the budget the run had finished were moved (or None).
    """

    action: str
    cfg: Config
    done: int | None = None
    archived: Path | None = None

    @property
    def resume(self) -> bool:
        return self.action == "resume"


def restore(learner: MetaLearner, state: Mapping[str, Any], where: Path) -> None:
    """Load a checkpoint's ``meta`` into ``learner``, refusing other names or shapes
    (:class:`metarl.checkpoint.CheckpointError`)."""
    import torch

    want = learner.state_dict()
    meta = state["meta"]
    if set(meta) != set(want):
        raise checkpoint.CheckpointError(f"checkpoint in {where} holds {len(meta)} tensors that do not match this "
                                         f"run's learner ({len(want)}: {', '.join(list(want)[:4])}, ...)")
    for k, v in want.items():
        got = meta[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise checkpoint.CheckpointError(f"checkpoint in {where}: {k} has shape {shape}, "
                                             f"this run's learner needs {tuple(v.shape)}")
    learner.load_state_dict(meta)


class RunDir:
    """One run directory: ask it for the config, checkpoints, modules and result files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL

    def is_run(self) -> bool:
        """Whether the directory holds a run's config."""
        return self.config_path.is_file()

    # -- the lock and the check of its files --------------------------------------

    def lock(self) -> None:
        """Take the run directory's exclusive lock for the rest of the process (again in the same process: a
        no-op): ``fcntl.flock`` on the directory itself, so nothing is written in it. Raises
        :class:`RunDirBusy` naming the process that holds it (from ``/proc/locks`` where there is one),
        :class:`RunDirError` when the directory cannot be opened."""
        key = str(self.path.resolve())
        if key in _HELD:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RunDirError(f"cannot lock run directory {_show(self.path)}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunDirBusy(f"run directory {_show(self.path)} is in use by {holder}; wait for it to finish "
                             "or stop it") from None
        except OSError as e:
            os.close(fd)
            raise RunDirError(f"cannot lock run directory {_show(self.path)}: {e.strerror or e}") from None
        _HELD[key] = fd

    def trainer(self) -> int | None:
        """The pid of the process training in the directory now (the holder of :meth:`lock`'s lock, read from
        ``/proc/locks`` without taking it), or None: none is, or the system does not say
        (:func:`locks_readable`)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return flock_holder(st)

    def unlock(self) -> None:
        """Release the lock :meth:`lock` took (without this, the kernel releases it when the process ends)."""
        fd = _HELD.pop(str(self.path.resolve()), None)
        if fd is not None:
            os.close(fd)

    def check_files(self, creatable: bool = False) -> None:
        """Refuse, before anything is changed, the damaged files a command would trip over halfway:
        a run directory, ``checkpoints`` or ``eval`` that is not a directory, a ``scalars.csv``
        (:func:`metarl.scalars.check`) or ``manifest.json`` (:func:`metarl.manifest.check`) that is not one;
        with ``creatable``, a missing run directory that could not be created (:func:`check_creatable`).
        Raises :class:`RunDirError` (one line)."""
        if creatable and not self.path.exists():
            try:
                check_creatable(self.path)
            except OSError as e:
                raise RunDirError(f"cannot write run directory {_show(self.path)}: {e.strerror or e}") from None
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{str(self.path)!r} is not a directory")
        for d in (self.checkpoints, self.eval_dir):
            if (d.exists() or d.is_symlink()) and not d.is_dir():
                raise RunDirError(f"{d}: not a directory (a run keeps its {d.name} there)")
        for name in (CONFIG, *OUTPUT_FILES):
            p = self.path / name
            if p.exists() and not p.is_file():  # a directory, a FIFO (a link to a regular file is one)
                raise RunDirError(f"{p}: not a regular file")
        try:
            scalars.check(self.path)
            manifest.check(self.path)
        except ValueError as e:
            raise RunDirError(str(e)) from None

    # -- creation and lifecycle ---------------------------------------------------

    @classmethod
    def create(cls, cfg: Config, path: str | Path | None = None, force: bool = False) -> RunDir:
        """A new run's directory: a fresh unique one by default (:func:`default_path`), else ``path``,
        which must be empty of anything but stale temporaries unless ``force`` (then metarl's own
        files are removed, :func:`clean`). Raises :class:`RunDirError` before anything is written; the
        directory comes back locked (:meth:`lock`)."""
        try:
            if path is None:
                made = cls(create_unique(default_path(cfg)))
                made.lock()
                return made
            where = Path(path)
            check_creatable(where)
            if where.exists() and not where.is_dir():
                raise RunDirError(f"cannot write run directory {str(where)!r}: it is not a directory")
            if where.exists() and set(where.iterdir()) - set(stale_temporaries(where)):
                if not force:
                    raise RunDirError(f"run directory {str(where)!r} exists and is not empty "
                                      "(use --force or --resume)")
                made = cls(where)
                made.check_files()
                made.lock()  # not while another process trains in it
                probe_writable(where)
                clean(where)
            where.mkdir(parents=True, exist_ok=True)
            probe_writable(where)
            made = cls(where)
            made.lock()
            return made
        except OSError as e:
            if e.errno in DISK_FULL:  # not bad input: the command stops with its one full-disk line
                raise
            raise RunDirError(f"cannot write run directory {_show(path or cfg.log.root)}: "
                              f"{e.strerror or e}") from None

    def remove_new(self, up_to: Path | None) -> None:
        """After a start that a full disk stopped before the run's config was complete: remove the files the
        start writes first (``config.yaml``, ``modules.json``, ``modules/``, temporaries), unlock, and remove
        the directory and its parents up to ``up_to`` (the highest one created for this run; None: none was)
        where nothing else is in them."""
        for name in (CONFIG, MODULES_RECORD):
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.path / MODULES_DIR)
        remove_stale_temporaries(self.path)
        self.unlock()
        if up_to is None:
            return
        for d in (self.path, *self.path.parents):
            try:
                d.rmdir()  # only when empty
            except OSError:
                return
            if d == up_to:
                return

    def write_config(self, cfg: Config) -> None:
        """Write ``config.yaml`` atomically (unchanged text is not rewritten)."""
        text = to_yaml(cfg)
        if not (self.config_path.is_file() and self.config_path.read_text(encoding="utf-8") == text):
            atomic_write(self.config_path, text)

    def prepare_training(self, cfg: Config, keep_budgets: bool = False) -> TrainingPlan:
        """Skip a finished run, resume an interrupted one, extend one whose budget grew, start a new one.

        A run with a checkpoint resumes with its own config and ``cfg``'s
        budget; with ``keep_budgets`` its evaluations at the budget it had
        finished move to ``eval/iter_NNNNNN/`` first (:meth:`archive_evaluations`).
        A run without one starts over: ``config.yaml`` is written (so an
        interrupted start can be resumed) and the event files of a start that
        never reached a checkpoint are removed.  Every file is checked
        (:meth:`check_files`) and the lock taken (:meth:`lock`) before anything
        changes; the lock is held until the process ends or :meth:`unlock`."""
        self.check_files(creatable=True)
        done = self.done_iterations()
        if done is not None and done >= cfg.iterations:
            return TrainingPlan("finished", cfg, done)
        resumed = self.resume_config(cfg.iterations) if done is not None else None  # checked before changes
        created = first_missing(self.path)  # the highest directory this start creates (None: it exists)
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        if resumed is None:
            for stale in self.path.glob(EVENTS_GLOB):
                stale.unlink()
            try:
                self.write_config(cfg)
            except OSError:  # a full disk: no empty seed directory (nor log.root) stays behind
                self.remove_new(up_to=created)
                raise
            return TrainingPlan("start", cfg)
        archived = self.archive_evaluations(done) if keep_budgets else None
        return TrainingPlan("resume", resumed, done, archived)

    def resume_config(self, iterations: int | None = None) -> Config:
        """The config a resumed run continues with; ``iterations`` extends (or keeps) its budget.

        The trainer writes a changed budget back to ``config.yaml`` (atomically,
        once the checkpoint has loaded).  A run without a checkpoint resumes from
        iteration 0.  Raises :class:`metarl.config.ConfigError` for a bad config
        or an ``iterations`` below the iteration already reached, and
        :class:`metarl.checkpoint.CheckpointError` for a bad checkpoint.
        """
        cfg = self.config([f"iterations={iterations}"] if iterations is not None else [])
        state = self.latest_state()
        done = 0 if state is None else int(state["iteration"])
        if iterations is not None and iterations < done:
            raise ConfigError(f"--iterations {iterations} is below the {done} iterations {self.path} has done")
        if state is not None:
            self.check_unchanged(cfg, state)
        return cfg

    def check_unchanged(self, cfg: Config, state: Mapping[str, Any]) -> None:
        """Refuse (:class:`metarl.config.ConfigError` naming the key) a resume whose ``config.yaml`` was edited
        since the checkpoint ``state`` was written in a key that fixes the parameters' shapes or the task
        distribution (:data:`FIXED_ON_RESUME`); the checkpoint keeps the config it was trained with."""
        from metarl.config import to_dict
        from metarl.inputs import load_yaml

        text = state.get("config")
        if not isinstance(text, str):
            return  # a checkpoint written before checkpoints kept their config
        try:
            old = load_yaml(text)
        except (ValueError, yaml.YAMLError):
            raise checkpoint.CheckpointError(f"{self.checkpoints}: the config the checkpoint keeps does not "
                                             "parse") from None
        new = to_dict(cfg)
        for key in FIXED_ON_RESUME:
            was, now = _at(old, key), _at(new, key)
            if was is _MISSING or was == now:  # a key the checkpoint's config predates
                continue
            if isinstance(was, Mapping) and isinstance(now, Mapping):  # env.kwargs: name the entry
                sub = next(k for k in sorted({*was, *now}, key=str) if was.get(k, _MISSING) != now.get(k, _MISSING))
                key, was, now = f"{key}.{sub}", was.get(sub, "(unset)"), now.get(sub, "(unset)")
            raise ConfigError(f"{self.config_path}: {key} is {_short(now)} but the run was trained with "
                              f"{_short(was)}; a resumed run keeps its shapes and tasks (start a new run instead)")

    # -- modules ------------------------------------------------------------------

    def recorded_modules(self) -> list[dict[str, str]]:
        """The ``--module`` files the run needs: ``[{"path": absolute path, "copy": path in the run}]``."""
        path = self.path / MODULES_RECORD
        if not path.is_file():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return [{"path": str(m["path"]), "copy": str(m["copy"])} for m in data["modules"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise usermodules.ModuleImportError(f"{path}: not a record of modules "
                                                '({"modules": [{"path", "copy"}, ...]})') from None

    def record_modules(self, paths: list[str | Path]) -> None:
        """Record ``paths`` (files already imported) as modules the run needs, each copied into ``modules/``;
        already recorded ones are kept."""
        if not paths:
            return
        modules = self.recorded_modules()
        for p in paths:
            src = Path(p).resolve()
            copy = f"{MODULES_DIR}/{src.name}"
            atomic_write(self.path / copy, src.read_bytes())
            modules = [m for m in modules if m["copy"] != copy] + [{"path": str(src), "copy": copy}]
        atomic_write(self.path / MODULES_RECORD, json.dumps({"modules": modules}, indent=1) + "\n")

    def import_modules(self) -> None:
        """Import the run's recorded modules (each file where it was, else the run's copy of it); a missing
        or broken one raises :class:`metarl.usermodules.ModuleImportError` naming it."""
        for m in self.recorded_modules():
            src = m["path"] if os.path.isfile(m["path"]) else str(self.path / m["copy"])
            if not os.path.isfile(src):
                raise usermodules.ModuleImportError(f"{self.path}: its module {m['path']!r} is missing "
                                                    f"(and so is its copy {m['copy']})")
            usermodules.import_file(src, what=f"{self.path}: its module")

    # -- config and checkpoints ---------------------------------------------------

    def config(self, overrides: list[str] | None = None) -> Config:
        """The run's config (recorded modules imported first); :class:`metarl.config.ConfigError` if bad."""
        self.import_modules()
        return load_config(self.config_path, list(overrides or []))

    def raw_config(self) -> Any:
        """``config.yaml`` as plain YAML, for comparing runs whose config no longer loads (None if absent);
        a file that is not bounded YAML raises :class:`metarl.config.ConfigError`."""
        from metarl.config import read_yaml_file
        from metarl.inputs import check_tree

        if not self.is_run():
            return None
        data = read_yaml_file(self.config_path)  # bounded: size, aliases, depth (ConfigError)
        try:
            check_tree(data, str(self.config_path))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return data

    def check_checkpoint(self, learner: MetaLearner) -> None:
        """The latest checkpoint (if any) restores into ``learner``, a throwaway one built from the run's config
        (:class:`metarl.checkpoint.CheckpointError` if not): what a resume checks before it changes anything."""
        state = self.latest_state()
        if state is not None:
            restore(learner, state, self.checkpoints)

    def latest_state(self) -> dict[str, Any] | None:
        """The state of the run's latest checkpoint (``iteration``, ``meta``, ...), or None."""
        path = checkpoint.latest(self.checkpoints)
        return None if path is None else checkpoint.load(path)

    def done_iterations(self) -> int | None:
        """Iterations completed at the latest checkpoint (None: no checkpoint)."""
        state = self.latest_state()
        return None if state is None else int(state["iteration"])

    def latest_iteration(self) -> int:
        """The iteration ``latest`` points at, from the pointer alone (0 without one; for reports)."""
        return checkpoint.latest_iteration(self.checkpoints)

    def best_return(self) -> float:
        """The post-adaptation training return of the best-iteration checkpoint (-inf without one)."""
        path = self.checkpoints / checkpoint.BEST
        if not path.is_file():
            return -math.inf
        return float(checkpoint.load(path).get("best_return", -math.inf))

    def kept_iterations(self) -> list[int]:
        """The iterations of the checkpoints the run holds, ascending."""
        its = (checkpoint.iteration_of(p.name) for p in self.checkpoints.glob("iter_*.pt"))
        return sorted(i for i in its if i is not None)

    def kept_budgets(self) -> dict[int, Path]:
        """The ``eval/iter_NNNNNN/`` directories of a run extended past budgets it had finished (each holds
        the evaluations made at that iteration), by iteration, ascending."""
        dirs = ((checkpoint.iteration_of(d.name), d) for d in self.eval_dir.glob("iter_*") if d.is_dir())
        return dict(sorted((i, d) for i, d in dirs if i is not None))

    def state_at(self, iteration: int | str | None = None) -> dict[str, Any] | None:
        """The state of the checkpoint at ``iteration`` (None: the latest; ``"best"``: the best training
        iteration's, :data:`metarl.checkpoint.BEST`), or None when there is no checkpoint at all. A missing
        ``iteration`` raises FileNotFoundError naming the ones the run keeps."""
        if iteration is None:
            return self.latest_state()
        if iteration == "best":
            path = self.checkpoints / checkpoint.BEST
            if not path.is_file():
                raise FileNotFoundError(f"no best-iteration checkpoint ({checkpoint.BEST}) in {self.checkpoints}")
            return checkpoint.load(path)
        path = self.checkpoints / checkpoint.file_name(iteration)
        if not path.is_file():
            kept = ", ".join(map(str, self.kept_iterations())) or "none"
            raise FileNotFoundError(f"no checkpoint at iteration {iteration} in {self.checkpoints} "
                                    f"(it keeps: {kept})")
        return checkpoint.load(path)

    def load(self, iteration: int | str | None = None) -> LoadedRun:
        """Config, family, learner (at the latest checkpoint, or the one at ``iteration``, ``"best"``
        included) and its iteration."""
        cfg = self.config()
        family = build_family(cfg)
        learner = build_learner(cfg, family)
        state = self.state_at(iteration)
        if state is None:
            raise FileNotFoundError(f"no checkpoint in {self.checkpoints}")
        restore(learner, state, self.checkpoints)
        return LoadedRun(cfg, family, learner, int(state["iteration"]))

    # -- result files -------------------------------------------------------------

    def eval_path(self, name: str) -> Path:
        """``eval/<name>``, where the run's evaluations go."""
        return self.eval_dir / name

    def cached(self, name: str, **expected: Any) -> dict[str, Any] | None:
        """The evaluation ``eval/<name>`` if it is current: every ``expected`` field (``a__b`` for the
        nested ``a.b``) equals the given value, e.g. ``iteration=run.done_iterations()``; else None."""
        result = read_json(self.eval_path(name))
        if not isinstance(result, Mapping):
            return None
        for key, want in expected.items():
            got: Any = result
            for part in key.split("__"):
                got = got.get(part) if isinstance(got, Mapping) else None
            if got != want:
                return None
        return result

    def write_result(self, name: str, result: Any, indent: int | None = None) -> Path:
        """Write an evaluation to ``eval/<name>`` atomically."""
        return write_json(self.eval_path(name), result, indent)

    def archive_evaluations(self, done: int) -> Path | None:
        """Before a run that reached iteration ``done`` is extended: move its evaluations made at ``done``
        into ``eval/iter_NNNNNN/``, so the result at that budget stays beside the longer run's, and
        :meth:`prune_checkpoints` keeps the checkpoint they were made from. Returns that directory, or None
        when the run had no evaluation at ``done`` (an interrupted run)."""
        dest = self.eval_dir / Path(checkpoint.file_name(done)).stem
        for f in sorted(self.eval_dir.glob("*.json")):
            try:
                iteration = json.loads(f.read_text()).get("iteration")
            except (ValueError, AttributeError):  # not an evaluation of ours
                continue
            if iteration == done:
                dest.mkdir(exist_ok=True)
                f.replace(dest / f.name)
        return dest if dest.is_dir() else None

    def prune_checkpoints(self) -> None:
        """Delete every checkpoint but the one ``latest`` points to and those of the run's earlier budgets
        (an ``eval/iter_NNNNNN/`` directory for each, :meth:`archive_evaluations`)."""
        latest = checkpoint.latest(self.checkpoints)
        if latest is None:
            return
        keep = {latest.name} | {checkpoint.file_name(i) for i in self.kept_budgets()}
        for p in self.checkpoints.glob("iter_*.pt"):
            if p.name not in keep:
                p.unlink(missing_ok=True)

    # -- the manifest -------------------------------------------------------------

    def version_mismatch(self) -> str | None:
        """One line naming the packages whose versions differ from the run's newest session, or None."""
        return manifest.version_mismatch(self.path)


def load_run(run_dir: str | Path, iteration: int | str | None = None) -> LoadedRun:
    """:meth:`RunDir.load` of ``run_dir``."""
    return RunDir(run_dir).load(iteration)
