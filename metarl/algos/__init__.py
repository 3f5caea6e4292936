"""Outer-loop algorithms: one meta-learner contract, one registry.

``algo.name`` in the config selects an entry of :data:`ALGOS`; the run
builds it with ``ALGOS[name].from_config(cfg, policy, adapt_names)``.  An
entry is a :class:`~metarl.algos.base.MetaLearner` subclass.  Adding an
outer loop is one new file (the subclass and its ``step``) plus one line
here (or ``register_algo("name", MyLearner)`` in a file passed to
``--module``).  Settings of its own: a ``Settings`` dataclass (a docstring
under each field, an optional ``validate(need)``), the class attributes
``Settings`` and ``section``, and a field named like the section holding
them; ``--set <section>.<key>=v`` then reaches them.
"""

from __future__ import annotations

from metarl.algos.base import MetaLearner, Rollouts, StepResult
from metarl.algos.es import ESLearner
from metarl.algos.maml_trpo import MAMLTRPO
from metarl.algos.proximal import MAMLPPO, ProMP
from metarl.algos.rl2 import RL2Learner
from metarl.registry import register

ALGOS: dict[str, type[MetaLearner]] = {
    "maml_trpo": MAMLTRPO,
    "promp": ProMP,
    "maml_ppo": MAMLPPO,
    "es": ESLearner,
    "rl2": RL2Learner,
}


def register_algo(name: str, learner: type[MetaLearner]) -> None:
    """Add the outer loop ``learner`` under ``name`` (what ``algo.name`` selects)."""
    register(ALGOS, name, learner, MetaLearner, "outer loop")


__all__ = ["ALGOS", "ESLearner", "MAMLPPO", "MAMLTRPO", "MetaLearner", "ProMP", "RL2Learner", "Rollouts", "StepResult",
           "register_algo"]
