"""A one-file evaluation: the mean pre-adaptation return on a few held-out tasks, with one setting.

Registers itself as ``toy``; ``metarl evaluate RUN --module tests/algos/toy_eval.py --protocol toy``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from metarl.evaluations import Evaluated, Evaluation, register_evaluation
from metarl.run import build_sampler, held_out_tasks, mean_return


@dataclass
class ToyEvalSettings:
    tasks: int = 3
    """Held-out tasks."""
    seed: int = 0
    """Seed of the tasks and rollouts."""


class ToyEval(Evaluation):
    Settings = ToyEvalSettings

    def run(self, rd, loaded, settings, out, report, best=False):
        cfg, family, learner, iteration = loaded
        tasks = held_out_tasks(family, settings.tasks, settings.seed)
        with build_sampler(cfg, family, learner.policy) as sampler:
            batch = sampler.sample(tasks, learner.policy.params(), 2, settings.seed)
        result = {"return_pre": mean_return(batch), "tasks": settings.tasks, "iteration": iteration}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result))
        return Evaluated(result, {"json": out}, [f"return before adaptation {result['return_pre']:.2f}"])


register_evaluation("toy", ToyEval)
