"""Evaluations on a registry: what ``metarl evaluate --protocol NAME`` and ``metarl analyze`` run.

An evaluation scores a loaded run (:class:`metarl.rundir.LoadedRun`) and
writes its result files. It is an :class:`Evaluation` subclass registered in
:data:`EVALUATIONS` with:

* ``Settings``: a dataclass of its settings, a docstring under each field and
  an optional ``validate(need)``; the command line fills the fields named like
  its options (``--tasks``, ``--steps``, ``--episodes``, ``--seed``,
  ``--inner-lr``, ``--shots``, ``--max-states``) and leaves the rest at their
  defaults;
* :meth:`Evaluation.file_name`: the file it writes in ``RUN_DIR/eval/`` unless
  ``--out`` says otherwise;
* :meth:`Evaluation.run`: the evaluation itself, returning an
  :class:`Evaluated` (the result, the files written, the lines the command
  prints).

Built in: ``adaptation`` (the curve over inner steps on held-out tasks),
``shots`` (return after one step against adaptation episodes), each fixed
protocol of :data:`metarl.protocols.PROTOCOLS` (``metaworld``), and
``analysis`` (per-layer CKA/CCA, the layer-freezing ablation and a learned
preconditioner's spectra; ``metarl analyze``) and ``transfer`` (a learned
rule on another task distribution, against the plain gradient step). ``register_evaluation("name",
MyEvaluation)`` in a file passed with ``--module`` adds one, which
``metarl evaluate RUN --protocol name`` then runs.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from metarl import commands
from metarl.rundir import LoadedRun, RunDir

Report = Callable[[str], None]
"""Where an evaluation reports progress (one line at a time; the command prints it to stderr)."""


@dataclass
class Evaluated:
    """What an evaluation returns: its result, the files it wrote, the lines the command prints (a table)."""

    result: dict[str, Any]
    files: dict[str, Any]
    lines: list[str] = field(default_factory=list)


class Evaluation(abc.ABC):
    """An evaluation (module docstring). ``name``: the name it is registered under."""

    Settings: ClassVar[type] = type(None)
    name: str = ""

    def file_name(self, settings: Any, best: bool = False) -> str:
        return f"{self.name}_best.json" if best else f"{self.name}.json"

    def refuses(self, loaded: LoadedRun) -> str | None:
        """Why this evaluation does not apply to ``loaded`` (one line), or None. By default it needs a learner
        that adapts by inner steps (RL² adapts through its hidden state instead)."""
        if not getattr(loaded.learner, "adapts", True):
            return (f"{self.name}: {loaded.cfg.algo.name} takes no inner step (it adapts through its policy's "
                    "hidden state), so there is no before and after an inner step to evaluate")
        return None

    @abc.abstractmethod
    def run(self, rd: RunDir, loaded: LoadedRun, settings: Any, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        """Evaluate ``loaded`` with ``settings``, write ``out`` (and files beside it); ``best``: the
        checkpoint is the best training iteration's."""


def warn_divergence(report: Report, result: Any, points: list[Any], what: str) -> None:
    """Report :func:`metarl.evaluation.divergence_warning`'s line when tasks diverged."""
    from metarl.evaluation import divergence_warning

    warning = divergence_warning(result, points, what)
    if warning:
        report(warning)


@dataclass
class HeldOutSettings:
    tasks: int = commands.DEFAULT_EVAL_TASKS
    """Held-out tasks (from the evaluation stream, which training never uses)."""
    episodes: int | None = None
    """Episodes per task and evaluation point (null: the run's algo.episodes_per_task)."""
    seed: int = 0
    """Seed of the held-out tasks and rollouts (the same seed gives every run the same tasks)."""
    inner_lr: float | None = None
    """Test-time inner step size (null: the trained one)."""


@dataclass
class CurveSettings(HeldOutSettings):
    steps: int = 3
    """Inner steps 0..K (step 0: the meta-policy, no inner loop)."""


class AdaptationCurve(Evaluation):
    """The return after 0..``steps`` inner steps on held-out tasks (``eval/adaptation.json``, CSV, PNG)."""

    Settings = CurveSettings

    def file_name(self, settings: Any, best: bool = False) -> str:
        return commands.default_eval_name("adaptation", best)

    def run(self, rd: RunDir, loaded: LoadedRun, settings: CurveSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        report(f"evaluating {rd} (iteration {loaded.iteration}) on {settings.tasks} held-out tasks, "
               f"steps 0..{settings.steps}")
        result, files = commands.evaluate_adaptation(
            rd, loaded, out, settings.tasks, settings.steps, settings.episodes, settings.seed, settings.inner_lr,
            best=best, on_step=lambda k, m: report(f"  step {k}: {m:.2f}"))
        lines = [f"{'step':>4}  {'mean return':>12}  {'stderr':>8}"] + [
            f"{k:>4}  {m:>12.2f}  {s:>8.2f}" for k, m, s in zip(result["steps"], result["mean"], result["stderr"])]
        warn_divergence(report, result, result["steps"], "step")
        return Evaluated(result, files, lines)


@dataclass
class ShotsSettings(HeldOutSettings):
    shots: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    """Adaptation episodes per task (M), one point each."""


class ShotsCurve(Evaluation):
    """The return after one inner step against the number of adaptation episodes (``eval/shots.json``, PNG)."""

    Settings = ShotsSettings

    def file_name(self, settings: Any, best: bool = False) -> str:
        return commands.default_eval_name("adaptation", best, shots=True)

    def run(self, rd: RunDir, loaded: LoadedRun, settings: ShotsSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        report(f"k-shot curve of {rd} (iteration {loaded.iteration}) on {settings.tasks} held-out tasks, "
               f"shots {sorted(set(settings.shots))}")
        result, png = commands.evaluate_shots(rd, loaded, out, settings.shots, settings.tasks, settings.episodes,
                                              settings.seed, settings.inner_lr,
                                              on_point=lambda m, r: report(f"  {m} episodes: {r:.2f}"))
        lines = [f"{'shots':>5}  {'mean return':>12}  {'stderr':>8}"] + [
            f"{m:>5}  {r:>12.2f}  {e:>8.2f}" for m, r, e in zip(result["shots"], result["mean"], result["stderr"],
                                                                 strict=True)]
        warn_divergence(report, result, result["shots"], "shots")
        return Evaluated(result, {"json": out, "png": png}, lines)


@dataclass
class ProtocolSettings:
    tasks: int | None = None
    """Test tasks: that many of the family's, evenly spaced through its list (null: every one)."""
    seed: int = 0
    """Seed of the protocol's rollouts."""
    inner_lr: float | None = None
    """Test-time inner step size (null: the trained one)."""


class FixedProtocol(Evaluation):
    """A fixed protocol of :data:`metarl.protocols.PROTOCOLS` on the family's own test tasks."""

    Settings = ProtocolSettings

    def __init__(self, name: str):
        self.name = name

    def refuses(self, loaded: LoadedRun) -> str | None:
        if self.name in TRIAL_PROTOCOLS and not getattr(loaded.learner, "adapts", True):
            return None  # RL²: the protocol's episodes as one trial (metaworld_trials)
        return super().refuses(loaded)

    def run(self, rd: RunDir, loaded: LoadedRun, settings: ProtocolSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        def on_start(n: int) -> None:
            report(f"{self.name} protocol on {rd} (iteration {loaded.iteration}): {n} test tasks")

        def on_chunk(d: int, n: int) -> None:
            report(f"  {d}/{n} tasks")

        if not getattr(loaded.learner, "adapts", True):
            from metarl.protocols import write_protocol_outputs

            tasks = loaded.family.test_tasks()
            if tasks is None:
                raise commands.CommandError(f"--protocol {self.name}: family {loaded.family.name} has no test "
                                            "tasks of its own")
            tasks = commands.test_task_subset(tasks, settings.tasks, loaded.family.name)
            on_start(len(tasks))
            result = TRIAL_PROTOCOLS[self.name](loaded, tasks, settings.seed, on_chunk=on_chunk)
            result["run_dir"], result["iteration"] = str(rd.path), loaded.iteration
            files = write_protocol_outputs(result, Path(out), rd.path, loaded.iteration)
        else:
            result, files = commands.evaluate_protocol(rd, loaded, self.name, out, settings.seed, settings.tasks,
                                                       settings.inner_lr, on_start=on_start, on_chunk=on_chunk)
        lines = [f"success rate {result['success_rate']:.3f} ± {result['success_stderr']:.3f} (standard error "
                 f"over {result['num_tasks']} test tasks; before adaptation {result['success_rate_pre']:.3f})",
                 f"return before adaptation {result['return_pre']:.2f}, after {result['return_post']:.2f}"]
        lines += [f"  {name}: {rate:.3f}" for name, rate in result["by_env"].items()]
        return Evaluated(result, files, lines)


@dataclass
class AnalysisSettings:
    tasks: int = 20
    """Held-out tasks."""
    episodes: int | None = None
    """Episodes per task (null: the run's algo.episodes_per_task)."""
    seed: int = 0
    """Seed of the held-out tasks and rollouts (the same as ``metarl evaluate``'s)."""
    max_states: int = 2000
    """States per task for CKA/CCA."""


class RepresentationAnalysis(Evaluation):
    """Per-layer CKA/CCA before and after one inner step, the layer-freezing ablation and a learned
    preconditioner's spectra (``eval/analysis.json``, PNGs)."""

    Settings = AnalysisSettings

    def run(self, rd: RunDir, loaded: LoadedRun, settings: AnalysisSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        from metarl.analysis.representation import analyze_run, format_report

        report(f"analysing {rd} (iteration {loaded.iteration}) on {settings.tasks} held-out tasks")
        result = analyze_run(rd.path, settings.tasks, settings.seed, settings.episodes, settings.max_states,
                             Path(out).parent, loaded=loaded, name=Path(out).stem)
        return Evaluated(result, dict(result["files"]), [format_report(result)])


@dataclass
class TransferSettings(CurveSettings):
    env_kwargs: dict[str, Any] = field(default_factory=lambda: {"low": -1.0, "high": 1.0, "exclude": 0.5})
    """Family constructor arguments that replace the run's (the transfer target; the default: Navigation2D's
    outer ring [0.5, 1] around the square the suite trains on)."""


class Transfer(Evaluation):
    """The learned rule applied without retraining to another task distribution of the same family (the same
    policy shape), against the plain gradient step ``algo.inner_lr`` from the same meta-policy
    (``eval/transfer.json``: ``learned`` and ``sgd`` curves)."""

    Settings = TransferSettings

    def run(self, rd: RunDir, loaded: LoadedRun, settings: TransferSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        import envs
        from metarl.evaluation import adaptation_curve
        from metarl.run import build_sampler, write_json

        cfg, _, learner, iteration = loaded
        kwargs = {**cfg.env.kwargs, **settings.env_kwargs}
        family = envs.make_family(cfg.env.family, horizon=cfg.env.horizon, **kwargs)
        episodes = settings.episodes or cfg.algo.episodes_per_task
        report(f"transfer of {rd} (iteration {iteration}) to {cfg.env.family} with {settings.env_kwargs}")
        result: dict[str, Any] = {"env_kwargs": kwargs, "run_dir": str(rd.path), "iteration": iteration}
        with build_sampler(cfg, family, learner.policy) as sampler:
            for key, lr in (("learned", settings.inner_lr), ("sgd", cfg.algo.inner_lr)):
                result[key] = adaptation_curve(learner, family, sampler, settings.tasks, settings.steps, episodes,
                                               settings.seed, inner_lr=lr)
                report(f"  {key}: " + " / ".join(f"{m:.1f}" for m in result[key]["mean"]))
        write_json(out, result, indent=1)
        lines = [f"{'step':>4}  {'learned rule':>12}  {'plain step':>10}"] + [
            f"{k:>4}  {a:>12.2f}  {b:>10.2f}" for k, a, b in zip(result["learned"]["steps"], result["learned"]["mean"],
                                                                 result["sgd"]["mean"], strict=True)]
        return Evaluated(result, {"json": out}, lines)


@dataclass
class TrialSettings:
    tasks: int = commands.DEFAULT_EVAL_TASKS
    """Held-out tasks (the same stream, and so the same tasks, as the adaptation curve's)."""
    steps: int | None = None
    """Episodes N of each trial, the hidden state carried across all N (null: the run's
    ``rl2.episodes_per_trial`` K); the curve is the return of episode 1..N. N > K asks how the
    policy does past the trial length it was trained on."""
    episodes: int | None = None
    """Trials per task, so each episode index averages that many episodes per task, as each inner step
    of the adaptation curve does (null: the run's algo.episodes_per_task)."""
    seed: int = 0
    """Seed of the held-out tasks and rollouts."""

    def validate(self, need: Callable[[bool, str, Any, str], None]) -> None:
        need(self.steps is None or self.steps >= 1, "steps", self.steps,
             "must be >= 1 for a trial curve (episodes per trial)")


def trial_length(loaded: LoadedRun, steps: int | None) -> int:
    """The episodes of each evaluation trial: ``steps``, or the run's ``rl2.episodes_per_trial``."""
    return int(steps) if steps is not None else int(loaded.learner.rl2.episodes_per_trial)


def sample_trials(loaded: LoadedRun, tasks: Any, trials: int, episodes: int, seed: int) -> Any:
    """``trials`` trials per task of ``episodes`` episodes each (the hidden state carried across all of them,
    zero at each trial's start) with the run's policy, on its configured sampler: an
    :class:`~metarl.episodes.EpisodeBatch` of ``episodes * horizon`` steps per column. The trial length is
    the evaluation's, not the policy's training one (the same parameters; only the sampler's spec differs)."""
    import copy

    from metarl.run import build_sampler

    cfg, family, learner, _ = loaded
    view = copy.copy(learner.policy)  # shares the parameters; only the trial length differs
    view.episodes_per_trial = int(episodes)
    with build_sampler(cfg, family, view) as sampler:
        return sampler.sample(tasks, {n: v.detach() for n, v in learner.policy.params().items()}, trials, seed)


def split_episodes(values: Any, episodes: int) -> Any:
    """A trial batch's ``(N, E H, B)`` per-step tensor as ``(N, E, H, B)``: episode ``k`` of each trial is
    steps ``[k H, (k + 1) H)`` (:mod:`metarl.episodes`)."""
    return values.unflatten(1, (episodes, values.shape[1] // episodes))


class TrialCurve(Evaluation):
    """RL²'s adaptation curve: the mean return of episode 1..N of a trial of N episodes (``--steps N``,
    default the run's ``rl2.episodes_per_trial`` K), the hidden state carried across all N, on the same
    held-out tasks, seed and episodes per point as the gradient methods' curve, so one table holds both
    (``eval/trials.json``: the adaptation curve's fields, ``steps`` being the episode index 1..N)."""

    Settings = TrialSettings

    def refuses(self, loaded: LoadedRun) -> str | None:
        if getattr(loaded.learner, "adapts", True):
            return (f"{self.name}: {loaded.cfg.algo.name} adapts by inner steps; its curve is "
                    "`metarl evaluate --protocol adaptation`")
        return None

    def run(self, rd: RunDir, loaded: LoadedRun, settings: TrialSettings, out: Path, report: Report,
            best: bool = False) -> Evaluated:
        import numpy as np

        from metarl.run import EVAL_ROLLOUTS, derive_seed, held_out_tasks, mean_stderr, write_json

        cfg, family, learner, iteration = loaded
        k = int(learner.rl2.episodes_per_trial)
        n = trial_length(loaded, settings.steps)
        trials = settings.episodes or cfg.algo.episodes_per_task
        report(f"trial curve of {rd} (iteration {iteration}) on {settings.tasks} held-out tasks, episodes 1..{n} "
               f"of one trial (trained on trials of {k})")
        tasks = held_out_tasks(family, settings.tasks, settings.seed)
        batch = sample_trials(loaded, tasks, trials, n, derive_seed(settings.seed, EVAL_ROLLOUTS, 0))
        per_episode = split_episodes(batch.rewards * batch.mask, n).sum(2).mean(2)  # (N tasks, n)
        per_task = per_episode.T.double().numpy()  # (n, N tasks)
        mean, stderr = mean_stderr(np.asarray(per_task), axis=1)
        result = {"steps": list(range(1, n + 1)), "x": "episode index within a trial", "mean": mean,
                  "stderr": stderr, "per_task": per_task.tolist(), "tasks": tasks, "num_tasks": settings.tasks,
                  "episodes_per_task": trials, "episodes_per_trial": n, "trained_episodes_per_trial": k,
                  "seed": settings.seed, "run_dir": str(rd.path), "iteration": iteration}
        write_json(out, result, indent=1)
        lines = [f"{'episode':>7}  {'mean return':>12}  {'stderr':>8}"] + [
            f"{e:>7}  {m:>12.2f}  {s:>8.2f}" for e, m, s in zip(result["steps"], mean, stderr, strict=True)]
        return Evaluated(result, {"json": out}, lines)


def metaworld_trials(loaded: LoadedRun, tasks: list[Any], seed: int = 0, adaptation_episodes: int = 10,
                     evaluation_episodes: int = 3, on_chunk: Callable[[int, int], None] | None = None
                     ) -> dict[str, Any]:
    """Meta-World's protocol (:func:`metarl.protocols.metaworld_protocol`) for a learner that adapts by its
    hidden state (RL²): on every test task one trial of ``adaptation_episodes + evaluation_episodes``
    episodes, the hidden state carried across all of them; the adaptation episodes play the part of the
    episodes an inner step would learn from, the last ``evaluation_episodes`` are scored. The result has
    :func:`~metarl.protocols.metaworld_protocol`'s fields (``adaptation_steps`` 0, ``trial_episodes`` the
    trial's length), so the report reads both alike."""
    import numpy as np

    from metarl.protocols import EVAL_PROTOCOL, TASKS_PER_CALL
    from metarl.run import derive_seed

    if adaptation_episodes < 1 or evaluation_episodes < 1:
        raise ValueError(f"need >= 1 adaptation and evaluation episodes, got {adaptation_episodes}, "
                         f"{evaluation_episodes}")
    n_eps = adaptation_episodes + evaluation_episodes
    pre_s, post_s, pre_r, post_r = [], [], [], []
    for c, start in enumerate(range(0, len(tasks), TASKS_PER_CALL)):
        chunk = tasks[start:start + TASKS_PER_CALL]
        batch = sample_trials(loaded, chunk, 1, n_eps, derive_seed(seed, EVAL_PROTOCOL, 2 * c))
        if batch.success is None:
            raise ValueError(f"{loaded.family.name} reports no success; the metaworld protocol needs it")
        live = split_episodes(batch.mask, n_eps)  # (N, E, H, 1)
        success = (split_episodes(batch.success, n_eps) * live).amax(2)[..., 0].double()  # (N, E)
        returns = (split_episodes(batch.rewards, n_eps) * live).sum(2)[..., 0].double()
        pre_s.append(success[:, :adaptation_episodes].mean(1).numpy())
        post_s.append(success[:, adaptation_episodes:].mean(1).numpy())
        pre_r.append(returns[:, :adaptation_episodes].mean(1).numpy())
        post_r.append(returns[:, adaptation_episodes:].mean(1).numpy())
        if on_chunk is not None:
            on_chunk(start + len(chunk), len(tasks))
    success_pre, success_post = np.concatenate(pre_s), np.concatenate(post_s)
    return_pre, return_post = np.concatenate(pre_r), np.concatenate(post_r)
    from metarl.protocols import protocol_result

    return protocol_result(tasks, loaded.family.name, success_pre, success_post, return_pre, return_post,
                           adaptation_episodes=adaptation_episodes, adaptation_steps=0,
                           evaluation_episodes=evaluation_episodes, trial_episodes=n_eps, seed=seed, inner_lr=None)


TRIAL_PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {"metaworld": metaworld_trials}
"""The fixed protocols' forms for a learner without inner steps (RL²): the protocol's episodes as one trial."""


def _builtins() -> dict[str, Evaluation]:
    from metarl.protocols import PROTOCOLS

    out: dict[str, Evaluation] = {"adaptation": AdaptationCurve(), "shots": ShotsCurve()}
    out.update((name, FixedProtocol(name)) for name in PROTOCOLS)
    out["analysis"] = RepresentationAnalysis()
    out["transfer"] = Transfer()
    out["trials"] = TrialCurve()
    for name, ev in out.items():
        ev.name = name
    return out


EVALUATIONS: dict[str, Evaluation] = _builtins()


def register_evaluation(name: str, evaluation: type[Evaluation] | Evaluation) -> None:
    """Add an evaluation under ``name`` (what ``metarl evaluate --protocol`` selects)."""
    ev = evaluation() if isinstance(evaluation, type) else evaluation
    if not isinstance(ev, Evaluation):
        raise TypeError(f"evaluation {name!r} must be an Evaluation, got {evaluation!r}")
    ev.name = name
    EVALUATIONS[name] = ev


class EvaluationError(ValueError):
    """An unknown evaluation or a bad setting (one line naming it)."""


def settings_for(name: str, given: Mapping[str, Any]) -> Any:
    """The settings of evaluation ``name`` from the options a command was given (None: not given); an option
    the evaluation has no field for is ignored. Raises :class:`EvaluationError` for an unknown name or a
    setting its ``validate`` refuses."""
    if name not in EVALUATIONS:
        raise EvaluationError(f"--protocol: unknown evaluation {name!r} (one of {', '.join(sorted(EVALUATIONS))}; "
                              "a --module file may register more)")
    cls = EVALUATIONS[name].Settings
    names = {f.name for f in dataclasses.fields(cls)}
    settings = cls(**{k: v for k, v in given.items() if k in names and v is not None})
    check = getattr(settings, "validate", None)
    if check is not None:
        def need(ok: bool, key: str, value: Any, what: str) -> None:
            if not ok:
                raise EvaluationError(f"--{key.replace('_', '-')}: {what}, got {value!r}")

        check(need)
    return settings
