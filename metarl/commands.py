"""What the commands do, as library functions over a :class:`metarl.rundir.RunDir`.

The command line (:mod:`metarl.cli`) parses arguments, calls these and
prints; the experiment scripts call them directly.  Nothing here prints:
progress goes through the ``on_*`` callbacks, bad input raises
:class:`CommandError` (one line).  Training itself is the trainer's
(:mod:`metarl.trainer`); the run directory's lifecycle around it is
:meth:`metarl.rundir.RunDir.prepare_training`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from metarl.config import Config, load_config
from metarl.rundir import LoadedRun, RunDir, seed_path

DEFAULT_EVAL_TASKS = 40


class CommandError(ValueError):
    """Bad input to a command (the message is one line naming the value)."""


# -- training -----------------------------------------------------------------------

def seed_list(values: Sequence[int]) -> list[int]:
    """``--seeds``: one number N means seeds 1..N, several are the seeds themselves (no repeats)."""
    seeds = list(range(1, values[0] + 1)) if len(values) == 1 else list(values)
    if not seeds:
        raise CommandError("--seeds: give a number of seeds >= 1 or a list of seeds")
    if len(set(seeds)) != len(seeds):
        raise CommandError(f"--seeds: repeated seeds in {seeds}")
    return seeds


def seed_runs(config: str | Path, overrides: Sequence[str], seeds: Sequence[int],
              base: str | Path | None = None) -> list[tuple[int, Config, RunDir]]:
    """Each seed's config and stable run directory (:func:`metarl.rundir.seed_path`), all loaded before any
    run starts (a bad config raises :class:`metarl.config.ConfigError` first).

    Under ``base`` (``--run-dir``) the directories are known before the config
    is read, so the modules a started seed recorded are imported first: a
    custom family's seeds continue without ``--module``."""
    jobs = []
    for seed in seeds:
        if base:
            RunDir(seed_path(None, seed, base)).import_modules()
        cfg = load_config(config, [*overrides, f"seed={seed}"])
        jobs.append((seed, cfg, RunDir(seed_path(cfg, seed, base))))
    return jobs


# -- evaluation ---------------------------------------------------------------------

def evaluation_protocol(family: str, asked: str | None = None) -> str:
    """The protocol ``metarl evaluate`` runs: ``asked``, else the family's own (``evaluation_protocol`` on its
    class, Meta-World's), else ``adaptation``."""
    import envs

    if asked is not None:
        return asked
    return getattr(envs.family_class(family), "evaluation_protocol", None) or "adaptation"


def default_eval_name(protocol: str, best: bool = False, shots: bool = False) -> str:
    """The file in ``eval/`` an evaluation writes unless told otherwise."""
    if shots:
        return "shots.json"
    if protocol != "adaptation":
        return f"{protocol}.json"
    return "adaptation_best.json" if best else "adaptation.json"


def test_task_subset(tasks: list[Any], num_tasks: int | None, family: str = "the family") -> list[Any]:
    """``num_tasks`` of a family's test tasks evenly spaced through its list (a quick look that still sees every
    environment of ML10), or all of them."""
    if num_tasks is None:
        return tasks
    if num_tasks > len(tasks):
        raise CommandError(f"--tasks {num_tasks}: {family} has {len(tasks)} test tasks")
    return [tasks[i * len(tasks) // num_tasks] for i in range(num_tasks)]


def evaluate_adaptation(rd: RunDir, loaded: LoadedRun, out: Path, num_tasks: int = DEFAULT_EVAL_TASKS,
                        steps: int = 3, episodes: int | None = None, seed: int = 0, inner_lr: float | None = None,
                        best: bool = False, on_step: Callable[[int, float], None] | None = None,
                        ) -> tuple[dict[str, Any], dict[str, Path]]:
    """The adaptation curve of ``loaded`` written to ``out`` (JSON; CSV and PNG beside it) and logged to the
    run's TensorBoard; returns the result and the files."""
    from metarl.evaluation import evaluate_run
    from metarl.plots import log_adaptation_curve, write_adaptation_outputs
    from metarl.run import write_json

    result = evaluate_run(rd.path, num_tasks, steps, episodes, seed, on_step=on_step, inner_lr=inner_lr,
                          loaded=loaded)
    if best:
        result["checkpoint"] = "best"
    write_json(out, result, indent=1)
    files = {"json": Path(out), **write_adaptation_outputs(result, Path(out).parent, Path(out).stem)}
    log_adaptation_curve(result, rd.path)
    return result, files


def evaluate_shots(rd: RunDir, loaded: LoadedRun, out: Path, shots: Sequence[int],
                   num_tasks: int = DEFAULT_EVAL_TASKS, episodes: int | None = None, seed: int = 0,
                   inner_lr: float | None = None, on_point: Callable[[int, float], None] | None = None,
                   ) -> tuple[dict[str, Any], Path]:
    """The k-shot curve of ``loaded`` written to ``out`` (JSON) and its figure (PNG beside it)."""
    from metarl.evaluation import shots_curve
    from metarl.plots import plot_shots
    from metarl.run import build_sampler, write_json

    cfg, family, learner, iteration = loaded
    with build_sampler(cfg, family, learner.policy) as sampler:
        result = shots_curve(learner, family, sampler, sorted(set(shots)), num_tasks,
                             episodes or cfg.algo.episodes_per_task, seed, inner_lr, on_point=on_point)
    result["run_dir"], result["iteration"] = str(rd.path), iteration
    write_json(out, result, indent=1)
    return result, plot_shots(result, Path(out).with_suffix(".png"))


def evaluate_protocol(rd: RunDir, loaded: LoadedRun, protocol: str, out: Path, seed: int = 0,
                      num_tasks: int | None = None, inner_lr: float | None = None,
                      on_start: Callable[[int], None] | None = None,
                      on_chunk: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """A fixed protocol (:data:`metarl.protocols.PROTOCOLS`) on the family's test tasks (``num_tasks`` of them,
    :func:`test_task_subset`), written to ``out`` (JSON, CSV) and the run's TensorBoard. ``on_start`` gets the
    number of test tasks once they are chosen, ``on_chunk`` (done, total) as they are scored."""
    from metarl.protocols import PROTOCOLS, write_protocol_outputs
    from metarl.run import build_sampler

    cfg, family, learner, iteration = loaded
    tasks = family.test_tasks()
    if tasks is None:
        raise CommandError(f"--protocol {protocol}: family {family.name} has no test tasks of its own")
    tasks = test_task_subset(tasks, num_tasks, family.name)
    if on_start is not None:
        on_start(len(tasks))
    with build_sampler(cfg, family, learner.policy) as sampler:
        result = PROTOCOLS[protocol](learner, family, sampler, seed=seed, tasks=tasks, inner_lr=inner_lr,
                                     on_chunk=on_chunk)
    result["run_dir"], result["iteration"] = str(rd.path), iteration
    return result, write_protocol_outputs(result, Path(out), rd.path, iteration)
