"""The ``metarl`` command line.

    metarl train CONFIG [--set key=value ...] [--run-dir DIR] [--seed N] [--force]
    metarl train --resume RUN_DIR
    metarl evaluate RUN_DIR [--tasks N] [--steps K] [--episodes B] [--seed N]
    metarl analyze RUN_DIR [--tasks N] [--seed N]
    metarl plot RUN_DIR [RUN_DIR ...] --out FILE.png
    metarl tasks
    metarl check-family NAME

Every command accepts ``--module PATH`` (repeatable) to import a Python file
that registers extra task families or outer loops (``metarl.algos.ALGOS``)
first.  Bad input exits with status 2 and one line on stderr naming the bad
value; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


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


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--module", action="append", default=argparse.SUPPRESS, metavar="PATH",
                        help="import this Python file first, e.g. one that registers a task family or an "
                             "outer loop (repeatable)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning: MAML-TRPO and ANIL.",
                     parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[common], description=help_text)

    p = add("train", "meta-train from a YAML config (or resume a run)")
    p.add_argument("config", nargs="?", help="YAML config, e.g. experiments/configs/navigation2d.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted (repeatable): --set algo.inner_lr=0.05")
    p.add_argument("--run-dir", help="run directory (default: runs/<family>__<name>__<seed>__<time>)")
    p.add_argument("--seed", type=_nonneg_int, help="override the config's seed")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint")
    p.add_argument("--iterations", type=_nonneg_int, help="with --resume: extend the run to this many iterations")
    p.add_argument("--force", action="store_true", help="allow writing into an existing non-empty --run-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("evaluate", "test-time adaptation curve on held-out tasks")
    p.add_argument("run_dir", help="a run directory written by metarl train")
    p.add_argument("--tasks", type=_positive_int, default=40, help="held-out tasks (default 40)")
    p.add_argument("--steps", type=_nonneg_int, default=3, help="inner steps 0..K (default 3; 0 = NIL)")
    p.add_argument("--episodes", type=_positive_int, help="episodes per task per step (default: the run's)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the held-out tasks and rollouts")
    p.add_argument("--out", help="output JSON (default RUN_DIR/eval/adaptation.json)")

    p = add("analyze", "per-layer representation change (CKA/CCA) and the layer-freezing ablation")
    p.add_argument("run_dir", help="a run directory written by metarl train")
    p.add_argument("--tasks", type=_positive_int, default=20, help="held-out tasks (default 20)")
    p.add_argument("--episodes", type=_positive_int, help="episodes per task (default: the run's)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the held-out tasks and rollouts")
    p.add_argument("--max-states", type=_positive_int, default=2000, help="states per task for CKA/CCA")
    p.add_argument("--out-dir", help="output directory (default RUN_DIR/eval)")

    p = add("plot", "learning and adaptation curves of one or more runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (seeds of one config are banded)")
    p.add_argument("--out", required=True, help="output PNG file")
    p.add_argument("--labels", nargs="+", help="one legend label per run directory")

    add("tasks", "list registered task families")

    p = add("check-family", "run the task-family checks on a registered family")
    p.add_argument("name", help="family name (see metarl tasks)")
    return parser


def _import_modules(paths: list[str]) -> None:
    """Import user files; their classes are pickled by value so worker processes need not import them."""
    import cloudpickle

    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"--module: no such file {path!r}")
        name = "metarl_user_" + Path(path).stem
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        cloudpickle.register_pickle_by_value(module)


# -- commands -----------------------------------------------------------------------

def _default_run_dir(cfg: Any) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg.log.root) / f"{cfg.env.family}__{cfg.name}__{cfg.seed}__{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    from metarl.config import ConfigError, load_config

    if args.resume:
        if args.config or args.overrides or args.seed is not None or args.run_dir:
            raise UsageError("--resume takes only a run directory (plus --iterations)")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"--resume: {str(run_dir)!r} is not a run directory (no config.yaml)")
        from metarl.run import resume_config

        try:
            cfg = resume_config(run_dir, args.iterations)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        except FileNotFoundError:
            raise UsageError(f"--resume: no checkpoint in {str(run_dir / 'checkpoints')!r}") from None
        return _run_training(cfg, run_dir, resume=True, progress=not args.no_progress)

    if not args.config:
        raise UsageError("train needs a CONFIG file (or --resume RUN_DIR)")
    if args.iterations is not None:
        raise UsageError("--iterations goes with --resume; use --set iterations=N")
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(cfg)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not args.force:
        raise UsageError(f"run directory {str(run_dir)!r} exists and is not empty (use --force or --resume)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write run directory {str(run_dir)!r}: {e.strerror}") from None
    return _run_training(cfg, run_dir, resume=False, progress=not args.no_progress)


def _run_training(cfg: Any, run_dir: Path, resume: bool, progress: bool) -> int:
    from tqdm import tqdm

    from metarl.trainer import Trainer, TrainingError

    trainer = Trainer(cfg, run_dir, resume=resume)
    print(f"run directory: {run_dir}", file=sys.stderr)
    bar = tqdm(total=cfg.iterations, initial=trainer.start_iteration, unit="it", disable=not progress,
               dynamic_ncols=True, desc=cfg.env.family)

    def on_iteration(res: Any) -> None:
        s = res.scalars
        bar.set_postfix(pre=f"{s['returns/pre_adapt']:.1f}", post=f"{s['returns/post_adapt']:.1f}",
                        s_it=f"{s['time/iteration_s']:.2f}", refresh=False)
        bar.update(1)

    try:
        results = trainer.train(on_iteration)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted; resume with: metarl train --resume {run_dir}", file=sys.stderr)
        return 130
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
    from metarl.config import ConfigError
    from metarl.evaluation import evaluate_run
    from metarl.plots import log_adaptation_curve, write_adaptation_outputs
    from metarl.run import done_iterations, write_json

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    iteration = done_iterations(run_dir)
    if iteration is None:
        raise UsageError(f"no checkpoint in {run_dir / 'checkpoints'}")
    out = Path(args.out) if args.out else run_dir / "eval" / "adaptation.json"
    print(f"evaluating {run_dir} (iteration {iteration}) on {args.tasks} held-out tasks, "
          f"steps 0..{args.steps}", file=sys.stderr)
    try:
        result = evaluate_run(run_dir, args.tasks, args.steps, args.episodes, args.seed,
                              on_step=lambda k, m: print(f"  step {k}: {m:.2f}", file=sys.stderr))
    except ConfigError as e:
        raise UsageError(f"{run_dir / 'config.yaml'}: {e}") from None
    write_json(out, result, indent=1)
    files = write_adaptation_outputs(result, out.parent, out.stem)
    log_adaptation_curve(result, run_dir)
    print(f"{'step':>4}  {'mean return':>12}  {'stderr':>8}")
    for k, m, s in zip(result["steps"], result["mean"], result["stderr"]):
        print(f"{k:>4}  {m:>12.2f}  {s:>8.2f}")
    print(f"wrote {out}, {files['csv']}, {files['png']}", file=sys.stderr)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from metarl.analysis.representation import analyze_run, format_report
    from metarl.config import ConfigError

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UsageError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    print(f"analysing {run_dir} on {args.tasks} held-out tasks", file=sys.stderr)
    try:
        result = analyze_run(run_dir, args.tasks, args.seed, args.episodes, args.max_states,
                             Path(args.out_dir) if args.out_dir else None)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(f"{run_dir / 'config.yaml'}: {e}") from None
    print(format_report(result))
    print("wrote " + ", ".join(result["files"].values()), file=sys.stderr)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from metarl.plots import plot_runs

    for d in args.run_dirs:
        if not Path(d).is_dir():
            raise UsageError(f"no such run directory {d!r}")
    if args.labels and len(args.labels) != len(args.run_dirs):
        raise UsageError(f"--labels needs one label per run directory ({len(args.run_dirs)}), got {len(args.labels)}")
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out must name a .png file, got {args.out!r}")
    try:
        out = plot_runs([Path(d) for d in args.run_dirs], Path(args.out), args.labels)
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
        raise UsageError(f"unknown task family {args.name!r}; registered: {', '.join(envs.family_names())}")
    try:
        envs.check_family(args.name)
    except (AssertionError, ValueError) as e:
        print(f"check-family {args.name}: FAILED: {e}", file=sys.stderr)
        return 1
    print(f"check-family {args.name}: ok")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "analyze": cmd_analyze, "plot": cmd_plot,
            "tasks": cmd_tasks, "check-family": cmd_check_family}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        _import_modules(getattr(args, "module", []))
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"metarl: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
