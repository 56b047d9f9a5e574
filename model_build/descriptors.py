"""The outline descriptors of ``device/lesion_shape.py`` against the radiologist's BI-RADS lexicon.

BrEaST-Lesions-USG gives, per lesion, its mask and the radiologist's ``shape`` (oval / round / irregular) and
``margin`` (circumscribed / not circumscribed - ...). The descriptors are computed from the *reference* masks, so
this measures the rules, not a segmentation model. The patients are split in two halves (seeded): the rules'
thresholds are chosen on half A (best Cohen's kappa on a grid) and measured on half B — agreement and kappa with
95 % bootstrap CIs. The lexicon has no orientation column: orientation is reported as a distribution, not validated.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.lesion_shape import Margin, OutlineFeatures, Shape, ShapeRules, classify_shape, largest_contour, outline_features
from model_build.evaluate import grouped_bootstrap

SHAPES = {"oval": Shape.OVAL, "round": Shape.ROUND, "irregular": Shape.IRREGULAR}
GRID = {
    "irregular_below_solidity": np.round(np.arange(0.84, 0.97, 0.01), 3),
    "round_above_axis_ratio": np.round(np.arange(0.65, 0.91, 0.025), 3),
    "circumscribed_below_roughness": np.round(np.arange(0.040, 0.111, 0.005), 3),
}


class DescriptorDataError(ValueError):
    """The source has no usable lexicon rows (wrong folder, or its labels.csv lacks shape/margin/mask)."""


@dataclass(frozen=True)
class Lesion:
    patient: str
    shape: Shape
    margin: Margin
    features: OutlineFeatures


@dataclass(frozen=True)
class LexiconEntry:
    """One lesion of the lexicon with a mask and the radiologist's shape and margin."""

    filename: str  # the image, in images/
    mask: str  # its mask, in masks/
    patient: str
    shape: Shape
    margin: Margin


def read_lexicon(root: str | os.PathLike[str]) -> list[LexiconEntry]:
    """The lesions of ``root``'s labels.csv with a mask, a shape and a margin (BrEaST-Lesions-USG's lexicon)."""
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DescriptorDataError(f"{root}: no labels.csv (BrEaST-Lesions-USG expected)")
    with open(labels, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"filename", "mask", "shape", "margin", "patient_id"} - set(rows[0] if rows else {})
    if missing:
        raise DescriptorDataError(f"{labels}: missing column(s) {sorted(missing)}")
    out = []
    for row in rows:
        shape = SHAPES.get(row["shape"])
        if shape is None or not row["mask"] or not row["margin"] or row["margin"] == "not applicable":
            continue
        margin = Margin.CIRCUMSCRIBED if row["margin"] == "circumscribed" else Margin.NOT_CIRCUMSCRIBED
        out.append(LexiconEntry(row["filename"], row["mask"], row["patient_id"], shape, margin))
    return out


def read_lesions(root: str | os.PathLike[str]) -> list[Lesion]:
    """The lexicon's lesions with the features of their *reference* outlines (the masks)."""
    lesions = []
    for entry in read_lexicon(root):
        mask = cv2.imread(str(Path(root) / "masks" / entry.mask), cv2.IMREAD_GRAYSCALE)
        contour = largest_contour(mask) if mask is not None else None
        if contour is None:
            continue
        lesions.append(Lesion(entry.patient, entry.shape, entry.margin, outline_features(contour)))
    if not lesions:
        raise DescriptorDataError(f"{Path(root) / 'labels.csv'}: no lesion with a mask, a shape and a margin")
    return lesions


def predict(lesions: list[Lesion], rules: ShapeRules) -> tuple[list[Shape], list[Margin]]:
    shapes = [classify_shape(x.features, rules) for x in lesions]
    margins = [Margin.CIRCUMSCRIBED if x.features.roughness < rules.circumscribed_below_roughness else Margin.NOT_CIRCUMSCRIBED for x in lesions]
    return shapes, margins


def kappa(truth: list[str], called: list[str]) -> float:
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(truth, called)) if len(set(truth) | set(called)) > 1 else float("nan")


def choose_rules(lesions: list[Lesion]) -> ShapeRules:
    """The grid's thresholds with the best kappa on these lesions: shape (two thresholds) and margin apart."""
    truth_shape = [x.shape.value for x in lesions]
    truth_margin = [x.margin.value for x in lesions]
    best_shape = max(
        itertools.product(GRID["irregular_below_solidity"], GRID["round_above_axis_ratio"]),
        key=lambda t: kappa(truth_shape, [s.value for s in predict(lesions, ShapeRules(float(t[0]), float(t[1])))[0]]),
    )
    best_margin = max(
        GRID["circumscribed_below_roughness"],
        key=lambda m: kappa(truth_margin, [v.value for v in predict(lesions, ShapeRules(circumscribed_below_roughness=float(m)))[1]]),
    )
    return ShapeRules(float(best_shape[0]), float(best_shape[1]), float(best_margin))


def _figures(lesions: list[Lesion], rules: ShapeRules, idx: np.ndarray) -> dict[str, float]:
    chosen = [lesions[i] for i in idx]
    shapes, margins = predict(chosen, rules)
    out = {}
    for name, truth, called in (("shape", [x.shape for x in chosen], shapes), ("margin", [x.margin for x in chosen], margins)):
        t, c = [v.value for v in truth], [v.value for v in called]
        out[f"{name}:agreement"] = float(np.mean([a == b for a, b in zip(t, c)]))
        out[f"{name}:kappa"] = kappa(t, c)
    return out


def study(root: str | os.PathLike[str], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    lesions = read_lesions(root)
    rng = np.random.default_rng(seed)
    patients = sorted({x.patient for x in lesions})
    half_a = set(rng.permutation(patients)[: len(patients) // 2])
    a = [x for x in lesions if x.patient in half_a]
    b = [x for x in lesions if x.patient not in half_a]
    rules = choose_rules(a)
    idx = np.arange(len(b))
    values = _figures(b, rules, idx)
    cis = grouped_bootstrap(np.array([x.patient for x in b]), lambda i: _figures(b, rules, i), n_boot, seed)
    wide = [x.features.width_px >= x.features.depth_px for x in lesions]
    return {
        "source": str(root),
        "lesions": len(lesions),
        "chosen_on": len(a),
        "measured_on": len(b),
        "rules": asdict(rules),
        "figures": {k: {"value": v, "ci95": list(cis[k])} for k, v in values.items()},
        "orientation_parallel_fraction_px": float(np.mean(wide)),
    }


def table(result: dict[str, Any]) -> list[str]:
    f = result["figures"]

    def cell(key: str) -> str:
        e = f[key]
        return f"{e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"

    r = result["rules"]
    return [
        f"{result['lesions']} lesions with a mask and the radiologist's shape and margin; thresholds chosen on "
        f"{result['chosen_on']} patients, measured on the other {result['measured_on']} (95 % CIs resampling patients)",
        f"rules: irregular below solidity {r['irregular_below_solidity']}, round above axis ratio "
        f"{r['round_above_axis_ratio']}, circumscribed below roughness {r['circumscribed_below_roughness']}",
        "",
        "| descriptor | agreement | Cohen's kappa |",
        "|---|---|---|",
        f"| shape (oval / round / irregular) | {cell('shape:agreement')} | {cell('shape:kappa')} |",
        f"| margin (circumscribed / not) | {cell('margin:agreement')} | {cell('margin:kappa')} |",
        "",
        f"orientation: not in the lexicon, not validated; {result['orientation_parallel_fraction_px']:.1%} of the outlines "
        "are wider than deep (in pixels)",
    ]
