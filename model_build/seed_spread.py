"""``python -m model_build seed-spread``: what another training run of a bundle's recipe gives at the bundle's own
thresholds, so the card can say how much of its leave-one-source-out figures is the recipe and how much the run.

The card's CIs resample patients of one training run's folds. A second run of the same recipe with another seed,
its folds scored the same way (``models/study-capacity/lite0-seed1`` for the shipped recipe), is a second sample of
the training: here each of its held-out sources' malignant AUC, and each of the bundle's modes applied to its
predictions at the *bundle's* thresholds (sensitivity, specificity, normal scans called malignant, 95 % CIs over
patients), beside the bundle's own figures. Then what a threshold that holds on both runs would cost: per mode the
threshold the reseeded run's own study would have chosen (the same rule, ``operating_modes.choose_mode_thresholds``:
every held-out source keeps the mode's target sensitivity), the lower of it and the bundle's — the highest at which
both runs keep the target on every source — and both runs' figures there (this run's with ``this_run_folds``, the
bundle's own study folds). ``--write`` stores it in ``report/metrics.json`` (``seed_spread``) and rewrites
``MODEL_CARD.md`` through ``device.model.bundle.edit_bundle`` (the model and manifest are not touched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device.model.bundle import load_bundle
from model_build.card import store_report_section
from model_build.operating_modes import (
    MODE_TARGETS,
    HeldOutScores,
    StudyError,
    choose_mode_thresholds,
    mode_statistics,
    read_folds,
    source_statistics,
    with_ci,
)
from model_build.report import read_report

FIGURES = ("sensitivity", "specificity", "normals_called_malignant")


def seed_spread(
    bundle_dir: Path, reseeded_folds: Sequence[Path], n_boot: int = 1000, seed: int = 0, this_run_folds: Sequence[Path] | None = None
) -> dict[str, Any]:
    """The reseeded folds scored at the bundle's mode thresholds, beside the bundle's leave-one-source-out figures, and
    both runs at the thresholds that hold on both (this run's figures there need its folds, ``this_run_folds``)."""
    bundle = load_bundle(bundle_dir)
    own = read_report(bundle.path).leave_one_source_out
    if not own:
        raise StudyError(f"model bundle {bundle_dir}: no leave-one-source-out figures (run `model_build modes --write` first)")
    scores = _same_sources(read_folds(reseeded_folds), own, "reseeded")
    this_run = _same_sources(read_folds(this_run_folds), own, "this run's") if this_run_folds else None
    sources = sorted(set(scores.source.tolist()))
    spec = bundle.manifest.decision_spec()
    targets = {mode: MODE_TARGETS[mode] for mode in own["modes"] if mode in MODE_TARGETS}
    reseeded_thresholds = choose_mode_thresholds(scores, targets)
    modes: dict[str, Any] = {}
    for mode in own["modes"]:
        t = spec.mode(mode, f"model bundle {bundle_dir}").malignant_threshold
        reseeded = with_ci(scores, mode_statistics(t), n_boot, seed)
        modes[mode] = {
            "malignant_threshold": round(t, 6),
            "this_run": {k: own["modes"][mode]["figures"][k] for k in FIGURES},
            "reseeded": {k: reseeded[k] for k in FIGURES},
        }
        if mode in reseeded_thresholds:
            modes[mode]["both_runs"] = _both_runs(t, reseeded_thresholds[mode], scores, this_run, n_boot, seed)
    auc = {}
    for source in sources:
        reseeded = with_ci(scores.subset(scores.source == source), source_statistics, n_boot, seed)
        auc[source] = {"this_run": own["per_source"][source]["malignant_auc_lesions"], "reseeded": reseeded["malignant_auc_lesions"]}
    return {"reseeded_folds": [str(f) for f in reseeded_folds], "malignant_auc_lesions": auc, "modes": modes}


def _same_sources(scores: HeldOutScores, own: dict[str, Any], which: str) -> HeldOutScores:
    sources = sorted(set(scores.source.tolist()))
    if sources != sorted(own["held_out_sources"]):
        raise StudyError(f"the {which} folds hold out {sources}, the bundle's study held out {sorted(own['held_out_sources'])}")
    return scores


def _both_runs(
    this_threshold: float, reseeded_threshold: float, reseeded: HeldOutScores, this_run: HeldOutScores | None, n_boot: int, seed: int
) -> dict[str, Any]:
    """The highest threshold at which both runs keep the mode's target on every held-out source, and the figures there."""
    t = min(this_threshold, reseeded_threshold)
    out: dict[str, Any] = {
        "reseeded_threshold": round(reseeded_threshold, 6),
        "malignant_threshold": round(t, 6),
        "reseeded": {k: v for k, v in with_ci(reseeded, mode_statistics(t), n_boot, seed).items() if k in FIGURES},
    }
    if this_run is not None:
        out["this_run"] = {k: v for k, v in with_ci(this_run, mode_statistics(t), n_boot, seed).items() if k in FIGURES}
    return out


def store_in_bundle(bundle_dir: Path, result: dict[str, Any]) -> None:
    store_report_section(bundle_dir, "seed_spread", result)


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"reseeded folds: {', '.join(result['reseeded_folds'])}"]
    for source, a in result["malignant_auc_lesions"].items():
        lines.append(f"{source}: malignant AUC {a['this_run']['value']:.3f} -> {a['reseeded']['value']:.3f}")
    for mode, m in result["modes"].items():
        parts = [f"{k} {m['this_run'][k]['value']:.3f} -> {m['reseeded'][k]['value']:.3f}" for k in FIGURES if m["reseeded"][k]["value"] is not None]
        lines.append(f"{mode} (p(malignant) >= {m['malignant_threshold']:.4f}): " + ", ".join(parts))
        both = m.get("both_runs")
        if both:
            at = [
                f"{run} " + ", ".join(f"{k} {both[run][k]['value']:.3f}" for k in FIGURES if both[run][k]["value"] is not None)
                for run in ("this_run", "reseeded")
                if run in both
            ]
            lines.append(
                f"  holding on both runs: p(malignant) >= {both['malignant_threshold']:.4f} (the other run's own {both['reseeded_threshold']:.4f}): "
                + "; ".join(at)
            )
    return lines
