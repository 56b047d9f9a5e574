"""``python -m device site-check CASES``: the device's model on a site's own biopsy-proven cases.

A model is validated on the scanners in its training data. On another scanner its scores can shift
(docs/model.md measured sensitivity falling from 0.97 to 0.81 on a held-out scanner). Before trusting the
threshold with a new scanner, a site collects biopsy-proven cases from it — a folder with ``labels.csv``
(``filename,label``; label ``malignant``, ``benign`` or ``normal``) and the images, as exported from the
scanner — and this check reports sensitivity and specificity at the threshold the device applies now, and
proposes a threshold that keeps sensitivity at the target on these cases (robustly, as the workstation
chooses the bundle's; never above the one the operating mode was validated with — ``[model] mode``, see
device/decision.py) with the configuration lines that apply it.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import SonopiError
from device.model.operating_point import robust_threshold, sensitivity_specificity

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
NOT_MALIGNANT = ("benign", "normal")
MIN_MALIGNANT = 20  # fewer malignant cases cannot support a threshold for 95 % sensitivity


class SiteCheckError(SonopiError):
    """The site's case folder cannot be used: no labels.csv, bad rows, missing images, too few cases."""

    code = "site_cases_invalid"


@dataclass(frozen=True)
class Case:
    path: Path
    malignant: bool


@dataclass(frozen=True)
class Scored:
    p_malignant: float
    inconclusive: bool


@dataclass(frozen=True)
class SiteReport:
    n_malignant: int
    n_not_malignant: int
    n_inconclusive: int  # the quality gate objected; their scores still count here
    applied_threshold: float  # what the device applies now (the bundle's or the site's)
    validated_threshold: float  # the bundle's
    applied_sensitivity: float
    applied_specificity: float
    proposed_threshold: float
    proposed_sensitivity: float
    proposed_specificity: float
    target_sensitivity: float
    confidence: float
    mode: str = "balanced"  # the operating mode whose threshold is checked (and may only be lowered)

    def config_line(self) -> str:
        return f'[model]\nmode = "{self.mode}"\nmalignant_threshold = {self.proposed_threshold:.4f}'


def read_cases(folder: Path) -> list[Case]:
    """The cases listed in ``folder/labels.csv``; images next to it or in ``images/``."""
    csv_path = folder / LABELS_FILE
    if not csv_path.is_file():
        raise SiteCheckError(f"{folder}: no {LABELS_FILE} (columns filename,label)")
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    cases, missing = [], []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "filename" not in fields or "label" not in fields:
            raise SiteCheckError(f"{csv_path}: needs 'filename' and 'label' columns, has {fields}")
        for line, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            label = row.get("label", "").lower()
            if label != "malignant" and label not in NOT_MALIGNANT:
                raise SiteCheckError(f"{csv_path} line {line}: label {label!r} is not malignant, benign or normal")
            path = image_dir / row.get("filename", "")
            if not row.get("filename") or not path.is_file():
                missing.append(row.get("filename") or f"(line {line}: no filename)")
                continue
            cases.append(Case(path, label == "malignant"))
    if missing:
        raise SiteCheckError(f"{csv_path}: {len(missing)} listed image(s) not found in {image_dir}, e.g. {missing[:3]}")
    return cases


def check_site(
    cases: list[Case],
    score: Callable[[Path], Scored],
    applied: float,
    validated: float,
    target_sensitivity: float = 0.95,
    confidence: float = 0.9,
    mode: str = "balanced",
) -> SiteReport:
    """Score every case with the device's model and report the applied and the proposed threshold."""
    malignant = np.array([c.malignant for c in cases])
    if malignant.sum() < MIN_MALIGNANT or (~malignant).sum() == 0:
        raise SiteCheckError(
            f"{int(malignant.sum())} malignant and {int((~malignant).sum())} other case(s): at least {MIN_MALIGNANT} "
            "biopsy-proven malignant cases and some benign ones are needed to choose a threshold"
        )
    scored = [score(c.path) for c in cases]
    p = np.array([s.p_malignant for s in scored])
    proposed, _ = robust_threshold(p[malignant], target_sensitivity, confidence)
    proposed = min(proposed, validated)  # a site may only lower the threshold

    applied_sens, applied_spec = sensitivity_specificity(malignant, p >= applied)
    proposed_sens, proposed_spec = sensitivity_specificity(malignant, p >= proposed)
    return SiteReport(
        int(malignant.sum()),
        int((~malignant).sum()),
        sum(s.inconclusive for s in scored),
        applied,
        validated,
        applied_sens,
        applied_spec,
        proposed,
        proposed_sens,
        proposed_spec,
        target_sensitivity,
        confidence,
        mode,
    )


def report_text(r: SiteReport) -> str:
    return "\n".join(
        [
            f"cases: {r.n_malignant} malignant, {r.n_not_malignant} benign/normal ({r.n_inconclusive} flagged inconclusive by the quality gate)",
            f"applied threshold {r.applied_threshold:.4f} ({r.mode} mode, validated with {r.validated_threshold:.4f}): "
            f"sensitivity {r.applied_sensitivity:.3f}, specificity {r.applied_specificity:.3f}",
            f"proposed threshold {r.proposed_threshold:.4f} (sensitivity >= {r.target_sensitivity:.2f} in {100 * r.confidence:.0f}% "
            f"of resamples of these cases): sensitivity {r.proposed_sensitivity:.3f}, specificity {r.proposed_specificity:.3f}",
            "to apply it on this device, put in the configuration:",
            r.config_line(),
        ]
    )
