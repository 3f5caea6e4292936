"""Process helpers for the tests that start workers: liveness, descendants, listening sockets (Linux /proc)."""

from __future__ import annotations

import contextlib
from pathlib import Path


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def sampler_workers(pid: int) -> list[int]:
    """Sampler worker processes below ``pid``: spawned children, or children of the fork server."""
    out = []
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"forkserver" in cmd:
                out += children(child)
            elif b"spawn_main" in cmd:
                out.append(child)
    return out


def listening_addresses(root_pid: int) -> list[tuple[int, str, str, int]]:
    """``(pid, name, ip, port)`` of every listening inet socket of ``root_pid`` and its descendants."""
    import importlib

    import ray  # noqa: F401 - puts its bundled psutil on the path when psutil itself is not installed

    psutil = importlib.import_module("psutil")

    root = psutil.Process(root_pid)
    out = []
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.pid, p.name(), c.laddr.ip, c.laddr.port))
    return out
