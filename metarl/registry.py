"""What the registries of pluggable kinds share: adding a checked entry."""

from __future__ import annotations

from typing import Any


def register(registry: dict[str, Any], name: str, entry: Any, base: type, what: str) -> None:
    """Add ``entry``, a subclass of ``base``, to ``registry`` under ``name`` (a :class:`TypeError` naming
    ``what`` otherwise); a name already taken is replaced, so a ``--module`` file can override an entry."""
    if not (isinstance(entry, type) and issubclass(entry, base)):
        raise TypeError(f"{what} {name!r} must be a {base.__name__} subclass, got {entry!r}")
    registry[name] = entry
