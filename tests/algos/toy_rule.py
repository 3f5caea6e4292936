"""A one-file inner-update rule: the plain gradient step, scaled.

Registers itself as ``algo.inner_update: toy``; pass this file to
``metarl train --module``.  Its one setting, ``toy.scale``, lives in its own
config section: the step is ``W' = W - scale * inner_lr * g``.
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.inner_updates import InnerUpdate, register_inner_update


@dataclass
class ToySettings:
    scale: float = 1.0
    """Multiplies the plain step ``inner_lr * g``."""

    def validate(self, need) -> None:
        need(self.scale > 0, "scale", self.scale, "must be > 0")


class ToyRule(InnerUpdate):
    Settings = ToySettings
    section = "toy"

    def step(self, learned):
        return self.settings.scale * self.inner_lr

    def describe(self) -> str:
        return f"toy rule, step {self.settings.scale} x {self.inner_lr}"


register_inner_update("toy", ToyRule)
