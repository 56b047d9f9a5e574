"""``device site-adapt`` on 200 images: wall time and peak RSS of the command as a clinic runs it.

    python -m bench.bench_site_adapt [--model DIR] [--images 200] [--threads T]

The cases are BrEaST-Lesions-USG images from ../shared/datasets (tests/site_cases.py): its lesion-free views
and normal scans as normals, then full lesion images (benign, malignant) up to ``--images`` — so the whole head
is refitted, the heavier case. The command runs in its own process (``/usr/bin/time``-style figures from
``resource.getrusage`` of the child). Targets (issue 19): <= 2 min for 200 images, peak RSS within 250 MB.
Figures are printed; record them in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_site_adapt")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "sonopi-lite0")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not (DATASETS / "breast-lesions-usg").is_dir():
        print(f"skipped: {DATASETS / 'breast-lesions-usg'} not found")
        return 0
    sys.path.insert(0, str(REPO))
    from tests.site_cases import site_samples, write_cases

    samples = site_samples(DATASETS)
    normals = [s for s in samples if s.label == "normal"]
    lesions = [s for s in samples if s.label != "normal"]
    chosen = (normals + lesions)[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        cases = write_cases(chosen, Path(tmp) / "cases")
        config = Path(tmp) / "device.toml"
        config.write_text(f"[model]\nthreads = {args.threads}\n", encoding="utf-8")
        out = Path(tmp) / "site-bundle"
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "device", "site-adapt", str(cases), "--out", str(out),
                                 "--model", str(args.model), "--config", str(config)],
                                cwd=REPO, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    n_normal = sum(s.label == "normal" for s in chosen)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"cases: {len(chosen)} images ({n_normal} normal, {len(chosen) - n_normal} lesions), model {args.model.name}, "
          f"{args.threads} threads")
    print(f"site-adapt: exit {result.returncode}, wall {seconds:.1f} s (target <= 120 s), peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB (target <= 250 MB)")
    if result.returncode != 0:
        print(result.stderr[-2000:])
        return 1
    print(result.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
