"""``python -m bench [NAME...]``: run every ``bench/bench_*.py`` (or the named ones), one process each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(p.stem for p in here.glob("bench_*.py"))
    failed = 0
    for name in names:
        module = name if name.startswith("bench_") else f"bench_{name}"
        print(f"\n=== {module} ===", flush=True)
        failed += subprocess.call([sys.executable, "-m", f"bench.{module}"]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
