"""``scalars.csv``: every logged scalar of a run, one row per meta-iteration.

The CSV sits beside the TensorBoard event files and holds the same values in
a form that is small, diffable and readable without TensorBoard (the
released runs under ``results/`` keep it instead of their event files).
Layout: a header ``iteration,<tag>,<tag>,...`` (tags in the order of the
first row written), then one row per iteration.  A resumed run drops the
rows at or after the iteration it resumes from, so a killed run's rows past
its last checkpoint are replaced, never duplicated.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from metarl.fileio import atomic_write

FILENAME = "scalars.csv"


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.exists():
        return [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a scalars CSV ({type(e).__name__})") from None
    if not rows or rows[0][:1] != ["iteration"]:
        raise ValueError(f"{path}: not a scalars CSV (its first column must be 'iteration')")
    return rows[0], rows[1:]


def check(run_dir: Path) -> None:
    """Refuse (``ValueError``, one line) a ``scalars.csv`` that a resumed run could not continue: not a regular
    file, not UTF-8 CSV, a header without ``iteration`` first, or a complete row whose iteration is not an
    integer or whose values are not numbers (a torn last row, shorter than the header, is what a kill
    leaves and is dropped on resume)."""
    path = Path(run_dir) / FILENAME
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    if path.stat().st_size == 0:  # a start killed before its first row
        return
    header, rows = _rows(path)
    for n, r in enumerate(rows, start=2):
        if len(r) != len(header):
            continue
        if not re.fullmatch(r"[0-9]{1,12}", r[0]):
            raise ValueError(f"{path}: line {n}: the iteration is not a non-negative integer: {r[0][:40]!r}")
        for cell in r[1:]:
            try:
                float(cell)
            except ValueError:
                raise ValueError(f"{path}: line {n}: not a number: {cell[:40]!r}") from None


class ScalarsCSV:
    """Appends one row per iteration to ``RUN_DIR/scalars.csv``.

    ``start_iteration``: rows with ``iteration >= start_iteration`` already in
    the file are dropped (atomically) before anything is appended.
    """

    def __init__(self, run_dir: Path, start_iteration: int = 0):
        self.path = Path(run_dir) / FILENAME
        header, rows = _rows(self.path) if start_iteration > 0 else ([], [])
        kept = [r for r in rows if len(r) == len(header) and int(r[0]) < start_iteration]  # drops a torn last row
        if not kept:
            header = []
        if start_iteration == 0 or len(kept) != len(rows):
            buf = io.StringIO()
            if kept:
                w = csv.writer(buf, lineterminator="\n")
                w.writerow(header)
                w.writerows(kept)
            atomic_write(self.path, buf.getvalue())
        self.header = header
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._file, lineterminator="\n")

    def append(self, iteration: int, scalars: dict[str, float]) -> None:
        if not self.header:
            self.header = ["iteration", *scalars]
            self._writer.writerow(self.header)
        self._writer.writerow([iteration, *(_fmt(scalars.get(k, math.nan)) for k in self.header[1:])])

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(v: float) -> str:
    return repr(float(v))  # shortest string that reads back to the same float


def read(run_dir: Path, tags: list[str] | tuple[str, ...] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tag: (iterations, values)}`` from ``RUN_DIR/scalars.csv`` (last row per iteration wins)."""
    path = Path(run_dir) / FILENAME
    header, rows = _rows(path)
    if not header:
        raise ValueError(f"{path}: no scalars recorded")
    by_iter = {int(r[0]): r for r in rows if len(r) == len(header)}  # a torn last row is skipped
    steps = np.array(sorted(by_iter), dtype=np.int64)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tag in tags if tags is not None else header[1:]:
        if tag not in header:
            raise ValueError(f"{path}: no scalar {tag!r} (found {header[1:]})")
        j = header.index(tag)
        out[tag] = (steps, np.array([float(by_iter[s][j]) for s in steps.tolist()], dtype=np.float64))
    return out


def last_values(run_dir: Path, tag: str, last: int, before: int | None = None) -> np.ndarray:
    """The finite values of ``tag`` over the run's last ``last`` logged iterations (those below ``before`` only,
    when given: rows past a checkpoint are replayed on resume); empty when the run logged no such scalar."""
    try:
        it, values = read(run_dir, [tag])[tag]
    except (ValueError, FileNotFoundError):
        return np.empty(0)
    if before is not None:
        values = values[it < before]
    values = values[-last:]
    return values[np.isfinite(values)]  # NaN where an older header lacked the tag
