"""Every noqa marker in the tree's Python names its rule and says why, on the same line (docs/architecture.md,
"Lint and types"). ruff's RUF100 (selected in pyproject.toml) already refuses a marker that suppresses nothing;
this refuses the bare ones that do suppress something, so each exception stays argued where it is made."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("device", "ui", "hub", "model_build", "tests", "bench", "deploy")
MARKER = re.compile(r"#\s*noqa\b(?P<codes>:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?(?P<reason>.*)$")


def bare_markers(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each marker without a rule code or without a reason after it."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = MARKER.search(line)
        if match and (not match.group("codes") or len(match.group("reason").strip(" -—()")) < 3):
            found.append((number, line.strip()))
    return found


def test_the_check_tells_a_bare_marker_from_an_argued_one() -> None:
    mark = "# " + "noqa"  # spelled in two parts so this file holds no marker itself
    assert bare_markers(f"import x  {mark}: E402\n") == [(1, f"import x  {mark}: E402")]
    assert bare_markers(f"import x  {mark}\n") == [(1, f"import x  {mark}")]
    assert bare_markers(f"import x  {mark}: E402  (after the sys.path set-up)\n") == []
    assert bare_markers(f"import x  {mark}: F401, E402 - a fixture\n") == []


def test_every_marker_names_its_rule_and_reason() -> None:
    bare = [
        f"{path.relative_to(REPO)}:{number}: {line}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in bare_markers(path.read_text(encoding="utf-8"))
    ]
    assert not bare, "noqa markers without a rule or a reason on the same line:\n" + "\n".join(bare)
