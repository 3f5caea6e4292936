"""The config with its documentation: each key's docstring, read from the source.

A config field is documented by the string literal right below it (the
convention of :mod:`metarl.config` and of every component's ``Settings``).
:func:`attribute_docs` and :func:`field_doc` read those docstrings with
:mod:`ast`; :func:`commented_yaml` writes a config as YAML with each key's
docstring as a comment above it (``metarl config``, ``metarl train
--print-config``), and :func:`dotted_keys` lists its keys as ``--set`` spells
them.  ``docs/gen_reference.py`` builds the config reference from the same
readers.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from typing import Any

from metarl.config import Config, flat_dict, section_classes, to_dict


@functools.cache
def attribute_docs(cls: type) -> dict[str, tuple[str, str]]:
    """``{field: (annotation, docstring)}`` for the fields ``cls`` itself declares, read from its source.

    The docstring is the string literal right below the field; classes earlier in the MRO are read
    separately (:func:`field_doc`). A class without source (built in a REPL) gives ``{}``.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body
    out: dict[str, tuple[str, str]] = {}
    for node, after in zip(body, body[1:] + [None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                doc = inspect.cleandoc(after.value.value)
            out[node.target.id] = (ast.unparse(node.annotation), doc)
    return out


def field_doc(cls: type, name: str) -> tuple[str, str]:
    """``(annotation, docstring)`` of field ``name`` from the first class in ``cls``'s MRO declaring it."""
    for klass in cls.__mro__:
        docs = attribute_docs(klass)
        if name in docs:
            return docs[name]
    return "", ""


def _section_doc(cls: type) -> str:
    """A section class's own docstring (not the signature dataclasses make up), or ``""``."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(cls.__name__ + "(") else doc


def _yaml_value(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.splitlines()]


def commented_yaml(cfg: Config) -> str:
    """``cfg`` as YAML (:func:`metarl.config.to_dict`'s keys and order: the selected components' sections
    only), each key preceded by its docstring as comments; loading it back gives ``cfg``."""
    classes = section_classes()
    lines: list[str] = []
    for key, value in to_dict(cfg).items():
        if isinstance(value, dict) and key in classes:
            cls = classes[key]
            doc = _section_doc(cls) or field_doc(Config, key)[1]
            if lines:
                lines.append("")
            lines += _comment(doc, "")
            lines.append(f"{key}:")
            for name, v in value.items():
                lines += _comment(field_doc(cls, name)[1], "  ")
                lines.append(f"  {name}: {_yaml_value(v)}")
        else:
            lines += _comment(field_doc(Config, key)[1], "")
            lines.append(f"{key}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def dotted_keys(cfg: Config) -> list[tuple[str, Any]]:
    """``[(key, value)]``: every key of ``cfg`` as ``--set`` spells it (``algo.inner_lr``), in written order."""
    return list(flat_dict(to_dict(cfg)).items())


def key_value(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` reads it back (the value as a YAML flow scalar)."""
    return f"{key}={_yaml_value(value)}"


__all__ = ["attribute_docs", "commented_yaml", "dotted_keys", "field_doc", "key_value"]
