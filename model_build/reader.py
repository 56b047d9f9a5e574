"""The sonographer's BI-RADS category as a reference reader on the same held-out images.

BUS-BRA gives, for every image, the BI-RADS category a senior ultrasonographer assigned at the
examination (2-5) and the biopsy result. On the test images that carry a category, this module puts
the model's p(malignant) beside that category:

* ROC AUC of each, and their difference. BI-RADS is an ordinal score with few levels, so its ROC curve
  has only a few operating points and tied images count half: its AUC is what that scale allows.
* The reader at the biopsy cut-point (BI-RADS >= 4): sensitivity and specificity.
* The model at the reader's sensitivity (its threshold matched on these same images — a description,
  not an operating point) and at the shipped threshold.

95% CIs resample patients (the split's groups), pairing model and reader on the same resample.
It is a retrospective comparison, not a reader study: the ultrasonographer saw the live examination
and the patient; the model sees one still frame.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.model.bundle import load_bundle
from device.model.operating_point import max_threshold, sensitivity_specificity
from model_build.card import store_report_section
from model_build.data import Sample
from model_build.evaluate import binary_auc, grouped_bootstrap
from model_build.rescore import RescoreError, score_test_split

log = logging.getLogger(__name__)

BIOPSY_CUTPOINT = 4.0  # BI-RADS 4 and above: biopsy recommended
MIN_IMAGES_PER_CLASS = 5  # fewer malignant or benign images with a category: no comparison
_BIRADS = re.compile(r"^([1-5])([abc])?$")
_SUBCATEGORY = {"a": 0.25, "b": 0.5, "c": 0.75}


def parse_birads(text: str | None) -> float | None:
    """``"4"`` -> 4.0, ``"4b"`` -> 4.5; ``None`` for a missing, incomplete (0), known-cancer (6) or unreadable value.

    Category 6 is a biopsy-proven malignancy: it is the label, not a reading, so it is never compared.
    """
    if text is None:
        return None
    match = _BIRADS.match(text.strip().lower())
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2):
        if value != 4.0:
            return None  # only category 4 has subcategories
        value += _SUBCATEGORY[match.group(2)]
    return value


@dataclass(frozen=True)
class ReaderInputs:
    """One row per test image that carries a BI-RADS category."""

    malignant: np.ndarray  # [N] bool, biopsy / dataset label
    model_score: np.ndarray  # [N] calibrated p(malignant)
    birads: np.ndarray  # [N] category as a number (4a = 4.25 ...)
    groups: np.ndarray  # [N] patient / group ids for the bootstrap


def select_with_birads(
    samples: Sequence[Sample], malignant: np.ndarray, model_score: np.ndarray, groups: np.ndarray
) -> tuple[ReaderInputs, dict[str, int], list[str]]:
    """Keep the full images whose sample carries a readable ``birads`` value. Returns them, the count of why
    others were left out, and the sources of the kept ones. A view cut from an image (model_build.lesion_views)
    keeps the image's metadata, but the reading describes the image's lesion, not the view: views are left out."""
    full = [s.view == "full" for s in samples]
    raw = [s.meta("birads") if f else None for s, f in zip(samples, full)]
    values = [parse_birads(r) for r in raw]
    keep = np.array([v is not None for v in values], dtype=bool)
    left_out = {
        "no_birads_column": sum(1 for r, f in zip(raw, full) if f and r is None),
        "unreadable_or_not_a_reading": sum(1 for r, v in zip(raw, values) if r is not None and v is None),
        "view_cut_from_an_image": full.count(False),
    }
    birads = np.array([v if v is not None else np.nan for v in values], dtype=np.float64)
    sources = sorted({s.source for s, k in zip(samples, keep) if k})
    return ReaderInputs(malignant[keep], model_score[keep], birads[keep], groups[keep]), left_out, sources


def specificity_at_sensitivity(malignant: np.ndarray, score: np.ndarray, sensitivity: float) -> tuple[float, float]:
    """The highest threshold that flags at least ``sensitivity`` of the malignant images, and the specificity there."""
    if not malignant.any() or not (~malignant).any():
        return float("nan"), float("nan")
    threshold = max_threshold(score[malignant], sensitivity)
    return threshold, float((score[~malignant] < threshold).mean())


def _statistics(x: ReaderInputs, model_threshold: float | None) -> dict[str, float]:
    reader_flag = x.birads >= BIOPSY_CUTPOINT
    reader_sens, reader_spec = sensitivity_specificity(x.malignant, reader_flag)
    matched_threshold, matched_spec = specificity_at_sensitivity(x.malignant, x.model_score, reader_sens)
    out = {
        "reader_auc": binary_auc(x.malignant, x.birads),
        "model_auc": binary_auc(x.malignant, x.model_score),
        "reader_sensitivity": reader_sens,
        "reader_specificity": reader_spec,
        "model_specificity_at_reader_sensitivity": matched_spec,
        "model_threshold_at_reader_sensitivity": matched_threshold,
    }
    out["auc_difference"] = out["model_auc"] - out["reader_auc"]
    out["specificity_difference"] = matched_spec - reader_spec
    if model_threshold is not None:
        sens, spec = sensitivity_specificity(x.malignant, x.model_score >= model_threshold)
        out["model_sensitivity_at_shipped_threshold"] = sens
        out["model_specificity_at_shipped_threshold"] = spec
    return out


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined figure (e.g. a resample without a benign image) is stored as null."""
    return float(value) if math.isfinite(value) else None


def compare(x: ReaderInputs, model_threshold: float | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Model vs reader on the same images, each figure with a paired, patient-resampled 95% CI.

    Returns ``{"skipped": reason}`` when there are too few images of either class to compare."""
    n_malignant, n_benign = int(x.malignant.sum()), int((~x.malignant).sum())
    if min(n_malignant, n_benign) < MIN_IMAGES_PER_CLASS:
        return {
            "skipped": f"{n_malignant} malignant and {n_benign} benign image(s) carry a BI-RADS category; "
            f"at least {MIN_IMAGES_PER_CLASS} of each are needed"
        }
    values = _statistics(x, model_threshold)

    def resample(idx: np.ndarray) -> dict[str, float]:
        return _statistics(ReaderInputs(x.malignant[idx], x.model_score[idx], x.birads[idx], x.groups[idx]), model_threshold)

    ci = grouped_bootstrap(x.groups, resample, n_boot, seed)
    figures = {key: {"value": _finite(value), "ci95": [_finite(v) for v in ci[key]]} for key, value in values.items()}
    log.info(
        "reader comparison on %d images: model AUC %.3f vs BI-RADS AUC %.3f; at BI-RADS>=4 sensitivity %.3f the model's "
        "specificity is %.3f vs the reader's %.3f",
        len(x.malignant),
        values["model_auc"],
        values["reader_auc"],
        values["reader_sensitivity"],
        values["model_specificity_at_reader_sensitivity"],
        values["reader_specificity"],
    )
    return {
        "n_images": int(len(x.malignant)),
        "n_groups": int(len(np.unique(x.groups))),
        "n_malignant": n_malignant,
        "n_benign": n_benign,
        "birads_counts": {f"{v:g}": int((x.birads == v).sum()) for v in np.unique(x.birads)},
        "biopsy_cutpoint": BIOPSY_CUTPOINT,
        "model_threshold": model_threshold,
        "figures": figures,
    }


def compare_on_samples(
    samples: Sequence[Sample],
    malignant: np.ndarray,
    model_score: np.ndarray,
    groups: np.ndarray,
    model_threshold: float | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`compare` on the samples that carry a BI-RADS category, with the sources they came from."""
    inputs, left_out, sources = select_with_birads(samples, malignant, model_score, groups)
    result = compare(inputs, model_threshold, n_boot, seed)
    result["left_out"] = left_out
    result["sources"] = sources
    return result


def compare_bundle(bundle_dir: Path, roots: Sequence[str | os.PathLike[str]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The comparison for an already built bundle: its int8 model re-scored on its own test split."""
    bundle = load_bundle(bundle_dir)
    labels = bundle.manifest.labels
    if "malignant" not in labels:
        raise RescoreError(f"model bundle {bundle_dir}: no 'malignant' label ({', '.join(labels)})")
    scored = score_test_split(bundle, roots, keep=lambda s: parse_birads(s.meta("birads")) is not None)
    m = labels.index("malignant")
    malignant = np.array([s.label == "malignant" for s in scored.samples])
    result = compare_on_samples(
        scored.samples,
        malignant,
        scored.probs[:, m],
        scored.groups,
        bundle.manifest.thresholds.get("malignant"),
        n_boot,
        seed,
    )
    result["scored_by"] = "python -m model_build reader (the bundle's int8 model, re-run on its test split)"
    return result


def store_in_bundle(bundle_dir: Path, result: dict[str, Any]) -> None:
    """Add the comparison to ``report/metrics.json`` and rewrite ``MODEL_CARD.md`` from the bundle's own records."""
    store_report_section(bundle_dir, "reader_baseline", result)
