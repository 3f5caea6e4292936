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


def _gen_reference():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_walks_any_dataclass_tree():
    """A new section, a nested one and an inherited field all reach the reference with type, default and doc."""
    from helpers_docs import Outer

    sections = _gen_reference().config_sections(Outer())
    assert [name for name, _, _ in sections] == ["", "new", "new.deeper"]
    rows = {key: (tp, default, doc) for _, _, keys in sections for key, tp, default, doc in keys}
    assert rows["top"] == ("int", "3", "A top-level key.")
    assert rows["new.rate"] == ("float", "0.5", "Inherited from the base settings, docstring and all.")
    assert rows["new.names"] == ("list[str]", "[a, b]", "A list default,\nover two lines.")
    assert rows["new.deeper.flag"] == ("bool | None", "null", "")


def test_every_config_key_is_in_the_reference():
    """The generated config page lists every key ``metarl.config`` accepts, each with a docstring."""
    import dataclasses

    from metarl.config import Config

    text = (ROOT / "docs" / "reference" / "config.md").read_text(encoding="utf-8")

    def keys(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from keys(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    from metarl.config import component_sections

    every = [*keys(Config())] + [k for section, settings in component_sections().items()
                                 for k in keys(settings(), f"{section}.")]  # each component's own section too
    for key in every:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, key
        assert not row.endswith("|  |"), f"{key} has no docstring in metarl.config"
