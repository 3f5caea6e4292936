"""Where an interrupt lands: signals.deferred holds it to the end of a block, and the trainer's
checkpoint on interrupt is always a state some iteration boundary had."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from metarl import signals


def _never(signum: int) -> None:  # the start-up callback; work has begun in these tests
    raise AssertionError(f"early callback called for signal {signum}")


@pytest.mark.parametrize("signum,raised", [(signal.SIGTERM, signals.Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_inside_deferred_is_raised_after_the_whole_block(signum, raised):
    done = []
    with signals.handled(_never):
        signals.begin_work()
        with pytest.raises(raised):
            with signals.deferred():
                os.kill(os.getpid(), signum)
                for _ in range(1000):  # the handler has certainly run by now
                    pass
                done.append("row")
                done.append("count")
            done.append("after")  # not reached: the interrupt comes at the block's end
    assert done == ["row", "count"]


def test_without_deferred_the_signal_interrupts_at_once():
    done = []
    with signals.handled(_never):
        signals.begin_work()
        with pytest.raises(signals.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            done.append("row")
    assert done == []


def test_an_error_inside_deferred_propagates_and_drops_the_held_signal():
    with signals.handled(_never):
        signals.begin_work()
        with pytest.raises(OSError):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
                raise OSError("disk full")
        with signals.deferred():  # nothing left pending
            pass


def test_sigterm_right_after_an_iterations_row_counts_that_iteration(tmp_path, monkeypatch):
    # SIGTERM lands just as iteration 1's row reaches scalars.csv: the checkpoint must be at 2, the
    # rows logged, so that a resume neither repeats nor skips an iteration
    from metarl import checkpoint
    from metarl.scalars import ScalarsCSV
    from metarl.trainer import Trainer
    from tests.test_core_training import small_config

    append = ScalarsCSV.append

    def append_then_terminate(self, iteration, scalars):
        append(self, iteration, scalars)
        if iteration == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass

    monkeypatch.setattr(ScalarsCSV, "append", append_then_terminate)
    trainer = Trainer(small_config(iterations=5, extra=["log.checkpoint_every=100"]), tmp_path)
    with signals.handled(_never), pytest.raises(signals.Terminated):
        trainer.train()
    rows = (tmp_path / "scalars.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1]
    assert checkpoint.latest(trainer.ckpt_dir).name == "iter_000002.pt"


def test_sigterm_after_the_outer_step_changed_the_parameters_checkpoints_the_iterations_start(tmp_path,
                                                                                              monkeypatch):
    # SIGTERM inside iteration 1, after its outer step has updated the parameters in place: the
    # checkpoint at 1 must hold the parameters iteration 1 started from (those of a 1-iteration run)
    from metarl import checkpoint
    from metarl.trainer import Trainer
    from tests.test_core_training import small_config

    reference = Trainer(small_config(iterations=1, extra=["log.checkpoint_every=100"]), tmp_path / "ref")
    reference.train()
    want = reference.learner.state_dict()

    trainer = Trainer(small_config(iterations=5, extra=["log.checkpoint_every=100"]), tmp_path / "run")
    step = trainer.learner.step
    calls, after_step = [], {}

    def step_then_terminate(*args, **kwargs):
        out = step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # iteration 1's outer step is done and applied
            after_step.update(trainer.learner.state_dict())
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        return out

    monkeypatch.setattr(trainer.learner, "step", step_then_terminate)
    with signals.handled(_never), pytest.raises(signals.Terminated):
        trainer.train()
    assert len(calls) == 2
    # the parameters had moved when the signal came (the trainer has rolled them back since)
    assert not all(torch.equal(a, b) for a, b in zip(after_step.values(), want.values()))
    latest = checkpoint.latest(trainer.ckpt_dir)
    assert latest.name == "iter_000001.pt"
    got = checkpoint.load(latest)["meta"]
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


def _sigterm_inside_a_finalizer(reached: list[str]) -> None:
    """The garbage collector runs a weakref finalizer just as SIGTERM lands: the interrupt is raised inside the
    finalizer, printed as "Exception ignored" and lost.  ``reached`` stays empty if it was raised there."""
    import gc
    import weakref

    class Garbage:
        pass

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here and raises inside the finalizer
            pass
        reached.append("not reached")

    garbage = Garbage()
    weakref.finalize(garbage, terminate)
    del garbage
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the finalizer's lost interrupt
@pytest.mark.parametrize("last", [False, True])
def test_sigterm_swallowed_by_a_finalizer_still_stops_the_run_at_the_next_boundary(tmp_path, monkeypatch, last):
    # The interrupt is lost in a finalizer during an iteration.  The run must still stop, at the next iteration
    # boundary (or at its end, when it was the last iteration), with a checkpoint at the iterations done.
    from metarl import checkpoint
    from metarl.trainer import Trainer
    from tests.test_core_training import small_config

    trainer = Trainer(small_config(iterations=3, extra=["log.checkpoint_every=100"]), tmp_path)
    step = trainer.learner.step
    calls, finalized = [], []


    def step_with_a_finalizer(*args, **kwargs):
        out = step(*args, **kwargs)
        calls.append(1)
        if len(calls) == (3 if last else 2):
            _sigterm_inside_a_finalizer(finalized)
        return out

    monkeypatch.setattr(trainer.learner, "step", step_with_a_finalizer)
    with signals.handled(_never), pytest.raises(signals.Terminated):
        trainer.train()
    assert finalized == []  # the interrupt was raised inside the finalizer (and swallowed there)
    assert len(calls) == (3 if last else 2)  # no iteration after the one the signal landed in
    assert checkpoint.latest(trainer.ckpt_dir).name == ("iter_000003.pt" if last else "iter_000002.pt")
    rows = (tmp_path / "scalars.csv").read_text().splitlines()[1:]
    assert len(rows) == len(calls)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_swallowed_between_two_runs_of_one_process_stops_the_next_run_at_its_start(tmp_path):
    # reproduce.py trains and evaluates several runs under one signal scope: an interrupt lost while the first
    # run is evaluated must stop the second before its first iteration, not be forgotten when it starts
    from metarl import checkpoint
    from metarl.trainer import Trainer
    from tests.test_core_training import small_config

    first = Trainer(small_config(iterations=1, extra=["log.checkpoint_every=100"]), tmp_path / "first")
    second = Trainer(small_config(iterations=3, extra=["log.checkpoint_every=100"]), tmp_path / "second")
    reached: list[str] = []
    with signals.handled(_never):
        first.train()
        _sigterm_inside_a_finalizer(reached)  # "evaluating" the first run
        with pytest.raises(signals.Terminated):
            second.train()
        second_again = Trainer(small_config(iterations=1, extra=["log.checkpoint_every=100"]), tmp_path / "third")
        second_again.train()  # the interrupt was delivered: the next run trains
    assert reached == []
    assert len((tmp_path / "second" / "scalars.csv").read_text().splitlines()) <= 1  # no iteration's row
    assert checkpoint.latest(second.ckpt_dir).name == "iter_000000.pt"
    assert checkpoint.latest(second_again.ckpt_dir).name == "iter_000001.pt"


@pytest.mark.parametrize("where", ["sampler", "writer"])
def test_sigterm_while_a_finished_run_shuts_down_leaves_the_manifest_finished(tmp_path, monkeypatch, where):
    # the last iteration is checkpointed; SIGTERM lands while the workers stop or the TensorBoard writer
    # closes: the signal still ends the process (Terminated), and the manifest says "finished", not "running"
    import json

    from torch.utils.tensorboard import SummaryWriter

    from metarl import checkpoint, run
    from metarl.trainer import Trainer
    from tests.test_core_training import small_config

    def terminate_inside(original):
        def wrapped(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            return original(*args, **kwargs)
        return wrapped

    trainer = Trainer(small_config(iterations=2), tmp_path)
    if where == "sampler":
        build = run.build_sampler

        def build_then_patch(*args, **kwargs):
            sampler = build(*args, **kwargs)
            sampler.close = terminate_inside(sampler.close)
            return sampler

        monkeypatch.setattr(run, "build_sampler", build_then_patch)
    else:
        monkeypatch.setattr(SummaryWriter, "close", terminate_inside(SummaryWriter.close))
    with signals.handled(_never), pytest.raises(signals.Terminated):
        trainer.train()
    assert checkpoint.latest(trainer.ckpt_dir).name == "iter_000002.pt"
    status = json.loads((tmp_path / "manifest.json").read_text())
    assert status["status"] == "finished", status
