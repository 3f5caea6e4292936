"""The ``metarl`` command line.

    metarl train CONFIG [--set key=value ...] [--run-dir DIR] [--seed N] [--force]
    metarl train CONFIG --seeds 1 2 3      (or --seeds 3: seeds 1..3)
    metarl train --resume RUN_DIR
    metarl train CONFIG [--set key=value ...] --print-config
    metarl config CONFIG [--set key=value ...] [--keys]
    metarl evaluate RUN_DIR [--tasks N] [--steps K] [--episodes B] [--seed N] [--inner-lr LR] [--shots M ...]
                            [--iteration N]
    metarl evaluate RUN_DIR --protocol metaworld [--seed N] [--inner-lr LR]
    metarl analyze RUN_DIR [--tasks N] [--seed N] [--iteration N]
    metarl plot RUN_DIR [RUN_DIR ...] [--out FILE.png]
    metarl video RUN_DIR [--tasks N] [--steps K] [--out FILE.mp4|FILE.gif]
    metarl tasks
    metarl check-family NAME

Every command accepts ``--module PATH`` (repeatable) to import a Python file
that registers extra task families or outer loops (``metarl.algos.ALGOS``)
first.  ``train`` records the files in the run directory (``modules.json`` and
a copy under ``modules/``, :mod:`metarl.rundir`), so every later command on
that run imports them again without ``--module``.  The work of each command is
a library function (:mod:`metarl.rundir`, :mod:`metarl.commands`,
:mod:`metarl.plots`); this module parses arguments and prints.  Bad input
exits with status 2 and one line on stderr naming the bad value; nothing is
written in that case.  Ctrl-C exits 130 and SIGTERM 143
(training writes a checkpoint first; see :mod:`metarl.signals`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarl.rundir import LoadedRun, RunDir

EXIT_USAGE = 2
EXIT_DISK_FULL = 1  # as training stopped by a full disk (docs/reliability.md)

_WRITING: dict[str, Path] = {}  # "path": what the command is writing (named when a full disk stops it)


def _disk_full_path(e: OSError) -> str:
    """The file a full-disk error names, else what the command was writing."""
    return str(e.filename or _WRITING.get("path") or "the output")


@contextlib.contextmanager
def _undo_on_disk_full(out: Path, run_dir: Path | None = None, stems: tuple[str, ...] = ()) -> Iterator[None]:
    """Writes of an evaluation, a plot or a video to ``out`` (its companions beside it): when a full disk stops
    them, the files they had created go again (the new files beside ``out`` that share its stem or one of
    ``stems``, or every new
    one in a directory the command created or in the run's ``eval/``; TensorBoard event files this process
    added to ``run_dir``; directories left empty that the command created), so no empty ``eval/`` or
    half-written set of outputs stays behind.  Files that existed before are not touched (an atomic write
    either replaced one whole or left it)."""
    parent = out.parent
    top = None  # the highest directory this command creates
    for d in (parent, *parent.parents):
        if d.exists():
            break
        top = d
    before = set(os.listdir(parent)) if top is None else set()
    owned = top is not None or (run_dir is not None and parent == Path(run_dir) / "eval")
    runs_before = set(os.listdir(run_dir)) if run_dir is not None else set()
    touched = {d: os.stat(d) for d in (parent if top is None else top.parent, run_dir) if d is not None}
    _WRITING["path"] = out
    try:
        yield
    except Exception as e:
        from metarl.fileio import disk_full

        if disk_full(e) is None:
            raise
        mine = f".{os.getpid()}."
        removable = []
        if parent.is_dir():
            removable += [parent / n for n in set(os.listdir(parent)) - before
                          if owned or n.lstrip(".").startswith((out.stem, *stems))]
        if run_dir is not None:
            removable += [Path(run_dir) / n for n in set(os.listdir(run_dir)) - runs_before
                          if n.startswith("events.out.tfevents.") and mine in n]
        for p in removable:
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    if owned:
                        shutil.rmtree(p)
                else:
                    p.unlink()
        if top is not None:
            for d in (parent, *parent.parents):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty
                if d == top:
                    break
        for d, st in touched.items():  # the directories' times as they were: nothing in them has changed
            with contextlib.suppress(OSError):
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
        raise


class UsageError(Exception):
    """Bad input from the command line: exit 2 with this one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        raise UsageError(message)


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else a one-line error naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonneg_int = _int_at_least(0, "non-negative")


def _seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**64)."""
    value = _nonneg_int(text)
    if value >= 2**64:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**64, got {text[:40]!r}")
    return value


def _checkpoint_choice(text: str) -> int | str:
    """An argparse type: ``best`` (the best training iteration's checkpoint) or an iteration N >= 0."""
    return "best" if text == "best" else _nonneg_int(text)


def _checked(text: str, convert: Any, ok: Any, expected: str) -> Any:
    """``convert(text)`` if it parses and satisfies ``ok``, else an argparse error naming the value."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _bounded_float(top: float, unit: str = ""):
    """An argparse type: a finite float > 0 and at most ``top`` (inf, nan and 1e308 are refused by name)."""
    import math

    def parse(text: str) -> float:
        return _checked(text, float, lambda v: math.isfinite(v) and 0 < v <= top,
                        f"a finite number > 0 and <= {top:g}{unit}")

    return parse


MAX_CHECK_SECONDS = 86_400.0  # check-family --check-timeout: one day


def _inner_lr(text: str) -> float:
    """``--inner-lr``: as ``algo.inner_lr``, in (0, MAX_INNER_LR]."""
    from metarl.config import MAX_INNER_LR

    return _bounded_float(MAX_INNER_LR)(text)


def _even_size(text: str) -> int:
    """An argparse type: an even frame size in [16, 4096] pixels."""
    return _checked(text, int, lambda v: 16 <= v <= 4096 and v % 2 == 0, "an even number of pixels in [16, 4096]")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--module", action="append", default=argparse.SUPPRESS, metavar="PATH",
                        help="import this Python file first, e.g. one that registers a task family or an "
                             "outer loop (repeatable)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning: MAML, ANIL and CAVIA under "
                     "TRPO, ProMP, PPO or evolution-strategies outer loops, learned inner-update rules, and RL².",
                     parents=[common],
                     epilog="environment: METARL_MALLOC_TUNING=0 keeps glibc's malloc defaults instead of the "
                            "thresholds that keep freed tensor buffers mapped (README, 'The memory allocator')")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common], description=help_text)

    p = add("train", "meta-train from a YAML config (or resume a run)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. experiments/configs/navigation2d.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted (repeatable): --set algo.inner_lr=0.05")
    p.add_argument("--run-dir", help="run directory (default: runs/<family>__<name>__<seed>__<time>)")
    p.add_argument("--seed", type=_seed, help="override the config's seed")
    p.add_argument("--seeds", type=_seed, nargs="+", metavar="S",
                   help="train these seeds one after another (one number N: seeds 1..N); finished seeds are "
                        "skipped, interrupted ones resumed; run directories <log.root>/<family>__<name>__seed<S> "
                        "(or --run-dir DIR/seed<S>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint")
    p.add_argument("--iterations", type=_nonneg_int, help="with --resume: extend the run to this many iterations")
    p.add_argument("--force", action="store_true",
                   help="start over in an existing non-empty --run-dir (removes the files metarl wrote there)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one plain line per iteration (returns before and after adaptation, "
                        "seconds per iteration, ETA), as when stdout is not a terminal")
    p.add_argument("--log-every", type=_positive_int, default=1, metavar="N",
                   help="with --no-progress or when stdout is not a terminal: a line every N iterations (and the "
                        "last; default 1)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective config with comments (as metarl config) and exit; writes nothing")

    p = add("config", "print the effective config of a YAML file and --set overrides, each key with its comment")
    p.add_argument("config", nargs="?", help="YAML config (default: the built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted (repeatable), as metarl train takes it")
    p.add_argument("--keys", action="store_true",
                   help="list the dotted keys instead, one KEY=VALUE a line (each one a valid --set)")

    p = add("evaluate", "test-time adaptation curve on held-out tasks")
    p.add_argument("run_dir", help="a run directory written by metarl train")
    p.add_argument("--tasks", type=_positive_int,
                   help="held-out tasks (default 40); with a protocol, N of the family's test tasks evenly spaced "
                        "through its list (default: every one)")
    p.add_argument("--steps", type=_nonneg_int,
                   help="inner steps 0..K (default 3; 0 = NIL); for an RL² run, episodes 1..N of one trial, the "
                        "hidden state carried across all N (default: its rl2.episodes_per_trial)")
    p.add_argument("--episodes", type=_positive_int,
                   help="episodes per task per step (default: the run's); for an RL² run, trials per task")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the held-out tasks and rollouts")
    p.add_argument("--out", help="output JSON (default RUN_DIR/eval/adaptation.json, adaptation_best.json with "
                                 "--iteration best, or shots.json with --shots)")
    p.add_argument("--inner-lr", type=_inner_lr, help="test-time inner step size (default: the trained one)")
    p.add_argument("--iteration", type=_checkpoint_choice, metavar="N|best",
                   help="the checkpoint at iteration N instead of the latest (one the run keeps), or best: the "
                        "training iteration with the highest post-adaptation return (the MAML paper's protocol)")
    p.add_argument("--shots", type=_positive_int, nargs="+", metavar="M",
                   help="k-shot curve instead: the return after one step vs M adaptation episodes per task, "
                        "e.g. --shots 1 2 5 10 20")
    p.add_argument("--protocol", metavar="NAME",
                   help="a registered evaluation (metarl.evaluations.EVALUATIONS): adaptation, the curve over "
                        "--steps on sampled tasks; metaworld, Meta-World's protocol over every test task (10 "
                        "adaptation episodes, one step, 3 evaluation episodes; success rate); shots; analysis; "
                        "transfer, a learned rule on another task distribution of the family against the plain "
                        "step; trials, RL²'s return over the episodes of a trial; or one a --module file registers. "
                        "Default: the family's own (metaworld for the Meta-World families), else adaptation "
                        "(trials for RL²)")

    p = add("analyze", "per-layer representation change (CKA/CCA) and the layer-freezing ablation")
    p.add_argument("run_dir", help="a run directory written by metarl train")
    p.add_argument("--tasks", type=_positive_int, default=20, help="held-out tasks (default 20)")
    p.add_argument("--episodes", type=_positive_int, help="episodes per task (default: the run's)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the held-out tasks and rollouts")
    p.add_argument("--max-states", type=_positive_int, default=2000, help="states per task for CKA/CCA")
    p.add_argument("--iteration", type=_checkpoint_choice, metavar="N|best",
                   help="the checkpoint at iteration N instead of the latest (one the run keeps), or best: the "
                        "training iteration with the highest post-adaptation return (the MAML paper's protocol)")
    p.add_argument("--out-dir", help="output directory (default RUN_DIR/eval)")

    p = add("plot", "learning and adaptation curves of one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (seeds of one config are banded)")
    p.add_argument("--out", help="output PNG file (default: FIRST_RUN_DIR/eval/plot.png)")
    p.add_argument("--labels", nargs="+", help="one legend label per run directory")

    p = add("video", "render held-out tasks before adaptation and after 1..K inner steps, or an RL² run's "
                     "episodes 1..N of a trial (MP4 or GIF)")
    p.add_argument("run_dir", help="a run directory written by metarl train")
    p.add_argument("--tasks", type=_positive_int, default=2, help="held-out tasks, one after another (default 2)")
    p.add_argument("--steps", type=_nonneg_int, help="panels for 0..K inner steps, side by side (default 1); for "
                   "RL², episodes 1..N of one trial (default: the run's rl2.episodes_per_trial)")
    p.add_argument("--episodes", type=_positive_int, help="adaptation episodes per task per step (default: the run's)")
    p.add_argument("--width", type=_even_size, default=320, help="panel width in pixels (even, default 320)")
    p.add_argument("--height", type=_even_size, default=240, help="panel height in pixels (even, default 240)")
    p.add_argument("--fps", type=_positive_int, help="frames per second (default: the env's 1/dt)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the held-out tasks (as metarl evaluate)")
    p.add_argument("--out", help="output .mp4 or .gif (default RUN_DIR/eval/video.mp4, .gif without imageio-ffmpeg)")

    add("tasks", "list registered task families")

    p = add("check-family", "run the task-family checks on a registered family")
    p.add_argument("name", help="family name (see metarl tasks)")
    p.add_argument("--check-timeout", type=_bounded_float(MAX_CHECK_SECONDS, " s"), default=120.0, metavar="S",
                   help="seconds each check may take before it counts as failed (default 120: a step that hangs)")
    return parser


# what mujoco accepts in MUJOCO_GL (mujoco/gl_context.py; anything else raises when mujoco is imported)
MUJOCO_GL_VALUES = {"linux": ("egl", "osmesa", "glx", "glfw"), "darwin": ("cgl", "glfw"), "win32": ("wgl", "glfw")}
MUJOCO_GL_SWITCHES = ("", "enable", "enabled", "on", "true", "1", "disable", "disabled", "off", "false", "0")


def _check_mujoco_gl() -> None:
    """A ``MUJOCO_GL`` that mujoco would refuse at import is a usage error naming it, before any import."""
    value = os.environ.get("MUJOCO_GL", "").lower().strip()
    valid = MUJOCO_GL_VALUES.get(sys.platform, ("glfw",))
    if value not in (*valid, *MUJOCO_GL_SWITCHES):
        raise UsageError(f"MUJOCO_GL={os.environ['MUJOCO_GL'][:40]!r} is not one of {', '.join(valid)} "
                         "(egl for headless rendering)")


def _import_modules(paths: list[str]) -> None:
    """Import user files (:func:`metarl.usermodules.import_file`)."""
    from metarl.usermodules import ModuleImportError, import_file

    for path in paths:
        try:
            import_file(path)
        except ModuleImportError as e:
            raise UsageError(str(e)) from None


# -- commands -----------------------------------------------------------------------

def _check_family(cfg: Any, fresh: bool = False) -> Any:
    """Build the configured family once (its constructor sees ``env.kwargs``) and the learner on it (an outer
    loop or rule may refuse the policy's size, e.g. es.method: cma on too many numbers) before anything is
    written; returns that (throwaway) learner. ``fresh``: built as a new run starts (``es.init_from`` read);
    a run that restores its checkpoint does not read it."""
    from metarl.run import build_family, build_learner, learner_device
    from metarl.usermodules import describe

    try:
        learner_device(cfg)  # device: cuda on a machine without CUDA
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        family = build_family(cfg)
    except (ValueError, TypeError, KeyError) as e:
        msg = describe(e) or type(e).__name__
        raise UsageError(f"env.kwargs: {cfg.env.family} refuses {cfg.env.kwargs}: {msg}") from None
    except Exception as e:  # noqa: BLE001 - a family's constructor (a user's, perhaps) that fails otherwise
        raise UsageError(f"env.family: {cfg.env.family} could not be built: {type(e).__name__}: "
                         f"{describe(e)}") from None
    _check_policy_weights(cfg, family)
    _check_ray(cfg)
    try:
        return build_learner(cfg, family, fresh=fresh)
    except ValueError as e:
        raise UsageError(describe(e, 300) or type(e).__name__) from None


def _check_ray(cfg: Any) -> None:
    """A configured Ray cluster (``sampler.ray_address`` HOST:PORT) must accept a connection before anything is
    written: an unreachable one is :class:`metarl.sampling.ray_backend.RayUnreachableError`, one line and exit 1,
    within ``CONNECT_TIMEOUT_S`` seconds, and no run directory."""
    if cfg.sampler.backend != "ray" or not cfg.sampler.ray_address:
        return
    from metarl.sampling.ray_backend import check_reachable

    check_reachable(cfg.sampler.ray_address.removeprefix("ray://"))


def _check_policy_weights(cfg: Any, family: Any) -> None:
    """The policy's weights, input and output layers included, at most ``MAX_WEIGHTS`` (the config's own bound
    counts those between hidden layers only: the observation size is the family's)."""
    from metarl.config import MAX_WEIGHTS

    p = cfg.policy
    inputs = family.obs_dim + (p.context_size if p.adapt == "context" else 0)
    sizes = [inputs, *p.hidden_sizes, family.act_dim]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    if weights > MAX_WEIGHTS:
        raise UsageError(f"policy.hidden_sizes: {p.hidden_sizes} between {family.name}'s {inputs} inputs and "
                         f"{family.act_dim} actions make {weights} weights; they must be <= {MAX_WEIGHTS}")


def _check_config(cfg: Any, training: bool = True, fresh: bool = False) -> Any:
    """The validation every command runs on a config before it writes anything, whether the config came from
    a file (``train CONFIG``, each ``--seeds`` seed) or from a run directory (``--resume``, ``evaluate``,
    ``analyze``, ``video``): for ``training``, the W&B mirror's settings; then the family and the learner
    built (:func:`_check_family`); returns the learner."""
    from metarl import wandb_mirror
    from metarl.config import ConfigError

    try:
        if training:
            wandb_mirror.check(cfg)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return _check_family(cfg, fresh)


def _check_resumable(rd: RunDir, iterations: int | None) -> Any:
    """Everything a resume of ``rd`` reads, checked before anything changes (:meth:`RunDir.check_files`, the
    config, :func:`_check_config`, an edit of a key the run cannot change, the checkpoint against the learner);
    returns the config it continues with."""
    from metarl.config import ConfigError
    from metarl.rundir import RunDirError

    try:
        rd.check_files()
        cfg = rd.resume_config(iterations)
    except (ConfigError, RunDirError) as e:
        raise UsageError(str(e)) from None
    rd.check_checkpoint(_check_config(cfg))
    return cfg


def _lock(rd: RunDir) -> None:
    """Take ``rd``'s lock (:meth:`RunDir.lock`): another process training in it is a usage error."""
    from metarl.rundir import RunDirError

    try:
        rd.lock()
    except RunDirError as e:
        raise UsageError(str(e)) from None


def cmd_train(args: argparse.Namespace) -> int:
    from metarl import wandb_mirror
    from metarl.config import ConfigError, load_config
    from metarl.rundir import RunDir, RunDirError

    modules = getattr(args, "module", [])
    if args.resume:
        if args.config or args.overrides or args.seed is not None or args.run_dir:
            raise UsageError("--resume takes only a run directory (plus --iterations)")
        rd = RunDir(args.resume)
        if not rd.is_run():
            raise UsageError(f"--resume: {str(rd)!r} is not a run directory (no config.yaml)")
        cfg = _check_resumable(rd, args.iterations)  # the device too (a run that asked for cuda, here without)
        try:
            wandb_mirror.check(cfg)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        if args.print_config:
            return _print_config(cfg)
        _lock(rd)
        _WRITING["path"] = rd.path
        try:
            rd.record_modules(modules)
            return _run_training(cfg, rd.path, resume=True, progress=_progress(args))
        finally:
            rd.unlock()

    if not args.config:
        raise UsageError("train needs a CONFIG file (or --resume RUN_DIR)")
    if args.iterations is not None:
        raise UsageError("--iterations goes with --resume; use --set iterations=N")
    if args.seeds is not None:
        if args.print_config:
            raise UsageError("--print-config prints one config; drop --seeds (or use --seed N)")
        return _train_seeds(args)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    notes: list[str] = []
    try:
        cfg = load_config(args.config, overrides, notes)
        wandb_mirror.check(cfg)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    for note in notes:  # old key spellings, migrated
        print(f"metarl: note: {note}", file=sys.stderr)
    if args.print_config:
        return _print_config(cfg)
    _check_family(cfg, fresh=True)
    from metarl.rundir import first_missing

    # the highest directory this start creates: --run-dir or a parent of it; by default log.root or a parent of
    # it, else the new run directory itself (None: --run-dir exists)
    created = first_missing(Path(args.run_dir) if args.run_dir is not None else Path(cfg.log.root))
    try:
        rd = RunDir.create(cfg, args.run_dir, args.force)  # locked (RunDir.lock)
    except RunDirError as e:
        raise UsageError(str(e)) from None
    _WRITING["path"] = rd.path
    try:
        try:
            rd.write_config(cfg)  # first: a run interrupted from here on can be resumed
            rd.record_modules(modules)
        except OSError:  # a full disk: no run directory (or no files in a given one) is left without a config
            rd.remove_new(up_to=created if created is not None or args.run_dir is not None else rd.path)
            raise
        _RESUMABLE["run_dir"] = rd.path
        return _run_training(cfg, rd.path, resume=False, progress=_progress(args))
    finally:
        rd.unlock()


def _train_seeds(args: argparse.Namespace) -> int:
    """``--seeds``: each seed in its own stable run directory; skip finished, resume interrupted."""
    from metarl import wandb_mirror
    from metarl.commands import seed_list, seed_runs
    from metarl.config import ConfigError
    from metarl.rundir import RunDirError

    if args.seed is not None:
        raise UsageError("--seeds and --seed exclude each other")
    if args.force:
        raise UsageError("--seeds resumes its own run directories; --force does not apply")
    try:
        jobs = seed_runs(args.config, args.overrides, seed_list(args.seeds), args.run_dir)
        for _, cfg, rd in jobs:
            wandb_mirror.check(cfg)
            rd.check_files(creatable=True)
    except (ConfigError, RunDirError) as e:
        raise UsageError(str(e)) from None
    for _, cfg, rd in jobs:  # every seed checked as train CONFIG and --resume check, before any seed starts
        done = rd.done_iterations()
        _check_config(cfg, fresh=done is None)
        if done is not None and done < cfg.iterations:  # it resumes with its own config
            _check_resumable(rd, cfg.iterations)
    for seed, cfg, rd in jobs:
        try:
            plan = rd.prepare_training(cfg)  # locks the seed's directory unless it is finished
        except RunDirError as e:
            raise UsageError(str(e)) from None
        if plan.action == "finished":
            print(f"seed {seed}: finished ({plan.done} iterations) in {rd}", file=sys.stderr)
            continue
        _WRITING["path"] = rd.path
        try:
            rd.record_modules(getattr(args, "module", []))
            print(f"seed {seed}: {'resuming at iteration ' + str(plan.done) if plan.resume else 'starting'} in "
                  f"{rd}", file=sys.stderr)
            rc = _run_training(plan.cfg, rd.path, resume=plan.resume, progress=_progress(args))
        finally:
            rd.unlock()
        if rc != 0:
            return rc
    return 0


def _print_config(cfg: Any) -> int:
    """``--print-config`` and ``metarl config``: the effective config, each key with its docstring."""
    from metarl.configdoc import commented_yaml

    sys.stdout.write(commented_yaml(cfg))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from metarl.config import ConfigError, load_config
    from metarl.configdoc import dotted_keys, key_value

    notes: list[str] = []
    try:
        cfg = load_config(args.config, args.overrides, notes)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    for note in notes:
        print(f"metarl: note: {note}", file=sys.stderr)
    if args.keys:
        for key, value in dotted_keys(cfg):
            print(key_value(key, value))
        return 0
    return _print_config(cfg)


def _progress(args: argparse.Namespace) -> int:
    """0: a tqdm bar (a terminal, no --no-progress); N > 0: a plain line every N iterations."""
    return args.log_every if args.no_progress or not sys.stdout.isatty() else 0


def _duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` when not finite)."""
    import math

    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(iteration: int, total: int, scalars: dict[str, float], seconds_per_it: float) -> str:
    """One plain progress line: iteration ``iteration`` (0-based) of ``total``, its returns before and after
    adaptation, the mean seconds per iteration and the time left at that pace."""
    pre, post = scalars["returns/pre_adapt"], scalars["returns/post_adapt"]
    eta = seconds_per_it * (total - iteration - 1)
    return (f"iteration {iteration + 1}/{total}: pre-adapt return {pre:.2f}, post-adapt {post:.2f} "
            f"(gain {post - pre:+.2f}), {seconds_per_it:.2f} s/it, ETA {_duration(eta)}")


def _run_training(cfg: Any, run_dir: Path, resume: bool, progress: int) -> int:
    from metarl.signals import exit_code

    _RESUMABLE["run_dir"] = run_dir
    try:
        from tqdm import tqdm

        from metarl.trainer import Trainer, TrainingError

        trainer = Trainer(cfg, run_dir, resume=resume)
    except KeyboardInterrupt as e:  # during imports or start-up: config.yaml is written, the run resumes from 0
        print(f"interrupted; resume with: metarl train --resume {run_dir}", file=sys.stderr)
        return exit_code(e)
    print(f"run directory: {run_dir}", file=sys.stderr)
    bar = tqdm(total=cfg.iterations, initial=trainer.start_iteration, unit="it", disable=progress > 0,
               dynamic_ncols=True, desc=cfg.env.family)
    times: list[float] = []

    def on_iteration(res: Any) -> None:
        s = res.scalars
        if progress > 0:  # plain lines: a pipe, a log file, --no-progress
            times.append(s["time/iteration_s"])
            if (res.iteration + 1) % progress == 0 or res.iteration + 1 == cfg.iterations:
                print(progress_line(res.iteration, cfg.iterations, s, sum(times) / len(times)), flush=True)
            return
        bar.set_postfix(pre=f"{s['returns/pre_adapt']:.1f}", post=f"{s['returns/post_adapt']:.1f}",
                        s_it=f"{s['time/iteration_s']:.2f}", refresh=False)
        bar.update(1)

    try:
        results = trainer.train(on_iteration)  # from its start an interrupt checkpoints and stops the workers
    except KeyboardInterrupt as e:
        bar.close()
        print(f"interrupted; resume with: metarl train --resume {run_dir}", file=sys.stderr)
        return exit_code(e)
    except TrainingError as e:
        bar.close()
        print(f"metarl: training stopped: {e}", file=sys.stderr)
        return 1
    bar.close()
    if results:
        last = results[-1].scalars
        print(f"done: {len(results)} iterations; last pre-adapt return {last['returns/pre_adapt']:.2f}, "
              f"post-adapt {last['returns/post_adapt']:.2f}; logs: tensorboard --logdir {run_dir.parent}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metarl import commands

    rd, loaded = _check_run(args.run_dir, args.iteration)
    _warn_versions(rd)
    # --shots, else --protocol NAME, else the family's own protocol (Meta-World's) or the adaptation curve
    name = "shots" if args.shots else commands.evaluation_protocol(loaded.cfg.env.family, args.protocol)
    if args.protocol is None and not args.shots and not getattr(loaded.learner, "adapts", True):
        name = "trials"  # RL²: its curve is over the episodes of a trial
    return _evaluate(rd, loaded, name, args, {"tasks": args.tasks, "steps": args.steps, "episodes": args.episodes,
                                              "seed": args.seed, "inner_lr": args.inner_lr, "shots": args.shots},
                     args.out)


def cmd_analyze(args: argparse.Namespace) -> int:
    rd, loaded = _check_run(args.run_dir, args.iteration)
    out = Path(args.out_dir) / "analysis.json" if args.out_dir else None
    return _evaluate(rd, loaded, "analysis", args, {"tasks": args.tasks, "episodes": args.episodes,
                                                    "seed": args.seed, "max_states": args.max_states},
                     out, warn=True)


def _evaluate(rd: RunDir, loaded: LoadedRun, name: str, args: argparse.Namespace, given: dict[str, Any],
              out: Any, warn: bool = False) -> int:
    """Run the registered evaluation ``name`` (:data:`metarl.evaluations.EVALUATIONS`) and print its table."""
    from metarl.evaluations import EVALUATIONS, EvaluationError, settings_for

    try:
        settings = settings_for(name, given)
    except EvaluationError as e:
        raise UsageError(str(e)) from None
    best = getattr(args, "iteration", None) == "best"
    evaluation = EVALUATIONS[name]
    refused = evaluation.refuses(loaded)
    if refused:
        raise UsageError(refused)
    _check_protocol_tasks(evaluation, loaded, name, settings)
    from metarl.evaluations import TrialCurve, trial_length

    steps = getattr(settings, "steps", 1)
    trial = trial_length(loaded, steps) if isinstance(evaluation, TrialCurve) else 1  # RL²: episodes per trial
    _check_eval_size(loaded, getattr(settings, "tasks", None), getattr(settings, "episodes", None),
                     trial if steps is None else steps, getattr(settings, "shots", None), trial)
    out = Path(out) if out else rd.eval_path(evaluation.file_name(settings, best))
    _check_writable(out)
    if warn:
        _warn_versions(rd)
    with _undo_on_disk_full(out, rd.path, ("similarity", "freeze_ablation") if name == "analysis" else ()):
        done = evaluation.run(rd, loaded, settings, out, lambda line: print(line, file=sys.stderr), best=best)
    for line in done.lines:
        print(line)
    print("wrote " + ", ".join(str(f) for f in done.files.values()), file=sys.stderr)
    return 0


MAX_VIDEO_BYTES = 2 << 30  # raw frames a video holds in memory before it is encoded


def _check_eval_size(loaded: LoadedRun, tasks: int | None, episodes: int | None, steps: int,
                     shots: list[int] | None = None, trial: int = 1) -> None:
    """Bounds on what an evaluation of ``loaded`` would allocate, before it starts: ``--steps`` at most
    ``MAX_INNER_STEPS``, and one batch (tasks x episodes, the largest shot, x the horizon) at most
    ``MAX_BATCH_STEPS`` env steps, as for training (:mod:`metarl.config`)."""
    from metarl.config import MAX_BATCH_STEPS, MAX_INNER_STEPS

    if steps > MAX_INNER_STEPS:
        raise UsageError(f"--steps {steps}: must be <= {MAX_INNER_STEPS}")
    n = tasks or 1
    per_task = max(shots) if shots else episodes or loaded.cfg.algo.episodes_per_task
    batch = n * per_task * loaded.family.horizon * trial  # trial: episodes per RL² trial
    if batch > MAX_BATCH_STEPS:
        flag = "--shots" if shots else "--episodes"
        per_trial = f" times {trial} episodes per trial (--steps)" if trial > 1 else ""
        raise UsageError(f"--tasks {n} times {flag} {per_task} times the horizon {loaded.family.horizon}{per_trial} "
                         f"is {batch} steps per batch; it must be <= {MAX_BATCH_STEPS}")


def _check_protocol_tasks(evaluation: Any, loaded: LoadedRun, name: str, settings: Any) -> None:
    """A fixed protocol needs the family's own test tasks (and ``--tasks`` at most as many): refused before
    anything in the run directory is touched."""
    from metarl.commands import CommandError, test_task_subset
    from metarl.evaluations import FixedProtocol

    if not isinstance(evaluation, FixedProtocol):
        return
    tasks = loaded.family.test_tasks()
    if tasks is None:
        raise UsageError(f"--protocol {name}: family {loaded.family.name} has no test tasks of its own")
    try:
        test_task_subset(tasks, getattr(settings, "tasks", None), loaded.family.name)
    except CommandError as e:
        raise UsageError(str(e)) from None


def cmd_video(args: argparse.Namespace) -> int:
    from metarl.video import VideoError, default_suffix, render_run

    rd, loaded = _check_run(args.run_dir)
    trial = not getattr(loaded.learner, "adapts", True)  # RL²: panels are the episodes of one trial
    if trial and args.steps == 0:
        raise UsageError("--steps 0: an RL² run's video shows episodes 1..N of a trial; N must be >= 1")
    steps = args.steps if args.steps is not None else (int(loaded.learner.rl2.episodes_per_trial) if trial else 1)
    _check_eval_size(loaded, args.tasks, args.episodes, steps)
    panels = steps if trial else steps + 1
    frames = args.tasks * loaded.family.horizon * panels * args.width * args.height * 3
    if frames > MAX_VIDEO_BYTES:
        raise UsageError(f"--tasks {args.tasks}, --steps {steps}, --width {args.width} and --height "
                         f"{args.height} over a horizon of {loaded.family.horizon} make {frames} bytes of frames; "
                         f"they must be <= {MAX_VIDEO_BYTES}")
    out = Path(args.out) if args.out else rd.eval_path(f"video{default_suffix()}")
    if out.suffix not in (".mp4", ".gif"):
        raise UsageError(f"{str(out)!r}: the video must be a .mp4 or .gif file")
    _check_writable(out)
    _warn_versions(rd)
    shown = f"episodes 1..{steps} of a trial" if trial else f"steps 0..{steps}"
    print(f"rendering {rd}: {args.tasks} held-out tasks, {shown}", file=sys.stderr)
    try:
        with _undo_on_disk_full(out, rd.path):
            info = render_run(rd.path, out, args.tasks, steps, args.width, args.height, args.fps, args.seed,
                              args.episodes, on_task=lambda i, r: print(
                                  f"  task {i}: returns " + " / ".join(f"{x:.1f}" for x in r), file=sys.stderr),
                              loaded=loaded)
    except (VideoError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {info['out']} ({info['frames']} frames, {info['size'][0]}x{info['size'][1]}, {info['fps']} fps)",
          file=sys.stderr)
    return 0


def _check_run(run_dir: str, iteration: int | str | None = None) -> tuple[RunDir, LoadedRun]:
    """A run directory with a config and a checkpoint (the latest, or the one at ``iteration``) that loads
    into its learner (its recorded modules imported first): the run and the loaded run, for the command to
    use (it is not loaded twice)."""
    from metarl.config import ConfigError
    from metarl.rundir import RunDir, RunDirError

    rd = RunDir(run_dir)
    if not rd.is_run():
        raise UsageError(f"{str(rd)!r} is not a run directory (no config.yaml)")
    try:
        rd.check_files()
        _check_config(rd.config(), training=False)  # the checks train CONFIG makes, on the run's own config
        return rd, rd.load(iteration)
    except RunDirError as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(str(e) if str(e).startswith(str(rd.config_path)) else f"{rd.config_path}: {e}") from None
    except FileNotFoundError as e:
        raise UsageError(str(e) if iteration is not None else f"no checkpoint in {rd.checkpoints}") from None


def _warn_versions(rd: RunDir) -> None:
    msg = rd.version_mismatch()
    if msg:
        print(f"metarl: warning: {msg}", file=sys.stderr)


def _check_writable(out: Path) -> None:
    """One-line error before any work when ``out`` cannot be created, or exists and is not a regular file."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(out)!r}: {str(parent)!r} is not a directory")
    from metarl.fileio import NotRegularFileError, check_replaceable

    try:  # a FIFO, a device (/dev/null), a directory: never replaced
        check_replaceable(out)
    except NotRegularFileError as e:
        raise UsageError(f"cannot write {str(out)!r}: {e.strerror}") from None
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"cannot write {str(out)!r}: permission denied")
    from metarl.fileio import DISK_FULL
    from metarl.rundir import probe_writable

    try:  # permissions are not the whole story (read-only or special file systems, root)
        probe_writable(parent)
    except OSError as e:
        if e.errno in DISK_FULL:  # a full disk is not bad input: exit 1, naming what was to be written
            _WRITING["path"] = out
            raise
        raise UsageError(f"cannot write {str(out)!r}: {e.strerror or e}") from None


def cmd_plot(args: argparse.Namespace) -> int:
    from metarl.plots import plot_runs

    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise UsageError(f"no such run directory {d!r}")
    if args.labels and len(args.labels) != len(args.run_dirs):
        raise UsageError(f"--labels needs one label per run directory ({len(args.run_dirs)}), got {len(args.labels)}")
    if args.out is None:  # beside the first run's other evaluation files
        from metarl.rundir import RunDir

        out = RunDir(args.run_dirs[0]).eval_path("plot.png")
    else:
        out = Path(args.out)
    if not str(out).lower().endswith(".png"):
        raise UsageError(f"--out must name a .png file, got {args.out!r}")
    _check_writable(out)
    try:
        with _undo_on_disk_full(out):
            out = plot_runs([Path(d) for d in args.run_dirs], out, args.labels)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {out}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    import envs

    rows = envs.describe_families()
    width = max(len(n) for n, _, _ in rows)
    print(f"{'family':<{width}}  horizon  task distribution / reward")
    for name, horizon, desc in rows:
        print(f"{name:<{width}}  {horizon:>7}  {desc}")
    return 0


def cmd_check_family(args: argparse.Namespace) -> int:
    import envs

    if args.name not in envs.family_names():
        raise UsageError(envs.unknown_family_message(args.name))
    import signal

    from metarl.usermodules import describe

    verbose = getattr(args, "verbose", False)  # -v: list each check as it passes
    limit = args.check_timeout

    def on_alarm(signum: int, frame: Any) -> None:
        raise _CheckTimeout(f"a check did not finish within {limit:g} s (a step or reset that hangs?)")

    def passed(what: str) -> None:
        signal.setitimer(signal.ITIMER_REAL, limit)  # each check gets its own time
        if verbose:
            print(f"  ok: {what}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        envs.check_family(args.name, passed=passed)
    except Exception as e:  # noqa: BLE001 - a family's constructor, reset or step (a user's, perhaps) may raise anything
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:  # the checks' own messages as they are; anything else, its type and first line
            what = str(e) if isinstance(e, AssertionError | ValueError | _CheckTimeout) else (
                f"{type(e).__name__}: {describe(e)}")
        except Exception:  # noqa: BLE001 - an exception whose __str__ raises
            what = describe(e)
        print(f"check-family {args.name}: FAILED: {what}", file=sys.stderr)
        return 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    print(f"check-family {args.name}: ok")
    return 0


class _CheckTimeout(Exception):
    """A family check that ran past ``check-family --check-timeout``."""


COMMANDS = {"train": cmd_train, "config": cmd_config, "evaluate": cmd_evaluate, "analyze": cmd_analyze,
            "plot": cmd_plot, "tasks": cmd_tasks, "check-family": cmd_check_family, "video": cmd_video}


_RESUMABLE: dict[str, Path] = {}  # "run_dir": a run whose config.yaml is on disk (for the interrupt message)


def _interrupted_message() -> str:
    run_dir = _RESUMABLE.get("run_dir")
    return f"interrupted; resume with: metarl train --resume {run_dir}" if run_dir else "metarl: interrupted"


def main(argv: list[str] | None = None) -> int:
    from metarl import allocator, fileio, signals

    allocator.tune_allocator()
    fileio.quiet_writer_threads()  # a full disk in TensorBoard's writer thread: one line, no thread traceback
    _WRITING.clear()

    _RESUMABLE.clear()
    try:
        with signals.handled(signals.exit_at_once(_interrupted_message)):
            return _main(argv)
    except KeyboardInterrupt as e:  # an interrupt raised outside a command's own handling
        print(_interrupted_message(), file=sys.stderr)
        return signals.exit_code(e)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        if args.command == "video":  # before anything imports mujoco: headless rendering needs EGL
            os.environ.setdefault("MUJOCO_GL", "egl")
        _check_mujoco_gl()
        _import_modules(getattr(args, "module", []))
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:  # a run's recorded module that fails to import, a command's bad input
        usermodules, commands = sys.modules.get("metarl.usermodules"), sys.modules.get("metarl.commands")
        checkpoint = sys.modules.get("metarl.checkpoint")  # a bad checkpoint or latest pointer
        known = tuple(getattr(m, n) for m, n in ((usermodules, "ModuleImportError"), (commands, "CommandError"),
                                                  (checkpoint, "CheckpointError")) if m is not None)
        if not isinstance(e, known):
            raise
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as e:  # an unreachable sampler.ray_address (metarl.sampling.ray_backend)
        ray_backend = sys.modules.get("metarl.sampling.ray_backend")
        if ray_backend is None or not isinstance(e, ray_backend.RayUnreachableError):
            raise
        print(f"metarl: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from metarl.fileio import NotRegularFileError, disk_full

        if isinstance(e, NotRegularFileError):  # a write that would replace a FIFO, a device or a directory
            print(f"metarl: error: cannot write {e.filename!r}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
        full = disk_full(e)  # a full disk anywhere (a library may wrap the OSError): one line, exit 1
        if full is None:
            raise
        print(f"metarl: error: no space left on device writing {_disk_full_path(full)}", file=sys.stderr)
        return EXIT_DISK_FULL


if __name__ == "__main__":
    sys.exit(main())
