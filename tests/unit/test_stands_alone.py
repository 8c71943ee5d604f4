"""The project stands alone: nothing it ships points at documents outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A path that climbs out of the repository, or the name of a design document kept elsewhere.
OUTSIDE = re.compile(r"\.\./shared|/work/shared|\bDESIGN\.md\b|DESIGN principle")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / p for p in out if (ROOT / p).is_file()]


def test_no_tracked_file_points_outside_the_repository():
    offenders = []
    for path in _tracked():
        if path == Path(__file__).resolve():
            continue
        if path.suffix not in {".py", ".md", ".toml", ".yaml", ".yml", ".ipynb", ".cfg", ""}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in
                      enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, f"references outside the repository: {offenders}"


def test_the_design_document_is_in_the_project():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for heading in ("## Data flow", "## Layout", "## Principles"):
        assert heading in design
    assert "docs/design.md" in (ROOT / "README.md").read_text(encoding="utf-8")
