"""The documentation site: it builds with ``mkdocs build --strict``, and its generated reference is current."""

from __future__ import annotations

import os
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
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").exists()
    results = (tmp_path / "site" / "results" / "index.html").read_text(encoding="utf-8")
    assert "locomotion_report.py" in results  # the generated sections of RESULTS.md are on the page


def test_readme_is_a_short_front_page_whose_links_resolve():
    """README.md stays a front page (at most 200 lines) and every relative link in it names an existing file."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "expected links into docs/"
    for link in local:
        assert (ROOT / link).exists(), link
    for section in ("## Adding a task family", "## Adding an outer loop", "## Adding an inner-update rule"):
        assert section in text
