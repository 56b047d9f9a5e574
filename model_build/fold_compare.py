"""Two recipes, or an ensemble of them, compared on the same unseen images.

A leave-one-source-out fold (``model_build build --external-test source=NAME``, or ``model_build score``) writes its
held-out images' probabilities to ``report/external_predictions.csv``. Two folds of the *same* held-out source, built
with two recipes (another backbone, another seed, mirror averaging), score the same images, so the difference between
them is measured paired: one bootstrap resamples the held-out patients / near-duplicate groups and recomputes both
recipes' figures on each resample. That difference, with its CI, is what a capacity choice is taken on (docs/model.md,
"Capacity").

* :func:`compare_folds`: malignant AUC over lesions, specificity at 0.90 sensitivity (the balanced mode's target)
  and the lesions whose top class is normal, each recipe's and the difference candidate − baseline, 95 % CIs; when
  the held-out source has real normal scans (BUSI), the share whose top class is normal and the share called
  malignant at each recipe's 0.90-sensitivity threshold, paired too (their CI resamples the normal scans' groups,
  the thresholds held at their point values).
* :func:`ensemble_folds`: a fold whose probabilities are the mean of several folds' (an ensemble of the recipes,
  served as several models per frame); ``modes`` and ``compare`` read it as any other fold.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.model.operating_point import max_threshold
from model_build.evaluate import binary_auc, grouped_bootstrap
from model_build.operating_modes import COLUMNS, MODE_TARGETS, PREDICTIONS_FILE, FoldPredictions, Key, StudyError, read_fold

TARGET_SENSITIVITY = MODE_TARGETS["balanced"]
MIN_NORMAL_SCANS = 10  # fewer real normal scans than this (BrEaST-Lesions-USG has 4) give no normal-scan figures


@dataclass(frozen=True)
class Paired:
    """One figure for both recipes and their difference (candidate − baseline), each with a 95 % CI."""

    baseline: float
    candidate: float
    difference: float
    difference_ci: tuple[float, float]

    def text(self, digits: int = 3) -> str:
        lo, hi = self.difference_ci
        return f"{self.baseline:.{digits}f} → {self.candidate:.{digits}f} ({self.difference:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}])"


@dataclass(frozen=True)
class NormalScans:
    """What the two recipes make of the held-out source's real normal scans (full images labelled normal)."""

    count: int
    top_class_normal: Paired
    called_malignant: Paired  # p(malignant) at or above the recipe's threshold keeping 0.90 sensitivity on the lesions

    def lines(self) -> list[str]:
        return [
            f"real normal scans ({self.count}): top class normal: {self.top_class_normal.text(3)}",
            f"real normal scans called malignant at {TARGET_SENSITIVITY:.2f} sensitivity: {self.called_malignant.text(3)}",
        ]


@dataclass(frozen=True)
class FoldComparison:
    baseline: Path
    candidate: Path
    sources: tuple[str, ...]
    lesions: int
    malignant: int
    auc: Paired
    specificity_at_sensitivity: Paired  # at TARGET_SENSITIVITY, the threshold chosen per recipe and resample
    lesions_top_class_normal: Paired  # lesions the recipe sees as no lesion at all (a missed cancer's first step)
    normal_scans: NormalScans | None = None

    def lines(self) -> list[str]:
        return [
            f"baseline  {self.baseline}",
            f"candidate {self.candidate}",
            f"held out: {', '.join(self.sources)}; {self.lesions} lesions ({self.malignant} malignant), full images",
            f"malignant AUC: {self.auc.text(4)}",
            f"specificity at {TARGET_SENSITIVITY:.2f} sensitivity: {self.specificity_at_sensitivity.text(3)}",
            f"lesions whose top class is normal: {self.lesions_top_class_normal.text(3)}",
        ] + (self.normal_scans.lines() if self.normal_scans else [])


def same_images(folds: Sequence[FoldPredictions]) -> list[Key]:
    """The folds' common keys; they must hold the same images with the same labels and groups."""
    first = folds[0]
    for other in folds[1:]:
        only = sorted(set(first.rows) ^ set(other.rows))
        if only:
            raise StudyError(f"folds {first.fold} and {other.fold} do not hold the same held-out images: {len(only)} differ, e.g. {only[0]}")
        for key, row in first.rows.items():
            theirs = other.rows[key]
            if (row["label"], row["group"]) != (theirs["label"], theirs["group"]):
                raise StudyError(
                    f"{key}: label/group {row['label']}/{row['group']} in {first.fold}, {theirs['label']}/{theirs['group']} in {other.fold}"
                )
    return sorted(first.rows)


def specificity_at_sensitivity(p_malignant: np.ndarray, malignant: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """Specificity (benign lesions below the threshold) at the highest threshold keeping ``target`` sensitivity."""
    if malignant.all() or not malignant.any():
        return float("nan")
    threshold = max_threshold(p_malignant[malignant], target)  # the modes' rule (model_build.operating_modes)
    return float(np.mean(p_malignant[~malignant] < threshold))


def compare_folds(baseline: Path, candidate: Path, n_boot: int = 1000, seed: int = 0) -> FoldComparison:
    """The candidate recipe against the baseline on the lesions both scored (full images), paired."""
    a, b = read_fold(baseline), read_fold(candidate)
    keys = [k for k in same_images([a, b]) if a.rows[k]["view"] == "full" and a.rows[k]["label"] != "normal"]
    if not keys:
        raise StudyError(f"folds {baseline} and {candidate}: no lesion (full image) to compare on")
    malignant = np.array([a.rows[k]["label"] == "malignant" for k in keys])
    if malignant.all() or not malignant.any():
        raise StudyError(f"folds {baseline} and {candidate}: the lesions are all of one class, so no AUC")
    groups = np.array([a.rows[k]["group"] for k in keys])
    probs_a, probs_b = a.probabilities(keys), b.probabilities(keys)
    pa, pb = probs_a[:, 2], probs_b[:, 2]
    seen_normal_a, seen_normal_b = probs_a.argmax(1) == 0, probs_b.argmax(1) == 0

    def figures(i: np.ndarray) -> dict[str, float]:
        auc_a, auc_b = binary_auc(malignant[i], pa[i]), binary_auc(malignant[i], pb[i])
        spec_a, spec_b = specificity_at_sensitivity(pa[i], malignant[i]), specificity_at_sensitivity(pb[i], malignant[i])
        top_a, top_b = float(seen_normal_a[i].mean()), float(seen_normal_b[i].mean())
        return {
            **{"auc_a": auc_a, "auc_b": auc_b, "auc": auc_b - auc_a},
            **{"spec_a": spec_a, "spec_b": spec_b, "spec": spec_b - spec_a},
            **{"top_a": top_a, "top_b": top_b, "top": top_b - top_a},
        }

    point = figures(np.arange(len(keys)))
    ci = grouped_bootstrap(groups, figures, n_boot, seed)
    thresholds = (max_threshold(pa[malignant], TARGET_SENSITIVITY), max_threshold(pb[malignant], TARGET_SENSITIVITY))
    return FoldComparison(
        baseline=Path(baseline),
        candidate=Path(candidate),
        sources=tuple(sorted({k[0] for k in keys})),
        lesions=len(keys),
        malignant=int(malignant.sum()),
        auc=Paired(point["auc_a"], point["auc_b"], point["auc"], ci["auc"]),
        specificity_at_sensitivity=Paired(point["spec_a"], point["spec_b"], point["spec"], ci["spec"]),
        lesions_top_class_normal=Paired(point["top_a"], point["top_b"], point["top"], ci["top"]),
        normal_scans=_normal_scans(a, b, thresholds, n_boot, seed),
    )


def _normal_scans(a: FoldPredictions, b: FoldPredictions, thresholds: tuple[float, float], n_boot: int, seed: int) -> NormalScans | None:
    keys = [k for k in sorted(a.rows) if a.rows[k]["view"] == "full" and a.rows[k]["label"] == "normal"]
    if len(keys) < MIN_NORMAL_SCANS:
        return None
    groups = np.array([a.rows[k]["group"] for k in keys])
    probs_a, probs_b = a.probabilities(keys), b.probabilities(keys)
    top_a, top_b = probs_a.argmax(1) == 0, probs_b.argmax(1) == 0
    called_a, called_b = probs_a[:, 2] >= thresholds[0], probs_b[:, 2] >= thresholds[1]

    def figures(i: np.ndarray) -> dict[str, float]:
        shares = {"top_a": top_a[i].mean(), "top_b": top_b[i].mean(), "called_a": called_a[i].mean(), "called_b": called_b[i].mean()}
        out = {key: float(value) for key, value in shares.items()}
        return out | {"top": out["top_b"] - out["top_a"], "called": out["called_b"] - out["called_a"]}

    point = figures(np.arange(len(keys)))
    ci = grouped_bootstrap(groups, figures, n_boot, seed)
    return NormalScans(
        count=len(keys),
        top_class_normal=Paired(point["top_a"], point["top_b"], point["top"], ci["top"]),
        called_malignant=Paired(point["called_a"], point["called_b"], point["called"], ci["called"]),
    )


def ensemble_folds(folds: Sequence[Path], out_dir: Path) -> Path:
    """Write ``out_dir/report/external_predictions.csv``: per held-out image the mean of the folds' probabilities."""
    if len(folds) < 2:
        raise StudyError(f"an ensemble needs two folds or more, got {len(folds)}")
    read = [read_fold(f) for f in folds]
    keys = same_images(read)
    mean = np.mean([r.probabilities(keys) for r in read], axis=0)
    path = Path(out_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for key, row in zip(keys, mean):
            first = read[0].rows[key]
            writer.writerow([*key, first["label"], first["group"], *[f"{float(v):.6f}" for v in row]])
    return path
