"""The inner-update contract: what the rest of the suite needs from a rule.

An inner-update rule turns the inner loss's gradient ``g`` of an adapted
parameter ``W`` into the step subtracted from it, ``W' = W - step(W, g)``.
A rule is an :class:`InnerUpdate` subclass registered in
:data:`metarl.inner_updates.INNER_UPDATES` under the name ``algo.inner_update``
selects. It declares:

* ``Settings`` (optional): a dataclass of its own settings, a docstring under
  each field, read from the config section ``section`` (the rule's name by
  default), so ``--set <section>.<key>=v`` reaches them;
* its **meta-parameters** (:meth:`InnerUpdate.init_params`): learned tensors
  (detached leaves) by name; the learner stores them as
  ``<prefix><name>`` beside the policy's, the outer loop differentiates
  through them and checkpoints hold them;
* the **step** (:meth:`InnerUpdate.step`): given those tensors (with their
  graph, or constants), a :data:`StepSize`; the inner loop applies it with
  :func:`apply_step`;
* its **scalars** (:meth:`InnerUpdate.scalars`), logged every iteration;
* a rule that needs more than the gradient (BLUR: the layers' states) returns
  from :meth:`InnerUpdate.step` an object with a method ``inner_step(policy,
  fast, batch, advantages, names, create_graph, reference_logp) -> fast``
  that takes each whole inner step itself;
* whether the outer step's Gauss-Newton curvature (:mod:`metarl.algos.curvature`)
  covers it (``gauss_newton``); when it does not, the outer step uses the
  double-backward product, exact for any rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor

StepSize = float | Mapping[str, Tensor] | Callable[[str, Tensor], Tensor]
"""What one inner step uses: a scalar step size, per-entry step sizes by parameter name, or a callable
``(name, grad) -> step`` (any rule)."""


def apply_step(lr: StepSize, name: str, grad: Tensor) -> Tensor:
    """What one inner step subtracts from parameter ``name`` given its gradient (any shape, stacked per task)."""
    if isinstance(lr, Mapping):
        return lr[name] * grad
    if callable(lr):
        return lr(name, grad)
    return lr * grad


class InnerUpdate:
    """An inner-update rule (see the module docstring). ``inner_lr``: ``algo.inner_lr``; ``settings``: an
    instance of :attr:`Settings` (None for a rule without settings)."""

    Settings: ClassVar[type | None] = None
    """Dataclass of the rule's own settings (config section :attr:`section`), or None."""
    section: ClassVar[str | None] = None
    """The config section of :attr:`Settings` (None: the rule's registered name)."""
    prefix: ClassVar[str] = ""
    """Name prefix of the rule's meta-parameters in the learner (and its checkpoints), e.g. ``inner_lr/``."""
    learned: ClassVar[bool] = False
    """Whether the rule has meta-parameters of its own (:meth:`init_params` returns some)."""
    gauss_newton: ClassVar[bool] = True
    """Whether the Gauss-Newton curvature of the outer step covers this rule (its :meth:`step` is a float or
    a per-entry mapping, and :meth:`init_params` are per-entry step sizes when non-empty)."""

    def __init__(self, inner_lr: float, settings: Any = None):
        self.inner_lr = float(inner_lr)
        self.settings = settings if settings is not None or self.Settings is None else self.Settings()

    def init_params(self, params: Mapping[str, Tensor], names: Sequence[str]) -> dict[str, Tensor]:
        """The rule's meta-parameters at initialisation, for the adapted parameters ``names`` of the
        policy's ``params`` (detached leaves that require grad). None by default."""
        return {}

    def step(self, learned: Mapping[str, Tensor]) -> StepSize:
        """The step rule built from the meta-parameters ``learned`` (names without :attr:`prefix`)."""
        return self.inner_lr

    def constant_step(self, learned: Mapping[str, Tensor], params: Mapping[str, Tensor],
                      names: Sequence[str]) -> StepSize:
        """The step rule with constant (detached) meta-parameters, covering ``names`` (test-time adaptation:
        a parameter the rule has not learned takes the plain step ``inner_lr``)."""
        return self.step({k: v.detach() for k, v in learned.items()})

    def scalars(self, learned: Mapping[str, Tensor]) -> dict[str, float]:
        """Scalars describing the learned tensors, logged every iteration (none by default)."""
        return {}

    def describe(self) -> str:
        """The rule in a few words, for the run's mode text."""
        return f"inner lr {self.inner_lr}"

    @classmethod
    def validate(cls, settings: Any, need: Callable[[bool, str, Any, str], None]) -> None:
        """Range checks of :attr:`Settings`: ``need(ok, key, value, what)`` (the key without the section)."""
