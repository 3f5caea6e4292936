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
    except Exception as e:  # noqa: BLE001 - a user's file: one line naming it and the error
        sys.modules.pop(name, None)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModuleImportError(f"{what} {path!r} failed to import: {type(e).__name__}: {first[:200]}") from None
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module
