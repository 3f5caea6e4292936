"""Bounds on untrusted input: YAML that cannot explode, limits on sizes, env kwargs against constructors.

Conventions (every check raises :class:`ValueError` with one line naming
the offending key or value; :mod:`metarl.config` turns it into a
:class:`metarl.config.ConfigError`):

* YAML is read with :class:`Loader`, a ``yaml.SafeLoader`` that also reads
  ``1e-3`` as a number (YAML 1.2; YAML 1.1 needs a dot);
* a loaded tree (file plus ``--set`` overrides) holds at most
  :data:`MAX_NODES` values once aliases are expanded, nests at most
  :data:`MAX_DEPTH` levels and has no string containing a null byte
  (:func:`check_tree`); files are at most :data:`MAX_CONFIG_BYTES`; a key given twice in
  one mapping is refused, naming it and both lines (:class:`DuplicateKeyError`);
* ``env.kwargs`` must name parameters of the family's constructor (or of a
  base class it forwards ``**kwargs`` to) and match the type of their
  defaults; NaN is never accepted (:func:`check_env_kwargs`).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


class DuplicateKeyError(ValueError):
    """A YAML mapping that gives one key twice (the message names the key and both lines)."""


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves ``1e-3`` and ``2E5`` as floats."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        """``SafeLoader.construct_mapping`` refusing a key given twice (PyYAML would keep the last one silently)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(f"duplicate key {short_repr(key, 60)} at lines {seen[key]} and {line}")
                seen[key] = line
            except TypeError:  # unhashable: the base class says so
                continue
        return super().construct_mapping(node, deep=deep)


_FLOAT_NO_DOT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_NO_DOT, list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse ``text`` with :class:`Loader`; raises ``yaml.YAMLError`` or ``ValueError`` (too deep)."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - Loader is a SafeLoader
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None


def check_tree(data: Any, where: str) -> None:
    """Bound the expanded size and depth of a loaded YAML tree; refuse null bytes in strings.

    Messages name ``where`` (the file) and the dotted key of the offending value.
    """
    budget = MAX_NODES
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, key = stack.pop()
        budget -= 1
        if budget < 0:
            raise ValueError(f"{where}: more than {MAX_NODES} values once YAML aliases are expanded")
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: {key or 'the top level'} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for k, v in value.items():
                child = f"{key}.{k}" if key else str(k)
                stack += [(k, depth + 1, child), (v, depth + 1, child)]
        elif isinstance(value, list | tuple):
            stack += [(v, depth + 1, f"{key}[{i}]") for i, v in enumerate(value)]
        elif isinstance(value, str) and "\x00" in value:
            raise ValueError(f"{key or where}: a string contains a null byte: {value[:40]!r}")


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (error messages stay one short line)."""
    text = repr(value) if isinstance(value, str) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- env kwargs -------------------------------------------------------------------

def constructor_parameters(env_cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword parameters of ``env_cls`` and of the bases its ``**kwargs`` reach; and whether any are open.

    The second value is True when the last constructor in the chain still
    takes ``**kwargs`` (the set of names is then not known).
    """
    params: dict[str, inspect.Parameter] = {}
    for cls in env_cls.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            return params, True
        open_ended = False
        for name, p in sig.parameters.items():
            if name in ("self", "task"):
                continue
            if p.kind is p.VAR_KEYWORD:
                open_ended = True
            elif p.kind is not p.VAR_POSITIONAL:
                params.setdefault(name, p)
        if not open_ended:
            return params, False
        if cls is object:
            break
    return params, True


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_error(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot stand for a parameter whose default is ``default`` (None: it can)."""
    if _number(value) and math.isnan(value):
        return "NaN is not a valid value"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if _number(default):
        return None if _number(value) else "expected a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "expected a string"
    if isinstance(default, Sequence) and default and all(_number(d) for d in default):
        if not isinstance(value, list | tuple) or not all(_number(v) for v in value):
            return "expected a list of numbers"
        if any(math.isnan(v) for v in value):
            return "NaN is not a valid value"
        if len(value) != len(default):
            return f"expected {len(default)} numbers"
    return None


def check_env_kwargs(env_cls: type, kwargs: dict[str, Any], family: str) -> None:
    """``kwargs`` against ``env_cls``'s constructor chain: known names, the defaults' types, no NaN."""
    params, open_ended = constructor_parameters(env_cls)
    for key, value in kwargs.items():
        full = f"env.kwargs.{key}"
        if not isinstance(key, str):
            raise ValueError(f"{full}: keys must be names")
        if key not in params:
            if open_ended:
                continue
            known = ", ".join(sorted(params)) or "none"
            raise ValueError(f"{full}: {family} takes no parameter {key!r} (it takes: {known})")
        default = params[key].default
        why = _type_error(default if default is not inspect.Parameter.empty else None, value)
        if why is None and isinstance(value, list | tuple):
            why = next(("NaN is not a valid value" for v in value if _number(v) and math.isnan(v)), None)
        if why is not None:
            raise ValueError(f"{full}: {why}, got {short_repr(value)}")
