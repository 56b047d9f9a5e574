"""``python -m model_build close-up``: what the device's close-up rule (device/close_up.py) does to an operating mode's
sensitivity and specificity on a held-out source, against the whole frame alone and the close-up alone.

It takes two folds of the same held-out images (``model_build region-score``'s ``whole`` and a close-up way, e.g.
``region``) and a bundle's operating mode (its malignant and lesion thresholds). Each image is decided three ways
with the device's own code — ``device.decision.decide`` in the bundle's mode and ``device.close_up.scan_decides`` — and suspicious
is counted per way on the lesions (malignant: sensitivity; benign: specificity), with 95 % CIs from a bootstrap over
the images' groups (patients). Every row of a region-score fold is a conclusive classification, so no image is
inconclusive here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from device.close_up import scan_decides
from device.decision import Category, Decision, Mode, decide
from device.model.bundle import ModelBundle, load_bundle
from model_build.evaluate import grouped_bootstrap
from model_build.figure_text import ci_text
from model_build.fold_compare import same_images
from model_build.operating_modes import LABELS as PROBABILITY_LABELS
from model_build.operating_modes import StudyError, read_fold

WAYS = ("whole", "close_up", "rule")  # the whole frame alone, the close-up alone, the device's rule on the two


def suspicious_by_way(whole: np.ndarray, close_up: np.ndarray, bundle: ModelBundle, mode: Mode) -> dict[str, np.ndarray]:
    """Per image (rows of [p_normal, p_benign, p_malignant]), whether each way calls it suspicious, as the device
    decides (``device.decision.decide`` in the bundle's ``mode``, then ``scan_decides``)."""
    spec, labels = bundle.manifest.decision_spec(), bundle.manifest.labels

    def decided(p: np.ndarray) -> Decision:
        return decide(dict(zip(PROBABILITY_LABELS, (float(v) for v in p))), labels, spec, mode, None, inconclusive=False)

    scan = [decided(p) for p in whole]
    near = [decided(p) for p in close_up]
    rule = [(s if scan_decides(n, s) else n).category for n, s in zip(near, scan)]
    return {
        "whole": np.array([d.category is Category.SUSPICIOUS for d in scan]),
        "close_up": np.array([d.category is Category.SUSPICIOUS for d in near]),
        "rule": np.array([c is Category.SUSPICIOUS for c in rule]),
    }


def close_up_study(
    whole_fold: Path, close_up_fold: Path, bundle_dir: Path, mode: str = "balanced", n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Sensitivity and specificity (on lesions, full images) of the three ways, with CIs."""
    whole, near = read_fold(whole_fold), read_fold(close_up_fold)
    keys = [k for k in same_images([whole, near]) if whole.rows[k]["view"] == "full" and whole.rows[k]["label"] != "normal"]
    malignant = np.array([whole.rows[k]["label"] == "malignant" for k in keys])
    if malignant.all() or not malignant.any():
        raise StudyError(f"folds {whole_fold} and {close_up_fold}: the lesions are all of one class")
    bundle = load_bundle(bundle_dir)
    spec, chosen = bundle.manifest.decision_spec(), Mode(mode)
    flagged = suspicious_by_way(whole.probabilities(keys), near.probabilities(keys), bundle, chosen)
    groups = np.array([whole.rows[k]["group"] for k in keys])

    def figures(i: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for way, hit in flagged.items():
            m, b = malignant[i], ~malignant[i]
            out[f"{way}.sensitivity"] = float(hit[i][m].mean()) if m.any() else float("nan")
            out[f"{way}.specificity"] = float((~hit[i][b]).mean()) if b.any() else float("nan")
        return out

    point = figures(np.arange(len(keys)))
    ci = grouped_bootstrap(groups, figures, n_boot, seed)
    n = {"sensitivity": int(malignant.sum()), "specificity": int((~malignant).sum())}
    ways = {
        way: {
            name: {"value": round(point[f"{way}.{name}"], 4), "ci95": [round(c, 4) for c in ci[f"{way}.{name}"]], "n": n[name]}
            for name in ("sensitivity", "specificity")
        }
        for way in WAYS
    }
    return {
        "whole_fold": str(whole_fold),
        "close_up_fold": str(close_up_fold),
        "bundle": str(bundle_dir),
        "mode": chosen.value,
        "malignant_threshold": spec.mode(chosen, f"model bundle {bundle_dir}").malignant_threshold,
        "lesion_threshold": spec.lesion_threshold,
        "sources": sorted({k[0] for k in keys}),
        "lesions": len(keys),
        "malignant": int(malignant.sum()),
        "raised_by_the_scan": int((flagged["rule"] & ~flagged["close_up"]).sum()),
        "ways": ways,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"held out: {', '.join(result['sources'])}; {result['lesions']} lesions ({result['malignant']} malignant); "
        f"{result['mode']} mode, suspicious at p(malignant) >= {result['malignant_threshold']:.4f}",
    ]
    for way in WAYS:
        figures = result["ways"][way]
        lines.append(f"{way:>9}: sensitivity {ci_text(figures['sensitivity'])}, specificity {ci_text(figures['specificity'])}")
    lines.append(f"lesions the rule called suspicious that the close-up alone did not: {result['raised_by_the_scan']}")
    return lines


def run(whole_fold: Path, close_up_fold: Path, bundle_dir: Path, out: Path | None, mode: str, n_boot: int) -> list[str]:
    result = close_up_study(whole_fold, close_up_fold, bundle_dir, mode, n_boot)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return summary_lines(result)
