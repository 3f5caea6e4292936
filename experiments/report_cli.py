"""What the generated sections of RESULTS.md share: their command line and the paths of their figures.

``locomotion_report.py`` and ``metaworld_report.py`` each rewrite one marked section of a markdown
file from run artifacts (``--check`` only compares) and draw their PNGs beside the runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relative_root(root: Path) -> str:
    """``root`` relative to the repository (as RESULTS.md links it), else as given."""
    try:
        return root.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return root.as_posix()


def report_main(argv: list[str] | None, *, description: str, default_root: Path, results_md: Path,
                begin: str, end: str, section: Callable[[Path], str], plots: Callable[[Path], None],
                what: str, script: str) -> int:
    """Parse ``--root --results --check --no-plots``; rewrite (or check) the section between the markers."""
    sys.path.insert(0, str(ROOT))
    from metarl.fileio import atomic_write, replace_section

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(default_root), help="the run directories")
    p.add_argument("--results", default=str(results_md), help="the markdown file whose section is rewritten")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if the section is stale")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    args = p.parse_args(argv)
    root, md = Path(args.root), Path(args.results)
    text = md.read_text(encoding="utf-8") if md.exists() else ""
    updated = replace_section(text, section(root), begin, end)
    if args.check:
        if updated != text:
            print(f"{md}: the {what} section is stale; run python experiments/{script}", file=sys.stderr)
            return 1
        return 0
    atomic_write(md, updated)
    if not args.no_plots:
        plots(root)
    print(f"wrote the {what} section of {md}")
    return 0
