"""Resuming restores the whole training state, not only the policy weights.

For Meta-SGD (learned step sizes), ANIL (``policy.adapt: head``) and a run
whose updates are sometimes rejected for non-finite rewards, a run stopped
after K iterations and resumed to N must match the uninterrupted run: the
same parameters, step sizes, rejection counters and logged scalars, right
after resuming and at the end.
"""

from __future__ import annotations

import math

import pytest
import torch

import envs
from envs.navigation import Navigation2DEnv
from metarl.algos.base import LR_PREFIX
from metarl.config import load_config
from metarl.trainer import Trainer


class SometimesNaNNavigation(Navigation2DEnv):
    """Navigation2D whose reward is NaN when the goal's x exceeds 0.3 (fault injection)."""

    batched = None  # the loop-over-envs path, so the fault reaches the sampler as is

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        if self._goal[0] > 0.3:
            reward = float("nan")
        return obs, reward, term, trunc, info


envs.register_family("ResumeNaNNavigation", SometimesNaNNavigation, horizon=15)

BASE = ["algo.meta_batch_size=3", "algo.episodes_per_task=3", "env.horizon=15", "policy.hidden_sizes=[8]",
        "sampler.backend=serial", "log.checkpoint_every=1", "algo.inner_lr=0.3"]
CASES = {
    "meta_sgd": ["algo.learn_inner_lr=true"],
    "anil": ["policy.adapt=head"],
    "rejections": ["env.family=ResumeNaNNavigation", "algo.learn_inner_lr=true",
                   "trpo.max_consecutive_rejections=10"],
}
K, N = 2, 4


def state_of(trainer: Trainer) -> dict:
    return {
        "meta": {k: v.detach().clone() for k, v in trainer.learner.meta_params().items()},
        "rejected_steps": trainer.rejected_steps,
        "consecutive_rejections": trainer.consecutive_rejections,
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["meta"].keys() == b["meta"].keys()
    for k in a["meta"]:
        assert torch.equal(a["meta"][k], b["meta"][k]), k
    assert (a["rejected_steps"], a["consecutive_rejections"]) == (b["rejected_steps"], b["consecutive_rejections"])


TIMINGS = ("time/", "sampler/last_call_s", "sampler/utilisation")  # wall-clock figures, not state


def same_scalars(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = [k for k in a if not k.startswith(TIMINGS)]
    return keys == [k for k in b if not k.startswith(TIMINGS)] and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in keys)


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_restores_parameters_step_sizes_and_counters(tmp_path, case):
    sets = BASE + CASES[case]
    straight = tmp_path / "straight"
    straight.mkdir()
    trainer = Trainer(load_config(None, sets + [f"iterations={N}"]), straight)
    states: list[dict] = []
    results = trainer.train(on_iteration=lambda _res: states.append(state_of(trainer)))
    assert len(states) == N

    # what makes the case a test of more than the weights
    at_k = states[K - 1]
    if "algo.learn_inner_lr=true" in sets:
        lrs = [v for k, v in at_k["meta"].items() if k.startswith(LR_PREFIX)]
        assert lrs and any(not torch.allclose(v, torch.full_like(v, 0.3)) for v in lrs), "step sizes never moved"
    if case == "anil":
        assert trainer.learner.adapt_names == ["head.weight", "head.bias"]
    if case == "rejections":
        rejected = [r.scalars["trpo/rejected_steps"] for r in results]
        assert at_k["consecutive_rejections"] > 0 and 0 < rejected[-1] < N, rejected

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    first = Trainer(load_config(None, sets + [f"iterations={K}"]), resumed_dir)
    first.train()
    resumed = Trainer(load_config(None, sets + [f"iterations={N}"]), resumed_dir, resume=True)
    assert resumed.start_iteration == K
    assert_same_state(state_of(resumed), at_k)  # right after loading the checkpoint
    tail = resumed.train()
    assert_same_state(state_of(resumed), states[-1])
    assert [r.iteration for r in tail] == list(range(K, N))
    for a, b in zip(tail, results[K:]):
        assert same_scalars(a.scalars, b.scalars), a.iteration
