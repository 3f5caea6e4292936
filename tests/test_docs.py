"""The documentation site: it builds with ``mkdocs build --strict``, and its generated reference is current."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_reference_pages_are_current():
    """``docs/reference/*.md`` are what ``docs/gen_reference.py`` writes from the code today."""
    proc = subprocess.run([sys.executable, "docs/gen_reference.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + "\nrun: python docs/gen_reference.py"


def test_mkdocs_build_strict(tmp_path):
    """The site builds offline with no warning (strict: a broken link or a page missing from nav fails)."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").exists()
    results = (tmp_path / "site" / "results" / "index.html").read_text(encoding="utf-8")
    assert "locomotion_report.py" in results  # the generated sections of RESULTS.md are on the page
