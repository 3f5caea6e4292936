"""``sgd``: the plain gradient step ``W' = W - alpha g`` (MAML); nothing learned."""

from __future__ import annotations

from metarl.inner_updates.base import InnerUpdate


class SGD(InnerUpdate):
    """``W' = W - inner_lr * g``."""
