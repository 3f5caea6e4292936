"""Dataclasses for tests/test_docs.py: a config tree shaped like ``metarl.config.Config``, with a new section."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BaseSettings:
    rate: float = 0.5
    """Inherited from the base settings, docstring and all."""


@dataclass
class Deeper:
    flag: bool | None = None


@dataclass
class NewSection(BaseSettings):
    names: list[str] = field(default_factory=lambda: ["a", "b"])
    """A list default,
    over two lines."""
    deeper: Deeper = field(default_factory=Deeper)


@dataclass
class Outer:
    top: int = 3
    """A top-level key."""
    new: NewSection = field(default_factory=NewSection)
