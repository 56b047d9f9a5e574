"""The docs follow the tree: every module of device/, ui/, hub/ and model_build/ is named in docs/ (its module
table or module list), so a newcomer finds what each file is for, and a new module without a line fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("device", "ui", "hub", "model_build")


def _modules(package: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", package], cwd=REPO, capture_output=True, text=True, check=True)
    return [f for f in listed.stdout.split() if f.endswith(".py") and Path(f).name not in ("__init__.py", "__main__.py")]


def _docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md")))


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_is_named_in_the_docs(package: str) -> None:
    docs = _docs()
    modules = _modules(package)
    assert modules, f"no modules found in {package}/: the check would be vacuous"
    missing = [m for m in modules if not re.search(rf"`{re.escape(Path(m).name)}`|{re.escape(m)}|`{re.escape(Path(m).stem)}`", docs)]
    assert not missing, f"modules no doc names (add them to their package's module table): {missing}"
