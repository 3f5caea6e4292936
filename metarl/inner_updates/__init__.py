"""Inner-update rules: one contract (:class:`~metarl.inner_updates.base.InnerUpdate`), one registry.

``algo.inner_update`` selects an entry of :data:`INNER_UPDATES`. Adding a
rule is one new file (an ``InnerUpdate`` subclass, with a ``Settings``
dataclass if it has settings of its own) plus one line here, or
``register_inner_update("name", MyRule)`` in a file passed to ``--module``.
"""

from __future__ import annotations

from metarl.inner_updates.base import InnerUpdate, StepSize, apply_step
from metarl.inner_updates.blur import BLUR
from metarl.inner_updates.kronecker import Kronecker, KroneckerStep
from metarl.inner_updates.lstm import LSTMOptimizer
from metarl.inner_updates.meta_sgd import MetaSGD
from metarl.inner_updates.sgd import SGD
from metarl.registry import register

INNER_UPDATES: dict[str, type[InnerUpdate]] = {
    "sgd": SGD,
    "meta_sgd": MetaSGD,
    "kronecker": Kronecker,
    "lstm": LSTMOptimizer,
    "blur": BLUR,
}


def register_inner_update(name: str, rule: type[InnerUpdate]) -> None:
    """Add ``rule`` under ``name`` (what ``algo.inner_update`` selects)."""
    register(INNER_UPDATES, name, rule, InnerUpdate, "inner update")


__all__ = ["BLUR", "INNER_UPDATES", "SGD", "InnerUpdate", "Kronecker", "KroneckerStep", "LSTMOptimizer", "MetaSGD",
           "StepSize", "apply_step", "register_inner_update"]
