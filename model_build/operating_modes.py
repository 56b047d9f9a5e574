"""Operating modes and categories, chosen and validated on sources the model never saw.

A leave-one-source-out study trains one model per fold with a whole source held out
(``model_build build --external-test source=<name>``); each fold writes its held-out images' int8
probabilities to ``report/external_predictions.csv``. Pooled, those out-of-source predictions are what
an unseen scanner looks like to this recipe, and every decision the device takes is chosen on them:

* ``lesion_threshold`` on p(lesion) = 1 - p(normal): the value that best separates normal tissue from
  lesions, averaged over the held-out sources (each source counts once, whatever its size);
* per mode a ``malignant_threshold`` on p(malignant): the highest value at which *every* held-out source
  keeps the mode's target sensitivity (``MODE_TARGETS``), so no single source's cancers pay for another's;
* the figures of each mode (sensitivity, specificity, normal scans called malignant) and each category's
  observed malignancy rate, with 95 % CIs resampling patients / near-duplicate groups.

Normal scans: only BUSI has real ones. Lesion-free views cut from the other sources' lesion images
(``model_build.lesion_views``) stand in for their normals and are reported apart, as *views*.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.model.operating_point import max_threshold
from model_build.evaluate import binary_auc, grouped_bootstrap
from model_build.lesion_views import LESION_FREE

if TYPE_CHECKING:
    from device.model.bundle import ModelBundle
    from model_build.data import Sample

log = logging.getLogger(__name__)

PREDICTIONS_FILE = Path("report") / "external_predictions.csv"
LABELS = ("normal", "benign", "malignant")
MODE_TARGETS = {"high_sensitivity": 0.97, "balanced": 0.90, "high_specificity": 0.80}  # sensitivity on every held-out source
DEFAULT_MODE = "balanced"
CATEGORIES = ("no_lesion", "low_suspicion", "suspicious")
PROBABILITY_COLUMNS = tuple(f"p_{name}" for name in LABELS)
KEY_COLUMNS = ("source", "file", "view")
COLUMNS = (*KEY_COLUMNS, "label", "group", *PROBABILITY_COLUMNS)


class StudyError(ValueError):
    """The folds cannot be pooled: a file is missing, malformed, or a source is held out twice."""


@dataclass(frozen=True)
class HeldOutScores:
    """Out-of-source predictions of every fold, pooled: one row per held-out image or view."""

    source: np.ndarray
    view: np.ndarray  # "full" | "lesion_free"
    label: np.ndarray  # "normal" | "benign" | "malignant"
    group: np.ndarray  # patient / near-duplicate group (for the bootstrap)
    probs: np.ndarray  # [N, 3] calibrated int8 probabilities in LABELS order
    fold: np.ndarray  # the fold directory's name

    def subset(self, mask: np.ndarray) -> HeldOutScores:
        return HeldOutScores(self.source[mask], self.view[mask], self.label[mask], self.group[mask], self.probs[mask], self.fold[mask])

    @property
    def p_malignant(self) -> np.ndarray:
        return self.probs[:, 2]

    @property
    def p_lesion(self) -> np.ndarray:
        return 1.0 - self.probs[:, 0]


Key = tuple[str, str, str]


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's held-out rows, keyed by (source, file, view)."""

    fold: Path
    rows: dict[Key, dict[str, str]]

    def probabilities(self, keys: Sequence[Key]) -> np.ndarray:
        return np.array([[float(self.rows[k][c]) for c in PROBABILITY_COLUMNS] for k in keys])


def read_fold(fold: Path) -> FoldPredictions:
    """A fold's ``report/external_predictions.csv``, every column checked, each row keyed once."""
    path = Path(fold) / PREDICTIONS_FILE
    if not path.is_file():
        raise StudyError(f"fold {fold}: no {PREDICTIONS_FILE} (was it built with --external-test, or scored?)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise StudyError(f"{path}: missing column(s) {sorted(missing)}")
        rows: dict[Key, dict[str, str]] = {}
        for line, row in enumerate(reader, start=2):
            key = (row["source"], row["file"], row["view"])
            if key in rows:
                raise StudyError(f"{path} line {line}: {key} appears twice")
            if row["label"] not in LABELS:
                raise StudyError(f"{path} line {line}: label {row['label']!r} is not one of {LABELS}")
            try:
                values = [float(row[c]) for c in PROBABILITY_COLUMNS]
            except ValueError:
                raise StudyError(f"{path} line {line}: a probability is not a number: {[row[c] for c in PROBABILITY_COLUMNS]}") from None
            if not all(0.0 <= v <= 1.0 for v in values):
                raise StudyError(f"{path} line {line}: probabilities {values} are not in [0, 1]")
            rows[key] = row
    if not rows:
        raise StudyError(f"{path}: no rows")
    return FoldPredictions(Path(fold), rows)


def read_folds(fold_dirs: Sequence[Path]) -> HeldOutScores:
    """Pool the folds' ``report/external_predictions.csv`` (each read by :func:`read_fold`). Each source may be held
    out by one fold only."""
    columns: dict[str, list[Any]] = {k: [] for k in ("source", "view", "label", "group", "probs", "fold")}
    owner: dict[str, str] = {}
    for fold in fold_dirs:
        for row in read_fold(fold).rows.values():
            if owner.setdefault(row["source"], str(fold)) != str(fold):
                raise StudyError(f"source {row['source']!r} is held out by two folds: {owner[row['source']]} and {fold}")
            columns["source"].append(row["source"])
            columns["view"].append(row["view"])
            columns["label"].append(row["label"])
            columns["group"].append(f"{Path(fold).name}:{row['group']}")
            columns["probs"].append([float(row[c]) for c in PROBABILITY_COLUMNS])
            columns["fold"].append(Path(fold).name)
    return HeldOutScores(*(np.array(columns[k]) for k in ("source", "view", "label", "group", "probs", "fold")))


def _real(scores: HeldOutScores) -> np.ndarray:
    return scores.view == "full"


def choose_lesion_threshold(scores: HeldOutScores) -> float:
    """The p(lesion) cut maximising (normal specificity + lesion sensitivity) / 2, averaged over sources
    that have both normal tissue (scans or lesion-free views) and lesions."""
    values = np.unique(scores.p_lesion)
    candidates = (values[:-1] + values[1:]) / 2  # midway between observed values; ties go to the lowest (more lesions seen)
    candidates = candidates[(candidates > 0.01) & (candidates < 0.99)]
    if len(candidates) == 0:
        raise StudyError("no usable p(lesion) values to choose a lesion threshold from")
    per_source = []
    for source in sorted(set(scores.source.tolist())):
        s = scores.subset(scores.source == source)
        normal = s.label == "normal"
        lesion = (s.label != "normal") & (s.view == "full")
        if not normal.any() or not lesion.any():
            continue
        pl = s.p_lesion
        per_source.append([(np.mean(pl[normal] < t) + np.mean(pl[lesion] >= t)) / 2 for t in candidates])
    if not per_source:
        raise StudyError("no held-out source has both normal tissue and lesions: cannot choose a lesion threshold")
    return float(candidates[int(np.argmax(np.mean(per_source, axis=0)))])


def choose_mode_thresholds(scores: HeldOutScores, targets: dict[str, float] = MODE_TARGETS) -> dict[str, float]:
    """Per mode the highest p(malignant) threshold at which every held-out source meets the target sensitivity."""
    malignant = (scores.label == "malignant") & _real(scores)
    out: dict[str, float] = {}
    for mode, target in targets.items():
        per_source = []
        for source in sorted(set(scores.source[malignant].tolist())):
            per_source.append(max_threshold(scores.p_malignant[malignant & (scores.source == source)], target))
        if not per_source:
            raise StudyError("no malignant held-out image: cannot choose malignant thresholds")
        out[mode] = min(per_source)
    ordered = [out[m] for m in targets]
    if any(a > b for a, b in zip(ordered, ordered[1:])):
        raise StudyError(f"mode thresholds are not ordered by sensitivity: {out}")
    return out


def categorise(
    scores: HeldOutScores, malignant_threshold: float, lesion_threshold: float, rule: Callable[[float, float], str] | None = None
) -> np.ndarray:
    """The device's own rule (``device.decision.categorise``, one definition) on every pooled score. ``rule``: the
    same rule with the thresholds bound and its answers remembered (the bootstrap asks about the same images)."""
    return np.array(
        [(rule or _bound_rule(malignant_threshold, lesion_threshold))(float(pm), float(pl)) for pm, pl in zip(scores.p_malignant, scores.p_lesion)],
        dtype=object,
    )


def _bound_rule(malignant_threshold: float, lesion_threshold: float) -> Callable[[float, float], str]:
    from functools import cache

    from device.decision import categorise as device_rule

    @cache
    def rule(p_malignant: float, p_lesion: float) -> str:
        return device_rule(p_malignant, p_lesion, malignant_threshold, lesion_threshold).value

    return rule


def _ci_entry(value: float, ci: tuple[float, float], n: int) -> dict[str, Any]:
    return {
        "value": None if not np.isfinite(value) else round(float(value), 4),
        "ci95": [None if not np.isfinite(c) else round(float(c), 4) for c in ci],
        "n": int(n),
    }


def with_ci(
    scores: HeldOutScores, statistic: Callable[[HeldOutScores], dict[str, tuple[float, int]]], n_boot: int, seed: int
) -> dict[str, dict[str, Any]]:
    point = statistic(scores)
    ci = grouped_bootstrap(scores.group, lambda idx: {k: v for k, (v, _) in statistic(scores.subset(idx)).items()}, n_boot, seed)
    return {k: _ci_entry(v, ci.get(k, (float("nan"), float("nan"))), n) for k, (v, n) in point.items()}


def _rate(mask: np.ndarray, hit: np.ndarray) -> tuple[float, int]:
    n = int(mask.sum())
    return (float(np.mean(hit[mask])) if n else float("nan")), n


def mode_statistics(t: float) -> Callable[[HeldOutScores], dict[str, tuple[float, int]]]:
    def stats(s: HeldOutScores) -> dict[str, tuple[float, int]]:
        real = _real(s)
        flagged = s.p_malignant >= t
        return {
            "sensitivity": _rate(real & (s.label == "malignant"), flagged),
            "specificity": _rate(real & (s.label != "malignant"), ~flagged),
            "benign_called_suspicious": _rate(real & (s.label == "benign"), flagged),
            "normals_called_malignant": _rate(real & (s.label == "normal"), flagged),
            "normal_views_called_malignant": _rate((s.view == LESION_FREE), flagged),
        }

    return stats


def category_statistics(t: float, lesion_threshold: float) -> Callable[[HeldOutScores], dict[str, tuple[float, int]]]:
    rule = _bound_rule(t, lesion_threshold)  # one per mode: every resample reuses its answers

    def stats(s: HeldOutScores) -> dict[str, tuple[float, int]]:
        real = _real(s)
        cats = categorise(s, t, lesion_threshold, rule)
        out = {c: _rate(real & (cats == c), s.label == "malignant") for c in CATEGORIES}
        out["normals_no_lesion"] = _rate(real & (s.label == "normal"), cats == "no_lesion")
        out["normal_views_no_lesion"] = _rate(s.view == LESION_FREE, cats == "no_lesion")
        return out

    return stats


def source_statistics(s: HeldOutScores) -> dict[str, tuple[float, int]]:
    real = _real(s)
    lesions = real & (s.label != "normal")
    normals = real & (s.label == "normal")
    top_normal = s.probs.argmax(axis=1) == 0
    return {
        "malignant_auc_lesions": (binary_auc(s.label[lesions] == "malignant", s.p_malignant[lesions]), int(lesions.sum())),
        "malignant_auc_all": (binary_auc(s.label[real] == "malignant", s.p_malignant[real]), int(real.sum())),
        "lesion_auc_with_views": (
            binary_auc(s.label[real | (s.view == LESION_FREE)] != "normal", s.p_lesion[real | (s.view == LESION_FREE)]),
            int((real | (s.view == LESION_FREE)).sum()),
        ),
        "normals_top_class_normal": _rate(normals, top_normal),
        "normal_views_top_class_normal": _rate(s.view == LESION_FREE, top_normal),
        "three_class_accuracy": _rate(real, s.probs.argmax(axis=1) == np.array([LABELS.index(x) for x in s.label], dtype=np.int64)),
    }


def study(fold_dirs: Sequence[Path], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Choose the lesion and mode thresholds on the pooled out-of-source predictions and measure them,
    pooled and per held-out source."""
    scores = read_folds(fold_dirs)
    lesion_threshold = choose_lesion_threshold(scores)
    thresholds = choose_mode_thresholds(scores)
    sources = sorted(set(scores.source.tolist()))
    modes: dict[str, Any] = {}
    for mode, t in thresholds.items():
        per_source = {src: with_ci(scores.subset(scores.source == src), mode_statistics(t), n_boot, seed) for src in sources}
        modes[mode] = {
            "target_sensitivity": MODE_TARGETS[mode],
            "malignant_threshold": round(t, 6),
            "figures": with_ci(scores, mode_statistics(t), n_boot, seed),
            "per_source": per_source,
            "categories": with_ci(scores, category_statistics(t, lesion_threshold), n_boot, seed),
        }
        log.info(
            "mode %s: threshold %.4f, pooled sensitivity %s specificity %s",
            mode,
            t,
            modes[mode]["figures"]["sensitivity"]["value"],
            modes[mode]["figures"]["specificity"]["value"],
        )
    return {
        "validation": "leave-one-source-out",
        "folds": [str(Path(f).name) for f in fold_dirs],
        "held_out_sources": sources,
        "n": {
            src: {lab: int(((scores.source == src) & (scores.label == lab) & _real(scores)).sum()) for lab in LABELS}
            | {"lesion_free_views": int(((scores.source == src) & (scores.view == LESION_FREE)).sum())}
            for src in sources
        },
        "lesion_threshold": round(lesion_threshold, 4),
        "per_source": {src: with_ci(scores.subset(scores.source == src), source_statistics, n_boot, seed) for src in sources},
        "modes": modes,
        "default_mode": DEFAULT_MODE,
    }


def decision_block(result: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``decision`` object (docs/model-bundle.md) from a study result."""

    def known(entry: dict[str, Any]) -> bool:  # a figure with no cases behind it is left out, never written as 0
        return entry["value"] is not None and None not in entry["ci95"]

    modes = {}
    for mode, m in result["modes"].items():
        figures = {
            k: {"value": v["value"], "ci95": v["ci95"], "n": v["n"]}
            for k, v in m["figures"].items()
            if k in ("sensitivity", "specificity", "normals_called_malignant") and known(v)
        }
        categories = {c: {"malignancy_rate": m["categories"][c]} for c in CATEGORIES if known(m["categories"][c])}
        modes[mode] = {"malignant_threshold": m["malignant_threshold"], "figures": figures, "categories": categories}
    return {
        "p_malignant": "softmax",
        "lesion_threshold": result["lesion_threshold"],
        "default_mode": result["default_mode"],
        "validation": f"leave-one-source-out ({', '.join(result['held_out_sources'])} held out in turn)",
        "modes": modes,
    }


def store_in_bundle(bundle_dir: Path, result: dict[str, Any]) -> ModelBundle:
    """Give a bundle the study's decision (manifest format 3), and its figures to the report and the card.

    The malignant threshold of the default mode becomes ``thresholds.malignant`` too, so a device that
    reads only ``thresholds`` (an older release) flags the same images as the default mode."""
    import hashlib
    import json

    from device.model.bundle import Manifest, edit_bundle, load_bundle
    from model_build.card import model_card_text
    from model_build.report import REPORT_FILE, read_report

    bundle = load_bundle(bundle_dir)
    report = read_report(bundle.path)
    report.leave_one_source_out = result
    block = decision_block(result)
    default_threshold = block["modes"][block["default_mode"]]["malignant_threshold"]
    # A new version: results judged by these thresholds must be told apart from earlier ones (at the hub too).
    digest = hashlib.sha256(json.dumps(block, sort_keys=True).encode("utf-8")).hexdigest()[:8]
    version = f"{bundle.manifest.version.split('+modes-')[0]}+modes-{digest}"
    data = {
        **bundle.manifest.to_dict(),
        "version": version,
        "format_version": 3,
        "decision": block,
        "thresholds": {**bundle.manifest.thresholds, "malignant": float(default_threshold)},
    }
    manifest = Manifest.from_dict(data, source=f"{bundle_dir} (with the study's decision)")  # validated as any read
    return edit_bundle(
        bundle.path,
        manifest=manifest,
        files={
            str(REPORT_FILE): report.to_bytes(),
            "MODEL_CARD.md": model_card_text(manifest, report).encode("utf-8"),
        },
    )


def scored_group(sample: Sample) -> str:
    """A scored image's bootstrap group in a fold written by ``score`` / ``region-score``: its patient, else its file."""
    return f"{sample.source}:patient:{sample.patient_id}" if sample.patient_id else f"{sample.source}:file:{sample.path.name}"


def score_sources(bundle_dir: Path, roots: Sequence[Path], out_dir: Path, mirror: bool = False) -> Path:
    """Score whole sources (with their lesion-free views) with a bundle's int8 model, as a fold of the study.

    For a source the bundle never trained on, this *is* a held-out fold: e.g. an older bundle on a newer
    source, to compare recipes on the same unseen images. Writes ``out_dir/report/external_predictions.csv``.
    ``mirror``: each image's probabilities are the mean of the image's and its left-right mirror's (the model input
    mirrored, letterbox included), to measure mirror averaging on unseen sources before any device runs it."""
    from device.model.bundle import load_bundle
    from device.model.runtime import bundle_probabilities
    from model_build.data import decode_sample, scan_source
    from model_build.lesion_views import LESION_CENTRED
    from model_build.pipeline import write_predictions

    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    if tuple(m.labels) != LABELS:
        raise StudyError(f"bundle {bundle_dir}: labels {m.labels}, the study needs {LABELS}")
    samples = [s for root in roots for s in scan_source(root, lesion_views=True)[0] if s.view != LESION_CENTRED]
    pixels = np.stack([decode_sample(s, m.input) for s in samples])
    probs = bundle_probabilities(bundle, pixels)  # the device's runner and rule, a site head included
    if mirror:
        probs = (probs + bundle_probabilities(bundle, np.ascontiguousarray(pixels[:, :, ::-1]))) / 2
    groups = np.array([scored_group(s) for s in samples])
    path = Path(out_dir) / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(path, samples, groups, probs, LABELS)
    how = " and their mirrors" if mirror else ""
    log.info("scored %d image(s) and view(s)%s of %s with %s %s", len(samples), how, ", ".join(map(str, roots)), m.name, m.version)
    return path
