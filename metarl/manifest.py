"""``manifest.json``: which code, versions and machine produced a run.

Written atomically when training starts (``status: running``) and rewritten
when it ends (``status`` finished / interrupted / failed, ``end_time``).  A
resumed run appends a new entry to ``sessions`` rather than overwriting the
first one, so the manifest records every machine and commit a run saw.

Fields: ``versions`` (python, torch, numpy, mujoco, gymnasium, ray,
metaworld; null when not installed), ``git`` (commit and dirty flag of the
checkout the code was imported from, or null outside a checkout),
``command`` (argv), ``hostname``, ``cpu_count``, ``start_time``,
``end_time`` (ISO 8601, UTC); ``family`` (the task family's name and what
its tasks depend on, e.g. Meta-World's package and reward-function versions
and benchmark seed; from the run's config; null when the family declares
nothing).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from metarl.fileio import atomic_write, read_json

FILENAME = "manifest.json"
PACKAGES = ("torch", "numpy", "mujoco", "gymnasium", "ray", "metaworld")
_CODE_ROOT = Path(__file__).resolve().parents[1]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str | None]:
    """Installed versions of python and the packages a run depends on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: Path = _CODE_ROOT) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout holding this code, or None outside one."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def family_provenance(env: Any) -> dict[str, Any] | None:
    """``{"name", **provenance}`` of the family of a run's ``env`` config section, or None.

    Families declare provenance with a ``provenance(**kwargs)`` classmethod on
    their env class (the Meta-World families do); others give None.
    """
    import envs  # noqa: F401  (registers the families)
    from envs.base import family_class, family_names

    name = str(env.family)
    cls = family_class(name) if name in family_names() else None
    provenance = getattr(cls, "provenance", None)
    if not callable(provenance):
        return None
    return {"name": name, **provenance(**(env.kwargs or {}))}


def device_record(device: Any) -> str | None:
    """The learner's device as the manifest records it: ``cpu``, or ``cuda:N (the card's name)``."""
    if device is None:
        return None
    text = str(device)
    if text.startswith("cuda"):
        import torch

        text += f" ({torch.cuda.get_device_name(device)})"
    return text


def session(argv: list[str] | None = None, env: Any = None, device: Any = None) -> dict[str, Any]:
    return {
        "versions": versions(),
        "family": family_provenance(env) if env is not None else None,
        "git": git_state(),
        "command": list(sys.argv if argv is None else argv),
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "device": device_record(device),
        "start_time": _now(),
        "end_time": None,
        "status": "running",
    }


def read(run_dir: Path) -> dict[str, Any] | None:
    data = read_json(Path(run_dir) / FILENAME)
    return data if isinstance(data, dict) and isinstance(data.get("sessions"), list) else None


def check(run_dir: Path) -> None:
    """Refuse (``ValueError``, one line) a ``manifest.json`` that is not one: not a regular file, not JSON, or
    not ``{"sessions": [{...}, ...], ...}`` with mappings where a session's fields are."""
    path = Path(run_dir) / FILENAME
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    data = read_json(path)
    sessions = data.get("sessions") if isinstance(data, dict) else None
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise ValueError(f"{path}: not a manifest (expected {{\"sessions\": [{{...}}, ...]}})")
    for where in (data, *sessions):
        if not isinstance(where.get("versions", {}), dict | type(None)):
            raise ValueError(f"{path}: not a manifest (its versions are not a mapping)")


def start(run_dir: Path, argv: list[str] | None = None, env: Any = None, device: Any = None) -> dict[str, Any]:
    """Record a new training session in ``RUN_DIR/manifest.json`` (``env``: the run's ``env`` config
    section, for the family's provenance; ``device``: the learner's device, the one ``device: auto`` chose);
    returns the manifest."""
    data = read(run_dir) or {"sessions": []}
    data["sessions"].append(session(argv, env, device))
    data.update(data["sessions"][-1])  # the top level mirrors the newest session
    atomic_write(Path(run_dir) / FILENAME, json.dumps(data, indent=1) + "\n")
    return data


def finish(run_dir: Path, status: str) -> None:
    """Stamp the newest session's end time and ``status``."""
    data = read(run_dir)
    if data is None or not data["sessions"]:
        return
    data["sessions"][-1].update(end_time=_now(), status=status)
    data.update(data["sessions"][-1])
    atomic_write(Path(run_dir) / FILENAME, json.dumps(data, indent=1) + "\n")


def version_mismatch(run_dir: Path) -> str | None:
    """One line naming the packages whose versions differ from the newest recorded session, or None."""
    data = read(run_dir)
    if data is None:
        return None
    recorded = data.get("versions") or {}
    if not isinstance(recorded, dict):
        return None
    now = versions()
    diff = [f"{k} {recorded.get(k)} -> {now.get(k)}" for k in ("python", *PACKAGES)
            if k in recorded and recorded.get(k) != now.get(k)]
    if not diff:
        return None
    return f"{Path(run_dir)}: trained under other versions than installed now ({', '.join(diff)})"
