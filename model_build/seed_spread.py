"""``python -m model_build seed-spread``: what another training run of a bundle's recipe gives at the bundle's own
thresholds, so the card can say how much of its leave-one-source-out figures is the recipe and how much the run.

The card's CIs resample patients of one training run's folds. A second run of the same recipe with another seed,
its folds scored the same way (``models/study-capacity/lite0-seed1`` for the shipped recipe), is a second sample of
the training: here each of its held-out sources' malignant AUC, and each of the bundle's modes applied to its
predictions at the *bundle's* thresholds (sensitivity, specificity, normal scans called malignant, 95 % CIs over
patients), beside the bundle's own figures. ``--write`` stores it in ``report/metrics.json`` (``seed_spread``) and
rewrites ``MODEL_CARD.md`` through ``device.model.bundle.edit_bundle`` (the model and manifest are not touched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device.model.bundle import load_bundle
from model_build.card import store_report_section
from model_build.operating_modes import StudyError, mode_statistics, read_folds, source_statistics, with_ci
from model_build.report import read_report

FIGURES = ("sensitivity", "specificity", "normals_called_malignant")


def seed_spread(bundle_dir: Path, reseeded_folds: Sequence[Path], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The reseeded folds scored at the bundle's mode thresholds, beside the bundle's leave-one-source-out figures."""
    bundle = load_bundle(bundle_dir)
    own = read_report(bundle.path).leave_one_source_out
    if not own:
        raise StudyError(f"model bundle {bundle_dir}: no leave-one-source-out figures (run `model_build modes --write` first)")
    scores = read_folds(reseeded_folds)
    sources = sorted(set(scores.source.tolist()))
    if sources != sorted(own["held_out_sources"]):
        raise StudyError(f"the reseeded folds hold out {sources}, the bundle's study held out {sorted(own['held_out_sources'])}")
    spec = bundle.manifest.decision_spec()
    modes: dict[str, Any] = {}
    for mode in own["modes"]:
        t = spec.mode(mode, f"model bundle {bundle_dir}").malignant_threshold
        reseeded = with_ci(scores, mode_statistics(t), n_boot, seed)
        modes[mode] = {
            "malignant_threshold": round(t, 6),
            "this_run": {k: own["modes"][mode]["figures"][k] for k in FIGURES},
            "reseeded": {k: reseeded[k] for k in FIGURES},
        }
    auc = {}
    for source in sources:
        reseeded = with_ci(scores.subset(scores.source == source), source_statistics, n_boot, seed)
        auc[source] = {"this_run": own["per_source"][source]["malignant_auc_lesions"], "reseeded": reseeded["malignant_auc_lesions"]}
    return {"reseeded_folds": [str(f) for f in reseeded_folds], "malignant_auc_lesions": auc, "modes": modes}


def store_in_bundle(bundle_dir: Path, result: dict[str, Any]) -> None:
    store_report_section(bundle_dir, "seed_spread", result)


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"reseeded folds: {', '.join(result['reseeded_folds'])}"]
    for source, a in result["malignant_auc_lesions"].items():
        lines.append(f"{source}: malignant AUC {a['this_run']['value']:.3f} -> {a['reseeded']['value']:.3f}")
    for mode, m in result["modes"].items():
        parts = [f"{k} {m['this_run'][k]['value']:.3f} -> {m['reseeded'][k]['value']:.3f}" for k in FIGURES if m["reseeded"][k]["value"] is not None]
        lines.append(f"{mode} (p(malignant) >= {m['malignant_threshold']:.4f}): " + ", ".join(parts))
    return lines
