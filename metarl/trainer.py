"""The meta-training loop: sampling, adaptation, outer step, logging, checkpoints.

One meta-iteration ``i``:

1. sample ``meta_batch_size`` tasks (generator seeded by ``(seed, 0, i)``);
2. roll out the meta-policy on every task (train episodes, seed ``(seed, 1, i)``);
3. fit baselines, GAE, adapt per task (``adaptation.adapt``);
4. roll out every task's adapted policy (valid episodes, seed ``(seed, 2, i)``);
5. the meta-learner's outer step (``algo.name``, e.g. MAML-TRPO), handed
   the adapted parameters of step 3;
6. log scalars to TensorBoard (:mod:`metarl.tblog`: descriptions, the
   custom-scalars layout, constants once) and ``scalars.csv``; checkpoint
   every ``log.checkpoint_every``.

Everything random is derived from ``(seed, iteration)`` (:mod:`metarl.run`),
so a run resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metarl import allocator, checkpoint, manifest, run, rundir, signals, tblog, wandb_mirror
from metarl.adaptation import ADAPT_MODES
from metarl.algos import ALGOS, Rollouts
from metarl.config import Config, flat_dict, to_dict, to_yaml
from metarl.episodes import EpisodeBatch
from metarl.inner_updates import INNER_UPDATES
from metarl.run import OUTER_ROLLOUTS, TASKS, TRAIN, VALID, derive_seed, mean_return, stream_rng
from metarl.rundir import RunDir, restore
from metarl.sampling import Sampler
from metarl.scalars import ScalarsCSV
from metarl.success import success_scalars

log = logging.getLogger(__name__)


def adaptation_scalars(params: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor]) -> dict[str, float]:
    """Two diagnostics of the policy the iteration started from and of its inner loop.

    ``policy/log_std_mean``: the mean of the meta-policy's log-std over action
    dims (a shrinking std makes the same inner step size a larger change of
    the policy). ``adapt/step_norm``: the L2 norm of ``θ'_i − θ`` over the
    adapted entries, averaged over tasks (entries stacked ``(N, ...)`` in
    ``adapted``; the shared ones do not move).
    """
    out = {"policy/log_std_mean": float(params["log_std"].detach().double().mean())}
    sq = None
    for k, v in adapted.items():
        base = params[k].detach()
        if v.dim() != base.dim() + 1:
            continue
        d = (v.detach().double() - base.double()).reshape(v.shape[0], -1).pow(2).sum(1)
        sq = d if sq is None else sq + d
    out["adapt/step_norm"] = float(sq.sqrt().mean()) if sq is not None else 0.0
    return out


def mode_description(cfg: Config) -> str:
    if not ALGOS[cfg.algo.name].adapts:  # RL²: adaptation is a recurrent policy's hidden state
        return f"{cfg.algo.name}: no inner step, a {cfg.policy.kind} policy adapts by its hidden state"
    method = ADAPT_MODES[cfg.policy.adapt]
    order = "first order" if cfg.algo.first_order else "second order"
    rule = INNER_UPDATES[cfg.algo.inner_update]
    lr = rule(cfg.algo.inner_lr, getattr(cfg, rule.section or cfg.algo.inner_update) if rule.Settings else None)
    return f"{method} ({cfg.algo.name}), {order}, {cfg.algo.inner_steps} inner step(s), {lr.describe()}"


class TrainingError(RuntimeError):
    """Training cannot continue (the message says why; checkpoints are intact)."""


class RolloutError(RuntimeError):
    """The rollouts of an iteration raised (a family's ``step`` that fails, say): one line naming the family."""


def rollout_error_summary(e: BaseException) -> str:
    """One line for an exception from the rollouts: ``Type: message`` of an in-process one (a ``__str__`` that
    raises included); for a worker's (its traceback text in the message), the traceback's last line."""
    from metarl.usermodules import describe

    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - a user's exception whose __str__ raises
        text = ""
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return lines[-1][:300] if lines else type(e).__name__
    return f"{type(e).__name__}: {describe(e, 300)}"


@dataclass
class IterationResult:
    iteration: int
    scalars: dict[str, float]


class Trainer:
    """Runs meta-training for ``cfg`` in ``run_dir`` (created by the caller)."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False):
        wandb_mirror.check(cfg)
        allocator.tune_allocator()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        rd = RunDir(self.run_dir)
        self.ckpt_dir = rd.checkpoints
        self.device = run.learner_device(cfg)  # first: a CUDA device this machine lacks stops here
        self.family = run.build_family(cfg)
        state = rd.latest_state() if resume else None  # checked (structure, shapes) before anything is written
        self.learner = run.build_learner(cfg, self.family, self.device, fresh=state is None)
        self.start_iteration = 0
        self.rejected_steps = 0
        self.consecutive_rejections = 0
        self.best_return = -math.inf  # the highest post-adaptation training return so far (checkpoints/best.pt)
        self.pending_best: dict[str, Any] | None = None  # a new best, written with the next checkpoint
        if resume:
            if state is not None:
                restore(self.learner, state, self.ckpt_dir)
                self.learner.load_extra_state(state.get("extra", {}))
                self.start_iteration = int(state["iteration"])
                self.rejected_steps = int(state.get("rejected_steps", 0))
                self.consecutive_rejections = int(state.get("consecutive_rejections", 0))
                self.best_return = rd.best_return()
            rundir.remove_stale_temporaries(self.run_dir)
            if state is None:  # killed before its first checkpoint: start over from iteration 0
                rundir.clean(self.run_dir, keep_config=True)
        rd.write_config(cfg)  # a resumed run's budget may have changed
        self.sampler: Sampler | None = None
        self.writer: Any = None

    # -- one iteration ---------------------------------------------------------------
    def tasks_for(self, iteration: int) -> list[dict[str, Any]]:
        return self.family.sample_tasks(self.cfg.algo.meta_batch_size, stream_rng(self.cfg.seed, TASKS, iteration))

    def run_iteration(self, iteration: int) -> IterationResult:
        assert self.sampler is not None
        cfg, learner = self.cfg, self.learner
        b = cfg.algo.episodes_per_task
        t0 = time.perf_counter()
        tasks = self.tasks_for(iteration)
        if cfg.algo.inner_steps == 0 or not learner.adapts:  # no inner steps (baselines, RL²): one batch
            train = self._sample(tasks, learner.policy.params(), b,
                                        derive_seed(cfg.seed, VALID, iteration)).to(self.device)
            t_sample = time.perf_counter() - t0
            t3 = time.perf_counter()
            train_adv = learner.advantages(train)
            adapted = {k: v.detach() for k, v in learner.adapt(train, train_adv).items()}
            step = learner.step(train, train, adapted, train_adv, **self._rollouts(tasks, iteration))
            self._count_rejection(iteration, step.rejected)
            res = self._result(iteration, tasks, train, mean_return(train), train.rewards.numel(), step.scalars,
                               t0, t_sample, 0.0, time.perf_counter() - t3)
            res.scalars.update(success_scalars(train, train))
            return res
        train = self._sample(tasks, learner.policy.params(), b,
                                    derive_seed(cfg.seed, TRAIN, iteration)).to(self.device)
        t_train = time.perf_counter() - t0

        t1 = time.perf_counter()
        train_adv = learner.advantages(train)
        adapted = {k: v.detach() for k, v in learner.adapt(train, train_adv).items()}
        t_adapt = time.perf_counter() - t1
        diagnostics = adaptation_scalars(learner.policy.params(), adapted)  # before the outer step moves θ

        t2 = time.perf_counter()
        finite = all(bool(torch.isfinite(v).all()) for v in adapted.values())
        valid = (self._sample(tasks, adapted, b, derive_seed(cfg.seed, VALID, iteration)).to(self.device)
                 if finite else None)
        t_valid = time.perf_counter() - t2

        t3 = time.perf_counter()
        if valid is not None:
            step = learner.step(train, valid, adapted, train_adv, **self._rollouts(tasks, iteration))
            step_scalars, rejected = step.scalars, step.rejected
        else:
            step_scalars, rejected = learner.rejected_scalars(), True
        t_outer = time.perf_counter() - t3
        self._count_rejection(iteration, rejected)

        # post-adaptation return: NaN when non-finite adapted parameters were never rolled out
        post = mean_return(valid) if valid is not None else float("nan")
        env_steps = train.rewards.numel() + (valid.rewards.numel() if valid is not None else 0)
        res = self._result(iteration, tasks, train, post, env_steps, step_scalars, t0, t_train + t_valid, t_adapt,
                           t_outer)
        res.scalars.update(success_scalars(train, valid))
        res.scalars.update(diagnostics)
        return res

    def _rollouts(self, tasks: list[dict[str, Any]], iteration: int) -> dict[str, Rollouts]:
        """``rollouts=`` for an outer loop that rolls out candidates of its own (``needs_rollouts``)."""
        if not self.learner.needs_rollouts:
            return {}
        assert self.sampler is not None
        seed = derive_seed(self.cfg.seed, OUTER_ROLLOUTS, iteration)
        return {"rollouts": Rollouts(self._sample_to_device, tasks, self.cfg.algo.episodes_per_task, iteration, seed,
                                     steps_per_episode=int(self.family.horizon), workers=self.sampler.num_workers)}

    def _sample_to_device(self, tasks: list[Any], params: Any, episodes: int, seed: int,
                          draw_ids: list[int] | None = None) -> EpisodeBatch:
        """The sampler's episodes (CPU) moved once to the learner's device."""
        return self._sample(tasks, params, episodes, seed, draw_ids).to(self.device)

    def _sample(self, tasks: list[Any], params: Any, episodes: int, seed: int,
                draw_ids: list[int] | None = None) -> EpisodeBatch:
        """The sampler's episodes; an exception from the rollouts (a family's ``step``, ``reset`` or constructor
        that raises, in this process or in a worker) is a :class:`RolloutError` naming the family and what it
        raised in one line (the traceback goes to the debug log: ``metarl -v``)."""
        assert self.sampler is not None
        try:
            if draw_ids is None:  # the plain call: a backend or wrapper written before draw_ids still works
                return self.sampler.sample(tasks, params, episodes, seed)
            return self.sampler.sample(tasks, params, episodes, seed, draw_ids=draw_ids)
        except Exception as e:  # noqa: BLE001 - a family (a user's, perhaps) may raise anything
            log.debug("the rollouts raised", exc_info=True)
            raise RolloutError(f"family {self.cfg.env.family} failed during the rollouts: "
                               f"{rollout_error_summary(e)}") from None

    def _result(self, iteration: int, tasks: list[dict[str, Any]], train: EpisodeBatch, post: float, env_steps: int,
                step_scalars: dict[str, float], t0: float, sampling_s: float, t_adapt: float,
                t_outer: float) -> IterationResult:
        """The scalars logged for one iteration: returns, the learner's own scalars as they come, timings."""
        learner = self.learner
        pre = mean_return(train)
        own = dict(step_scalars)
        inner_s = t_adapt + own.pop("time/inner_s", 0.0)
        scalars = {
            "returns/pre_adapt": pre,
            "returns/post_adapt": post,
            "returns/post_minus_pre": post - pre,
            **{k: v for k, v in own.items() if not k.startswith("time/")},
            f"{learner.scalar_prefix}/rejected_steps": float(self.rejected_steps),
            "time/iteration_s": time.perf_counter() - t0,
            "time/sampling_s": sampling_s,
            "time/inner_s": inner_s,
            "time/outer_s": t_outer,
            **{k: v for k, v in own.items() if k.startswith("time/")},
            "time/env_steps_per_s": env_steps / max(sampling_s, 1e-9),
            "tasks/count": float(len(tasks)),
            "tasks/steps_per_episode": float(train.mask.sum((1,)).mean()),
            **learner.state_scalars(),
        }
        for k, v in self.sampler.stats().items():
            scalars[f"sampler/{k}"] = float(v)
        return IterationResult(iteration, scalars)

    def _count_rejection(self, iteration: int, rejected: bool) -> None:
        if not rejected:
            self.consecutive_rejections = 0
            return
        self.rejected_steps += 1
        self.consecutive_rejections += 1
        log.warning("iteration %d: non-finite episodes, loss, gradient or step; update rejected "
                    "(%d in a row)", iteration, self.consecutive_rejections)

    # -- the loop ----------------------------------------------------------------------
    def save_checkpoint(self, next_iteration: int) -> Path:
        state = {"iteration": next_iteration, "meta": self.learner.state_dict(), "config": to_yaml(self.cfg),
                 "rejected_steps": self.rejected_steps, "consecutive_rejections": self.consecutive_rejections}
        extra = self.learner.extra_state()
        if extra:  # state whose shapes change during the run (an ES search's history)
            state["extra"] = extra
        try:
            path = checkpoint.save(self.ckpt_dir, next_iteration, state)
            if self.pending_best is not None:  # beside it, the best iteration's parameters (if a new best came)
                checkpoint.save_best(self.ckpt_dir, self.pending_best)
                self.pending_best = None
            return path
        except OSError as e:
            raise TrainingError(f"cannot write checkpoint in {self.ckpt_dir}: {e.strerror or e}; "
                                "the previous checkpoint is intact") from None

    def _keep_best(self, iteration: int, started_from: dict[str, torch.Tensor], post: float) -> None:
        """Remember the meta-parameters iteration ``iteration`` started from (those its post-adaptation return
        ``post`` measured) when that return is the highest so far; the next checkpoint writes them as
        ``checkpoints/best.pt``."""
        if math.isfinite(post) and post > self.best_return:
            self.best_return = post
            self.pending_best = {"iteration": iteration, "meta": started_from, "config": to_yaml(self.cfg),
                                 "best_return": post}

    def train(self, on_iteration: Callable[[IterationResult], None] | None = None) -> list[IterationResult]:
        """Run from ``start_iteration`` to ``cfg.iterations``; returns the per-iteration results.

        From here on Ctrl-C and SIGTERM (within :func:`metarl.signals.handled`) raise an interrupt that writes
        a checkpoint at the last completed iteration and stops the workers before it propagates."""
        signals.begin_work()
        with wandb_mirror.mirror(self.cfg, self.run_dir, self.start_iteration):  # before the SummaryWriter
            return self._train(on_iteration)

    def _train(self, on_iteration: Callable[[IterationResult], None] | None) -> list[IterationResult]:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        results: list[IterationResult] = []
        with self._log_writes():
            # purge_step drops events a killed run logged after its last checkpoint.
            self.writer = SummaryWriter(str(self.run_dir), purge_step=self.start_iteration or None)
            csv_log = ScalarsCSV(self.run_dir, self.start_iteration)
            if self.start_iteration == 0:
                self.writer.add_text("config", "```yaml\n" + to_yaml(cfg) + "```", 0)
                self.writer.add_text("mode", mode_description(cfg), 0)
                table = "|key|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in flat_dict(to_dict(cfg)).items())
                self.writer.add_text("hyperparameters", table, 0)
                write_hparams(self.writer, cfg)
                tblog.write_layout(self.writer)  # the Custom Scalars tab: the headline first
            scalar_log = tblog.ScalarLog(self.writer)
            manifest.start(self.run_dir, env=cfg.env, device=self.device)
        status = "failed"
        iteration = self.start_iteration
        # What the iteration in flight started from (learner state, rejection counters); None between
        # iterations.  An interrupt inside one (after its outer step changed the parameters, say) rolls back
        # to it, so the checkpoint is the last completed iteration's state.
        at_start: tuple[dict[str, torch.Tensor], int, int, dict[str, torch.Tensor]] | None = None
        try:
            self.sampler = run.build_sampler(cfg, self.family, self.learner.policy)
            for iteration in range(self.start_iteration, cfg.iterations):
                signals.raise_swallowed()  # an interrupt lost in a finalizer during the previous iteration
                at_start = (self.learner.state_dict(), self.rejected_steps, self.consecutive_rejections,
                            self.learner.extra_state())
                res = self.run_iteration(iteration)
                # logging the row and counting the iteration happen together, or not at all
                with signals.deferred(), self._log_writes():
                    scalar_log.add(res.scalars, iteration)  # descriptions with each tag's first event
                    csv_log.append(iteration, res.scalars)
                    results.append(res)
                    started_from, at_start = at_start[0], None
                self._keep_best(iteration, started_from, res.scalars["returns/post_adapt"])
                if on_iteration is not None:
                    on_iteration(res)
                limit = cfg.algo.max_consecutive_rejections
                if self.consecutive_rejections >= limit:
                    self.writer.flush()
                    csv_log.flush()
                    path = self.save_checkpoint(iteration + 1)
                    raise TrainingError(
                        f"{limit} consecutive updates rejected for non-finite values (family {cfg.env.family}, "
                        f"iteration {iteration}: NaN or infinite observations, rewards, actions or losses); "
                        f"stopped with the last good parameters in {path}")
                if (iteration + 1) % cfg.log.checkpoint_every == 0 or iteration + 1 == cfg.iterations:
                    with self._log_writes():
                        self.writer.flush()
                        csv_log.flush()
                    self.save_checkpoint(iteration + 1)
            if cfg.iterations == self.start_iteration and checkpoint.latest(self.ckpt_dir) is None:
                self.save_checkpoint(self.start_iteration)
            signals.raise_swallowed()
            status = "finished"
        except KeyboardInterrupt:
            signals.delivered()
            status = "interrupted"
            done = self._roll_back(at_start, results, csv_log)
            log.warning("interrupted: checkpoint written at iteration %d", done)
            raise
        except RolloutError as e:  # the iteration in flight is lost, as on an interrupt; the run resumes
            done = self._roll_back(at_start, results, csv_log)
            raise TrainingError(f"{e} (iteration {iteration}); checkpoint written at iteration {done}, resume with: "
                                f"metarl train --resume {self.run_dir}") from None
        finally:
            try:
                if self.sampler is not None:
                    self.sampler.close()
            finally:  # a signal while the workers stop, or while the logs close, still leaves the manifest
                with signals.deferred():  # saying how the run ended; it is raised after the block
                    for close in (self.writer.close, csv_log.close, lambda: manifest.finish(self.run_dir, status)):
                        try:
                            close()
                        except OSError as e:  # a full disk: the error that stopped the run is already on its way
                            log.debug("closing the run's logs: %s", e)
        return results

    def _roll_back(self, at_start: Any, results: list[IterationResult], csv_log: ScalarsCSV) -> int:
        """After an interrupt or a failed rollout: undo what the iteration in flight had done (``at_start``, None
        between iterations), flush the logs and checkpoint the last completed iteration; returns it."""
        if at_start is not None:
            self.learner.load_state_dict(at_start[0])
            self.learner.load_extra_state(at_start[3])
            self.rejected_steps, self.consecutive_rejections = at_start[1], at_start[2]
        done = results[-1].iteration + 1 if results else self.start_iteration
        with self._log_writes():
            self.writer.flush()
            csv_log.flush()
        self.save_checkpoint(done)
        return done

    @contextlib.contextmanager
    def _log_writes(self) -> Iterator[None]:
        """TensorBoard, ``scalars.csv`` and manifest writes: a failed write (full disk) is a :class:`TrainingError`."""
        try:
            yield
        except OSError as e:
            raise TrainingError(f"cannot write logs in {self.run_dir}: {e.strerror or e}; "
                                "the previous checkpoint is intact") from None


HPARAM_METRICS = tblog.HPARAM_METRICS


def write_hparams(writer: Any, cfg: Config) -> None:
    """The config's flattened keys (the selected components' sections only) as TensorBoard hparams in the
    run directory itself (:func:`metarl.tblog.write_hparams`: booleans and strings as such)."""
    tblog.write_hparams(writer, flat_dict(to_dict(cfg)))
