"""User files imported with ``--module``: one task family, outer loop or other component per file.

A file is imported under the name ``metarl_user_<stem>`` and its classes are
pickled by value, so worker processes (local or Ray) need not import it.  The
same file is not imported twice in one process (a run's recorded modules and
the same ``--module`` on the command line register once).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

PREFIX = "metarl_user_"


class ModuleImportError(ValueError):
    """A user file that is missing, not Python, or fails to import (one line naming it)."""


def module_name(path: str | Path) -> str:
    """The name a user file is imported under: ``metarl_user_<stem>``."""
    return PREFIX + Path(path).stem


def describe(value: object, limit: int = 200) -> str:
    """The first line of ``str(value)``, cut to ``limit`` characters; an object whose ``__str__`` raises (a user's
    exception can) is named by its type instead."""
    try:
        text = str(value).strip()
    except Exception:  # noqa: BLE001 - whatever a user's __str__ raises
        return f"<{type(value).__name__} that cannot be printed>"
    return text.splitlines()[0][:limit] if text else ""


def import_file(path: str | Path, what: str = "--module") -> ModuleType:
    """Import the Python file ``path`` (once per name); errors name ``what`` and the file in one line."""
    path = str(path)
    if not os.path.isfile(path):
        raise ModuleImportError(f"{what}: no such file {path!r}")
    if not path.endswith(".py"):
        raise ModuleImportError(f"{what}: {path!r} is not a Python file (.py)")
    name = module_name(path)
    known = sys.modules.get(name)
    if known is not None and os.path.realpath(getattr(known, "__file__", "") or "") == os.path.realpath(path):
        return known
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleImportError(f"{what}: cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as e:  # sys.exit() in a user's file would end the command silently
        sys.modules.pop(name, None)
        raise ModuleImportError(f"{what} {path!r} called sys.exit({describe(e.code, 40)}) while importing") from None
    except Exception as e:  # noqa: BLE001 - a user's file: one line naming it and the error
        sys.modules.pop(name, None)
        raise ModuleImportError(f"{what} {path!r} failed to import: {type(e).__name__}: {describe(e)}") from None
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module
