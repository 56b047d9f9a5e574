"""``device site-adapt`` on 200 images: wall time and peak RSS of the command as a clinic runs it.

    python -m bench.bench_site_adapt [--model DIR] [--images 200] [--threads T]

The cases are BrEaST-Lesions-USG images from ../shared/datasets (tests/site_cases.py): its lesion-free views
and normal scans as normals, then full lesion images (benign, malignant) up to ``--images`` — so the whole head
is refitted, the heavier case. The command runs in its own process (``/usr/bin/time``-style figures from
``resource.getrusage`` of the child). Targets (issue 19): <= 2 min for 200 images, peak RSS within 250 MB.
Figures are printed; record them in docs/performance.md.

    python -m bench.bench_site_adapt --study

The head study behind docs/model.md ("Site bundles", the <= 5 % target): BrEaST-Lesions-USG's patients in two
halves as tests/device/test_site_adapt_data.py splits them; half A's normal views are the site's cases, half B is the
test half. Each variant of the fit (L2 strength, site weights, which head columns move) is adapted on half A
and judged on half A only — its held-out quarter (whole patients) over 5 seeds — plus the base test split's
no-forgetting check inside ``adapt``; then only the device default and the variant half A picks are scored on
half B (the head on the pooled features: what the engine computes for a site bundle).
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
    parser.add_argument("--study", action="store_true", help="the head study (module docstring) instead of the bench")
    args = parser.parse_args(argv)
    if args.study:
        return study(args.model)
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
        result = subprocess.run(
            [sys.executable, "-m", "device", "site-adapt", str(cases), "--out", str(out), "--model", str(args.model), "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    n_normal = sum(s.label == "normal" for s in chosen)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"cases: {len(chosen)} images ({n_normal} normal, {len(chosen) - n_normal} lesions), model {args.model.name}, {args.threads} threads")
    print(
        f"site-adapt: exit {result.returncode}, wall {seconds:.1f} s (target <= 120 s), peak RSS {usage.ru_maxrss / 1024:.0f} MB (target <= 250 MB)"
    )
    if result.returncode != 0:
        print(result.stderr[-2000:])
        return 1
    print(result.stdout)
    return 0


STUDY_WEIGHTS = (4.0, 2.0, 1.0, 0.5, 0.25, 0.1)
STUDY = (  # (name, adapt keyword arguments); the first is the device default
    ("default: L2 0.001, weights 1..0.1, normal column", {}),
    ("larger site weights (4, 2 first)", {"site_weights": STUDY_WEIGHTS}),
    ("L2 0.0005", {"l2": 0.0005}),
    ("L2 0.0003", {"l2": 0.0003}),
    ("L2 0.0002", {"l2": 0.0002}),
    ("L2 0.0001", {"l2": 0.0001}),
    ("normal and malignant columns", {"free_labels": ("normal", "malignant")}),
    ("malignant column only", {"free_labels": ("malignant",)}),
    ("malignant column only, L2 0.0003", {"free_labels": ("malignant",), "l2": 0.0003}),
    ("normal and benign columns", {"free_labels": ("normal", "benign")}),
    ("normal and benign columns, L2 0.0003", {"free_labels": ("normal", "benign"), "l2": 0.0003}),
)


def study(model: Path, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> int:
    if not (DATASETS / "breast-lesions-usg").is_dir():
        print(f"skipped: {DATASETS / 'breast-lesions-usg'} not found")
        return 0
    sys.path.insert(0, str(REPO))
    import numpy as np

    from device import site_adapt as sa
    from device.engine import Classifier
    from device.head import HEAD_DATA_FILE, HeadData
    from device.model.bundle import load_bundle
    from tests.site_cases import site_samples, split_patients, write_cases

    samples = site_samples(DATASETS)
    teach, other = split_patients(samples)
    patient = {id(s): s.patient_id or s.path.name for s in samples}
    bundle = load_bundle(model)
    classifier = Classifier(bundle, threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        half_a = write_cases([s for s in samples if s.label == "normal" and patient[id(s)] in teach], Path(tmp) / "a")
        half_b = write_cases([s for s in samples if patient[id(s)] in other], Path(tmp) / "b")
        site_a = sa.read_site_data(classifier, sa.read_site_cases(half_a))
        site_b = sa.read_site_data(classifier, sa.read_site_cases(half_b))
    head_data = HeadData.load(model / HEAD_DATA_FILE)
    m = bundle.manifest
    spec = m.decision_spec()
    rule = sa.Rule(m.labels, m.temperature, spec.mode(spec.default_mode).malignant_threshold, spec.lesion_threshold)
    y_b = np.array([m.labels.index(label) for label in site_b.labels])
    print(f"half A: {len(site_a.cases)} normal views; half B: {dict(zip(*np.unique(site_b.labels, return_counts=True)))}")
    print(
        "variant | chosen site weights | A held-out (mean of 5 seeds): normals called malignant, called normal | "
        "base test after (seed 0): malignant AUC, normals called normal, malignant sensitivity"
    )
    results = {}
    for name, kwargs in STUDY:
        try:
            runs = [sa.adapt(bundle, head_data, site_a, seed=seed, **kwargs) for seed in seeds]
        except sa.SiteAdaptError as exc:
            print(f"{name} | refused: {str(exc)[:160]}")
            continue
        mal = float(np.mean([r.holdout["after"]["normals_called_malignant"] for r in runs]))
        normal = float(np.mean([r.holdout["after"]["normals_called_normal"] for r in runs]))
        t = runs[0].base_test
        results[name] = (mal, runs[0])
        print(
            f"{name} | {[r.site_weight for r in runs]} | {100 * mal:.1f} %, {100 * normal:.1f} % | "
            f"{t['before']['auc_malignant']:.4f} -> {t['after']['auc_malignant']:.4f}, "
            f"{t['before']['normals_called_normal']:.3f} -> {t['after']['normals_called_normal']:.3f}, "
            f"{t['before']['malignant_sensitivity']:.3f} -> {t['after']['malignant_sensitivity']:.3f}"
        )
    default = STUDY[0][0]
    picked = min(results, key=lambda n: (results[n][0], n != default))
    print(f"half A picks: {picked}")
    base_fig = sa.figures(site_b.x @ np.asarray(m.cam.weights) + np.asarray(m.cam.bias), y_b, rule)
    print(f"half B, base bundle: {_half_b(base_fig)}")
    for name in dict.fromkeys((default, picked)):
        adaptation = results[name][1]
        print(f"half B, {name}: {_half_b(sa.figures(site_b.x @ adaptation.weights + adaptation.bias, y_b, rule))}")
    return 0


def _half_b(f: dict) -> str:
    return (
        f"normals called normal {100 * f['normals_called_normal']:.1f} %, called malignant "
        f"{100 * f['normals_called_malignant']:.1f} % (of {f['n']['normal']}), benign-vs-malignant AUC "
        f"{f['auc_benign_vs_malignant']:.3f}, malignant sensitivity {100 * f['malignant_sensitivity']:.1f} %"
    )


if __name__ == "__main__":
    sys.exit(main())
