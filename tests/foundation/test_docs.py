"""The README stays a short front door, the guides stay free of what goes stale (dates, shas, test counts:
CI prints those), and every relative link in them lands on a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
ALL = [*GUIDES, ROOT / "bench" / "README.md"]
STALE = {
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a commit sha": re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
    "a session": re.compile(r"\b(this|previous|last) session\b", re.I),
    "a test count": re.compile(r"\b[\d,]+ (passed|tests? (passed|ran))\b", re.I),
}


def headings(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    out: set[str] = set()
    for title in re.findall(r"^#+\s+(.*)$", text, flags=re.M):
        anchor = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = sum(1 for a in out if a == anchor or re.fullmatch(re.escape(anchor) + r"-\d+", a))
        out.add(anchor if n == 0 else f"{anchor}-{n}")
    return out


def test_the_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dates_shas_sessions_or_test_counts(path):
    text = path.read_text()
    found = {what: m.group(0) for what, rx in STALE.items() if (m := rx.search(text))}
    assert not found, f"{path.relative_to(ROOT)} holds what goes stale: {found}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_land(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target) if target else path
        assert file.exists(), f"{path.relative_to(ROOT)}: {link} names no file"
        if anchor and file.suffix == ".md":
            assert anchor in headings(file), f"{path.relative_to(ROOT)}: {link} names no heading"
