"""Outer-loop algorithms: one meta-learner contract, one registry.

``algo.name`` in the config selects an entry of :data:`ALGOS`; the run
builds it with ``ALGOS[name].from_config(cfg, policy, adapt_names)``.  An
entry is a :class:`~metarl.algos.base.MetaLearner` subclass.  Adding an
outer loop is one new file (the subclass and its ``step``) plus one line
here (or ``ALGOS["name"] = MyLearner`` in a file passed to ``--module``).
"""

from __future__ import annotations

from metarl.algos.base import MetaLearner, StepResult
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.algos.proximal import MAMLPPO, ProMP

ALGOS: dict[str, type[MetaLearner]] = {
    "maml_trpo": MAMLTRPO,
    "promp": ProMP,
    "maml_ppo": MAMLPPO,
}

__all__ = ["ALGOS", "MAMLPPO", "MAMLTRPO", "MetaLearner", "ProMP", "StepResult"]
