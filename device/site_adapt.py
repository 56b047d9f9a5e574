"""``python -m device site-adapt CASES --out DIR``: teach the device what "normal" looks like on this scanner.

On a scanner the model never saw, most normal breasts come out as benign or malignant. Every clinic can
produce normal scans on day one, so this refits the classifier's head — a dense layer on the pooled last
feature map, see device/head.py — on the clinic's own cases together with the base bundle's training images
(shipped in the bundle in compact form, ``head_data/features.npz``), and writes a *site bundle*: the same
model file, the refitted head in the manifest (``head``), version ``<base version>+site-<hash>``.

The procedure (docs/device.md, "Site onboarding"), all numpy, no TensorFlow:

1. read ``CASES/labels.csv`` (``filename,label[,patient_id]``, as ``site-check`` reads it); decode each image as
   ``classify`` does (``device.model.preprocess.prepare``), drop frames the quality gate refuses, and keep each image's
   pooled features and a few image statistics;
2. guards: at least :data:`MIN_NORMALS` normal images (and :data:`MIN_PATIENTS` patients when ids are given);
   refuse a folder where several images stand far apart from the rest in contrast and speckle grain
   (:func:`scanner_check`: another scanner mixed in);
3. hold out about a quarter of the site's patients (:data:`HOLDOUT_FRACTION`) for before/after figures;
4. fit a multinomial logistic head by Newton's method: weighted cross-entropy on the base training images
   (total weight 1) and the site's images (total weight ``site_weight``), plus an L2 penalty on the change from
   the base head, which may only move within the base features' principal directions (device.head.HeadData) —
   so it stays near the base head and the fit on the base images is exact. Only the ``normal`` column moves:
   the head learns what normal looks like here, and p(malignant) / p(benign) of every image stays the base
   head's. Site lesions, when given, are the counter-examples (this scanner's lesions are not normal). Refitting
   the lesion columns too was measured worse: on the base images they are in-sample (the backbone was trained
   on them), so the refit overfits them and the base test split's malignant AUC and sensitivity fell beyond
   the limits at every site weight;
5. no forgetting: the refitted head scores the base bundle's own held-out test split; the largest site weight of
   :data:`SITE_WEIGHTS` whose head keeps that split's malignant AUC within :data:`FORGET_AUC`, its normal recall
   and its malignant sensitivity at the threshold within :data:`FORGET_RECALL` of the base head's is taken; if
   none does, the site bundle is refused;
6. normals that look like lesions are listed for review, not silently trusted (this runs before step 4): those the
   base head gives p(malignant) >= :data:`REVIEW_BASE_P_MALIGNANT` are also left out of the fit (a cancer labelled
   normal would teach the head to miss cancers); those a head fitted without their patient still gives
   p(lesion) >= :data:`REVIEW_P_LESION` stay in (measured: leaving them out too cost 4 points of normals called
   normal on the other half, and they are the scanner's look the head has to learn);
7. the shipped head is refitted on every site case with the chosen weight; the operating thresholds stay the
   base bundle's (a refit never raises the malignant threshold);
8. temperature: with at least :data:`MIN_TEMPERATURE_LESIONS` biopsy-proven lesions among the held-out cases, the
   temperature is refitted on the held-out part (negative log-likelihood of their labels under the head fitted
   without them, :func:`fit_temperature`, numpy only) and taken only when it loses no cancer: the site's cancers'
   sensitivity at the threshold does not fall, and the base test split's malignant sensitivity and AUC stay within
   the no-forgetting limits; otherwise (normals only, too few lesions, or a refused temperature: recorded why) the
   base bundle's temperature stays.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.analysis import AnalysisOptions
from device.decision import MALIGNANT, NORMAL, Category, categorise
from device.errors import ImageDecodeError, SonopiError, SourceError
from device.head import HEAD_DATA_FILE, HeadData, pool_features
from device.model.bundle import ModelBundle
from device.model.operating_point import robust_threshold, sensitivity_specificity
from device.model.preprocess import prepare
from device.quality import image_problems
from device.site_check import LABELS_FILE, MIN_MALIGNANT, SiteCheckError, read_cases

log = logging.getLogger(__name__)

MIN_NORMALS = 30  # normal images the fit needs at least (after those listed for review); 200 recommended
MIN_PATIENTS = 10  # when patient ids are given: 50 images of 3 patients are 3 examples, not 50
HOLDOUT_FRACTION = 0.25  # share of the site's normal images (whole patients) kept out of the fit for the figures
SITE_WEIGHTS = (1.0, 0.5, 0.25, 0.1)  # the site's total weight beside the base training images' 1, tried in order
L2 = 0.001  # penalty on the change of the head (the loss is a weighted mean): keeps it near the base head
BIAS_L2 = 0.0002
FORGET_AUC = 0.01  # the base test split's malignant AUC may fall by at most this
FORGET_RECALL = 0.02  # its normal recall, and malignant sensitivity at the threshold, by at most this
REVIEW_P_LESION = 0.8  # a "normal" that a head fitted without it still gives p(lesion) >= this is listed for review
REVIEW_BASE_P_MALIGNANT = 0.75  # ... or that the base head gives p(malignant) >= this (BrEaST-Lesions-USG: 3 of 4
# malignant images, 1 in 20 lesion-free views)
REVIEW_SITE_WEIGHT = 1.0  # the site weight of those out-of-fold fits
FOLDS = 5
IMAGE_STATISTICS = ("mean", "std", "p99", "dark_share", "fine_texture", "corr_h", "corr_v")
SCANNER_STATISTICS = ("std", "fine_texture", "corr_h", "corr_v")  # what the scanner sets more than the anatomy
SCANNER_Z = 5.0  # an image this many robust spreads from the median in one of them is odd
SCANNER_MIN_ODD = 3  # a folder is mixed when at least this many images are odd ...
SCANNER_MIN_SHARE = 0.05  # ... and at least this share of them
TARGET_SENSITIVITY = 0.95  # with >= MIN_MALIGNANT site cancers: the malignant threshold is re-chosen for this, as
CONFIDENCE = 0.9  # site-check chooses it (robustly, in this share of resamples), and only ever lowered
MIN_TEMPERATURE_LESIONS = 10  # held-out biopsy-proven lesions (benign + malignant) a temperature refit needs
TEMPERATURE_RANGE = (0.05, 20.0)  # the refitted temperature is searched in this range
REPORT_FILE = "report/site_adapt.json"
MAX_VERSION_LENGTH = 64  # model.version in the result contract


class SiteAdaptError(SonopiError):
    """The site's cases cannot make a trustworthy site bundle: too few, mixed scanners, or the refit forgets."""

    code = "site_adapt_refused"


@dataclass(frozen=True)
class SiteCase:
    path: Path
    label: str  # normal | benign | malignant
    patient: str | None


def read_site_cases(folder: Path) -> list[SiteCase]:
    """The cases of ``folder/labels.csv`` (checked by :func:`device.site_check.read_cases`) with their label and
    patient. A folder of normal scans only is the usual day-one case."""
    checked = read_cases(folder)  # raises SiteCheckError naming the file, the line or the missing images
    with open(folder / LABELS_FILE, newline="", encoding="utf-8-sig") as fh:
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    if len(rows) != len(checked):
        raise SiteCheckError(f"{folder / LABELS_FILE}: {len(rows)} rows but {len(checked)} cases read")
    return [SiteCase(case.path, row["label"].lower(), row.get("patient_id") or None) for case, row in zip(checked, rows)]


# --- the site's images -----------------------------------------------------------------------------


@dataclass
class SiteData:
    """The usable cases with their pooled features ``x [N, C]`` and image statistics ``stats [N, S]``."""

    cases: list[SiteCase]
    x: np.ndarray
    stats: np.ndarray
    unfit: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): not decodable or refused by the gate
    sha256: str = ""  # of the cases' files, labels and patients

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.cases]


def image_statistics(grey: np.ndarray) -> np.ndarray:
    """The :data:`IMAGE_STATISTICS` of a grey crop: brightness, contrast, gain, dark share, and the speckle's
    grain (median neighbour difference over contrast; correlation of neighbouring pixels across and along the
    beam) — what a scanner model and its presets set, rather than the anatomy."""
    g = np.asarray(grey, dtype=np.float64)
    step = max(1, min(g.shape) // 256)
    g = g[::step, ::step]
    std = float(g.std()) + 1e-6

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        return float((a @ b) / (math.sqrt(float(a @ a) * float(b @ b)) + 1e-9))

    return np.array(
        [
            g.mean(),
            std,
            np.percentile(g, 99),
            float((g < 10).mean()),
            float(np.median(np.abs(np.diff(g, axis=1)))) / std,
            corr(g[:, :-1], g[:, 1:]),
            corr(g[:-1], g[1:]),
        ]
    )


def read_site_data(
    classifier: Any,
    cases: Sequence[SiteCase],
    options: AnalysisOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SiteData:
    """Every case as ``classify`` sees it under ``options`` (``AnalysisOptions.from_config``): decoded
    (``device.sources.files``; a multi-frame file gives its first or ``options.dicom_frame``), cropped (auto-crop,
    the configured ROI) and prepared (``device.model.preprocess.prepare``), through the model's feature map.
    A case the quality gate refuses (blank, colour, too small) is left out and reported."""
    spec = classifier.manifest.input
    kept: list[SiteCase] = []
    xs, stats, unfit = [], [], []
    digest = hashlib.sha256()
    for i, case in enumerate(cases):
        read = _read_case(classifier, case, spec, options or AnalysisOptions(), digest)
        if isinstance(read, str):
            unfit.append((case.path.name, read))
        else:
            kept.append(case)
            xs.append(read[0])
            stats.append(read[1])
        if progress is not None:
            progress(i + 1, len(cases))
    width = len(classifier.manifest.cam.weights) if classifier.manifest.cam else 0
    return SiteData(
        kept, np.array(xs).reshape(len(kept), width), np.array(stats).reshape(len(kept), len(IMAGE_STATISTICS)), unfit, digest.hexdigest()
    )


def _read_case(classifier: Any, case: SiteCase, spec: Any, options: AnalysisOptions, digest: Any) -> tuple[np.ndarray, np.ndarray] | str:
    """(pooled features, image statistics) of one case, or why it is left out."""
    from device.sources.files import frames_from_file

    try:
        frame = next(iter(frames_from_file(case.path, options.dicom_frame))).image
    except (ImageDecodeError, SourceError, StopIteration) as exc:
        return f"unreadable: {exc}"
    digest.update(hashlib.sha256(case.path.read_bytes()).digest())
    digest.update(f"\0{case.path.name}\0{case.label}\0{case.patient or ''}\n".encode())
    prepared = prepare(frame, spec, auto_crop=options.auto_crop, roi=options.roi, roi_mode=options.roi_mode)
    problems = image_problems(prepared.crop.apply(frame), classifier.limits)
    if problems:
        return "; ".join(problems)
    _, features = classifier.invoke(classifier.input_tensor(prepared.pixels), with_features=True)
    if features is None:
        raise SiteAdaptError(f"model {classifier.manifest.name} has no feature map output: it cannot be site-adapted")
    return pool_features(features), image_statistics(prepared.grey_crop)


# --- guards ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScannerCheck:
    """Do some images stand apart from the rest in the statistics a scanner sets (another scanner mixed in)?"""

    mixed: bool
    odd: tuple[str, ...]  # files whose statistics are far from the rest's (listed even when not refused)
    largest_z: float  # the largest robust z-score seen
    medians: dict[str, float]


def scanner_check(stats: np.ndarray, names: Sequence[str]) -> ScannerCheck:
    """Robust z-scores (median, MAD) of the :data:`SCANNER_STATISTICS` — contrast and speckle grain, which the
    scanner model and its processing set; brightness and gain follow the anatomy and the operator too. An image
    is odd when one of them is more than :data:`SCANNER_Z` robust spreads from the median; the folder is mixed
    when at least :data:`SCANNER_MIN_ODD` images and :data:`SCANNER_MIN_SHARE` of them are odd.

    Measured on the shared data (tests/device/test_site_adapt.py): within one scanner at most 1 image in 54-179 is odd
    (BUSI's GE LOGIQ E9 normals, BUS-BRA's Toshiba and GE images, BrEaST-Lesions-USG); 8 or 12 Toshiba views
    among 43 BrEaST-Lesions-USG normals: 4 and 8 of them are. A minority check: with 16 or more the median moves
    toward them and fewer stand out. Scanners alike in these statistics (BUSI's GE beside
    BrEaST-Lesions-USG) are not told apart: the check catches a clearly different scanner, not every one."""
    medians = {name: float(v) for name, v in zip(IMAGE_STATISTICS, np.median(stats, axis=0))} if len(stats) else {}
    if len(stats) < 10:
        return ScannerCheck(False, (), 0.0, medians)
    cols = [IMAGE_STATISTICS.index(name) for name in SCANNER_STATISTICS]
    x = stats[:, cols]
    centre = np.median(x, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(x - centre), axis=0), 1e-6)
    z = (np.abs(x - centre) / spread).max(axis=1)
    odd_mask = z > SCANNER_Z
    odd = tuple(name for name, flag in zip(names, odd_mask) if flag)
    mixed = len(odd) >= SCANNER_MIN_ODD and len(odd) >= SCANNER_MIN_SHARE * len(stats)
    return ScannerCheck(bool(mixed), odd, float(z.max()), medians)


# --- the fit -----------------------------------------------------------------------------------------


def softmax_rows(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    normalised: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return normalised


def fit_update(
    v: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    l2: float | Sequence[float] = L2,
    bias_l2: float = BIAS_L2,
    free: Sequence[int] | None = None,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """The head's change ``(A [r, K], db [K])`` minimising ``sum_i w_i CE(softmax(z_i + v_i A + db), y_i)
    + l2/2 |A|^2 + bias_l2/2 |db|^2`` by Newton's method with a backtracking line search (convex: it converges
    to the one minimum; the penalty keeps the Hessian positive definite). ``free``: the label columns that may
    change (default all); the others keep the base head's weights. ``l2`` may be one number per label column."""
    n, r = v.shape
    k = z.shape[1]
    cols = list(range(k)) if free is None else sorted(free)
    f = len(cols)
    a = np.hstack([np.asarray(v, dtype=np.float64), np.ones((n, 1))])
    onehot = np.eye(k)[y]
    per_label = np.broadcast_to(np.asarray(l2, dtype=np.float64), (k,))
    reg = np.vstack([np.tile(per_label, (r, 1)), np.full((1, k), bias_l2)])  # [r+1, K]
    theta = np.zeros((r + 1, k))

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        logits = z + a @ t
        logits = logits - logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = float(-(w * log_p[np.arange(n), y]).sum() + 0.5 * (reg * t**2).sum())
        return loss, np.exp(log_p)

    loss, p = objective(theta)
    for _ in range(max_iter):
        grad = (a.T @ (w[:, None] * (p - onehot)) + reg * theta)[:, cols]  # [r+1, f]
        if float(np.abs(grad).max()) < 1e-9:
            break
        hessian = np.zeros(((r + 1) * f, (r + 1) * f))
        for i, ci in enumerate(cols):
            for j, cj in enumerate(cols):
                coef = w * (p[:, ci] * ((ci == cj) - p[:, cj]))
                block = (a * coef[:, None]).T @ a
                if i == j:
                    block = block + np.diag(reg[:, ci])
                hessian[i * (r + 1) : (i + 1) * (r + 1), j * (r + 1) : (j + 1) * (r + 1)] = block
        step = np.zeros_like(theta)
        step[:, cols] = -np.linalg.solve(hessian, grad.T.reshape(-1)).reshape(f, r + 1).T
        slope = float((grad * step[:, cols]).sum())
        size = 1.0
        while True:
            new_loss, new_p = objective(theta + size * step)
            if new_loss <= loss + 1e-4 * size * slope or size < 1e-6:
                break
            size *= 0.5
        theta = theta + size * step
        improvement = loss - new_loss
        loss, p = new_loss, new_p
        if improvement < 1e-12:
            break
    return theta[:r], theta[r]


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_RANGE) -> float:
    """The temperature ``T`` minimising the mean negative log-likelihood of the labels ``y`` under
    ``softmax(logits / T)``. In ``s = 1/T`` the loss is convex (log-sum-exp of a linear function minus a linear one),
    its derivative ``E_p[z] - z_y`` increases with ``s``, so bisection on its sign finds the one minimum in the range
    (a bound when the minimum lies beyond it)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(z) == 0:
        raise ValueError(f"fit_temperature: logits {z.shape} and labels {y.shape} do not match")
    z_true = z[np.arange(len(y)), y]

    def slope(s: float) -> float:
        p = softmax_rows(z * s)
        return float(((p * z).sum(axis=1) - z_true).mean())

    low, high = 1.0 / bounds[1], 1.0 / bounds[0]
    if slope(low) >= 0:
        return bounds[1]
    if slope(high) <= 0:
        return bounds[0]
    for _ in range(60):
        mid = 0.5 * (low + high)
        if slope(mid) > 0:
            high = mid
        else:
            low = mid
    return 1.0 / (0.5 * (low + high))


def mean_nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax_rows(logits, temperature)
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-300)).mean())


# --- figures -----------------------------------------------------------------------------------------


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half); NaN when a side is empty."""
    positive, negative = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    values = np.concatenate([positive, negative])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2.0
    return float(u / (len(positive) * len(negative)))


@dataclass(frozen=True)
class Rule:
    """The decision rule's numbers a figure is computed at (the base bundle's default mode)."""

    labels: tuple[str, ...]
    temperature: float
    malignant_threshold: float
    lesion_threshold: float

    def categories(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = softmax_rows(logits, self.temperature)
        p_mal = p[:, self.labels.index(MALIGNANT)]
        p_lesion = 1.0 - p[:, self.labels.index(NORMAL)]
        cats = np.array([categorise(m, le, self.malignant_threshold, self.lesion_threshold).value for m, le in zip(p_mal, p_lesion)])
        return cats, p


def figures(logits: np.ndarray, y: np.ndarray, rule: Rule) -> dict[str, Any]:
    """What a clinician sees on these cases: normals called normal / malignant; with lesions, malignant
    sensitivity at the threshold, lesions called a lesion, the malignant AUC (against everything else) and the
    benign-vs-malignant AUC."""
    cats, p = rule.categories(logits)
    labels = np.array(rule.labels)[y]
    p_mal = p[:, rule.labels.index(MALIGNANT)]
    out: dict[str, Any] = {"n": {name: int((labels == name).sum()) for name in rule.labels}}

    def share(mask: np.ndarray, category: str) -> float | None:
        return round(float((cats[mask] == category).mean()), 4) if mask.any() else None

    normal, malignant, benign = labels == NORMAL, labels == MALIGNANT, labels == "benign"
    out["normals_called_normal"] = share(normal, Category.NO_LESION.value)
    out["normals_called_malignant"] = share(normal, Category.SUSPICIOUS.value)
    out["malignant_sensitivity"] = share(malignant, Category.SUSPICIOUS.value)
    lesion = malignant | benign
    out["lesions_called_lesion"] = round(float((cats[lesion] != Category.NO_LESION.value).mean()), 4) if lesion.any() else None
    mal_auc = auc(p_mal[malignant], p_mal[~malignant])
    bm_auc = auc(p_mal[malignant], p_mal[benign])
    out["auc_malignant"] = None if math.isnan(mal_auc) else round(mal_auc, 4)
    out["auc_benign_vs_malignant"] = None if math.isnan(bm_auc) else round(bm_auc, 4)
    return out


def forgetting(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What got worse on the base test split beyond the limits (empty: nothing forgotten)."""
    problems = []
    for key, limit in (("auc_malignant", FORGET_AUC), ("normals_called_normal", FORGET_RECALL), ("malignant_sensitivity", FORGET_RECALL)):
        b, a = before.get(key), after.get(key)
        if b is not None and a is not None and a < b - limit - 1e-12:
            problems.append(f"{key} {b:.3f} -> {a:.3f} (may fall by at most {limit})")
    return problems


# --- the whole procedure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    file: str
    patient: str | None
    p_lesion: float  # out of fold: from a head fitted without this image's patient
    p_malignant: float  # out of fold
    base_p_malignant: float  # the base head's
    reason: str


@dataclass
class Adaptation:
    weights: np.ndarray  # [C, K] the site head
    bias: np.ndarray  # [K]
    site_weight: float
    counts: dict[str, int]
    refitted: str  # which label columns of the head moved ("normal only")
    patients: int | None
    holdout: dict[str, Any]  # site held-out: before/after figures, counts
    base_test: dict[str, Any]  # base bundle's held-out split: before/after (no forgetting)
    review: list[Review]
    scanner: ScannerCheck
    tried: list[dict[str, Any]]  # each site weight tried and why it was or was not taken
    unfit: list[tuple[str, str]]
    data_sha256: str
    basis_rank: int = 0
    # with >= MIN_MALIGNANT site cancers: {mode: malignant threshold} re-chosen on them (never above the base's), and
    # the sensitivity/specificity on the site's cases at the base and the new threshold; None: the base's apply
    thresholds: dict[str, Any] | None = None
    seconds: float = 0.0
    # {"base", "site", "refitted", "reason", ...}: the temperature of the site bundle (the base's unless refitted)
    temperature: dict[str, Any] = field(default_factory=dict)
    l2: float = L2

    def short_hash(self) -> str:
        digest = hashlib.sha256(self.data_sha256.encode())
        digest.update(np.ascontiguousarray(self.weights, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.bias, dtype=np.float64).tobytes())
        return digest.hexdigest()[:8]

    def summary(self) -> dict[str, Any]:
        return {
            "data_sha256": self.data_sha256,
            "counts": self.counts,
            "patients": self.patients,
            "site_weight": self.site_weight,
            "l2": self.l2,
            "refitted": self.refitted,
            "basis_rank": self.basis_rank,
            "holdout": self.holdout,
            "base_test": self.base_test,
            "review": [asdict(r) for r in self.review],
            "scanner_check": {
                "mixed": self.scanner.mixed,
                "odd": list(self.scanner.odd),
                "largest_z": round(self.scanner.largest_z, 2),
                "limit_z": SCANNER_Z,
                "medians": {k: round(v, 4) for k, v in self.scanner.medians.items()},
            },
            "thresholds": self.thresholds,
            "temperature": self.temperature,
            "tried": self.tried,
            "unfit": [{"file": f, "reason": r} for f, r in self.unfit],
            "seconds": round(self.seconds, 1),
        }


def holdout_split(cases: Sequence[SiteCase], fraction: float = HOLDOUT_FRACTION, seed: int = 0) -> np.ndarray:
    """A boolean mask of held-out cases: whole patients (a case without a patient id is its own patient),
    drawn in a seeded order until they hold ``fraction`` of the normal images."""
    keys = [c.patient or f"file:{c.path.name}" for c in cases]
    patients = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(patients))
    normals_of: dict[str, int] = {}
    for key, case in zip(keys, cases):
        normals_of[key] = normals_of.get(key, 0) + (case.label == NORMAL)
    target = fraction * sum(normals_of.values())
    chosen, count = set(), 0
    for index in order:
        if count >= target:
            break
        chosen.add(patients[index])
        count += normals_of[patients[index]]
    return np.array([key in chosen for key in keys])


def adapt(
    bundle: ModelBundle,
    head_data: HeadData,
    site: SiteData,
    seed: int = 0,
    *,
    l2: float = L2,
    site_weights: Sequence[float] = SITE_WEIGHTS,
    free_labels: Sequence[str] = (NORMAL,),
) -> Adaptation:
    """Guards, fit, figures and the no-forgetting choice of the site weight (module docstring). ``l2``,
    ``site_weights`` and ``free_labels`` (the head columns that move) are the documented defaults on the device;
    the study of other choices (bench/bench_site_adapt.py --study, docs/model.md) passes others."""
    start = time.perf_counter()
    m = bundle.manifest
    labels = m.labels
    if NORMAL not in labels or MALIGNANT not in labels:
        raise SiteAdaptError(f"model {m.name} {m.version} has no {NORMAL!r} and {MALIGNANT!r} labels to adapt")
    if head_data.labels != labels or head_data.model_sha256 != m.model_sha256:
        raise SiteAdaptError(f"{bundle.path / HEAD_DATA_FILE} was made for another model or labels than {m.name} {m.version}")
    if m.cam is None:
        raise SiteAdaptError(f"model {m.name} {m.version} has no classifier weights (cam): it cannot be site-adapted")
    y_site = np.array([labels.index(label) for label in site.labels], dtype=np.int64)
    counts = {name: int((y_site == i).sum()) for i, name in enumerate(labels)}
    patients = len({c.patient for c in site.cases}) if all(c.patient for c in site.cases) and site.cases else None
    refused = f" ({len(site.unfit)} more left out: unreadable or refused by the quality gate)" if site.unfit else ""
    if counts[NORMAL] < MIN_NORMALS:
        raise SiteAdaptError(
            f"{counts[NORMAL]} usable normal image(s){refused}: at least {MIN_NORMALS} normal scans from "
            "this scanner are needed (about 200 recommended)"
        )
    if patients is not None and patients < MIN_PATIENTS:
        raise SiteAdaptError(f"the cases come from {patients} patient(s): at least {MIN_PATIENTS} are needed")
    scanner = scanner_check(site.stats, [c.path.name for c in site.cases])
    if scanner.mixed:
        raise SiteAdaptError(
            f"another scanner seems mixed in: {len(scanner.odd)} of {len(site.cases)} images differ clearly from the rest "
            f"in contrast or speckle grain (more than {SCANNER_Z} robust spreads); keep one scanner's images per site "
            f"bundle. Odd ones: {', '.join(scanner.odd[:10])}" + (" ..." if len(scanner.odd) > 10 else "")
        )

    w0, b0 = np.asarray(m.cam.weights, dtype=np.float64), np.asarray(m.cam.bias, dtype=np.float64)
    basis = head_data.basis.astype(np.float64)
    if basis.shape[0] != site.x.shape[1]:
        raise SiteAdaptError(f"{bundle.path / HEAD_DATA_FILE}: {basis.shape[0]} channels, the model's feature map has {site.x.shape[1]}")
    v_site, z_site = site.x @ basis, site.x @ w0 + b0
    v_base, z_base, y_base = head_data.train_v.astype(np.float64), head_data.train_z.astype(np.float64), head_data.train_y
    v_test, z_test, y_test = head_data.test_v.astype(np.float64), head_data.test_z.astype(np.float64), head_data.test_y
    spec = m.decision_spec()
    rule = Rule(labels, m.temperature, spec.mode(spec.default_mode).malignant_threshold, spec.lesion_threshold)

    free = [labels.index(name) for name in free_labels]  # by default "normal" only: the lesion columns stay the base's

    def fit(site_mask: np.ndarray, site_weight: float) -> tuple[np.ndarray, np.ndarray]:
        n_site = int(site_mask.sum())
        v = np.vstack([v_base, v_site[site_mask]])
        z = np.vstack([z_base, z_site[site_mask]])
        y = np.concatenate([y_base, y_site[site_mask]])
        w = np.concatenate([np.full(len(y_base), 1.0 / len(y_base)), np.full(n_site, site_weight / max(n_site, 1))])
        return fit_update(v, z, y, w, l2=l2, free=free)

    held = holdout_split(site.cases, seed=seed)
    # normals that look like lesions are listed for review; those the base head finds malignant-looking are also left
    # out of the fit (a cancer labelled normal would teach the head to miss cancers). The others stay in: a normal
    # the refit struggles with is what it has to learn. All count in the held-out figures.
    review = _review_normals(site, v_site, z_site, y_site, labels, rule, fit, REVIEW_SITE_WEIGHT, seed)
    left_out = [r.file for r in review if r.base_p_malignant >= REVIEW_BASE_P_MALIGNANT]
    reviewed = np.isin([c.path.name for c in site.cases], left_out)
    if counts[NORMAL] - int(reviewed.sum()) < MIN_NORMALS:
        raise SiteAdaptError(
            f"{int(reviewed.sum())} of {counts[NORMAL]} normal image(s) look like lesions, leaving fewer than "
            f"{MIN_NORMALS} to fit on; check these labels: " + ", ".join(r.file for r in review[:10]) + (" ..." if len(review) > 10 else "")
        )
    fit_mask, everything = ~held & ~reviewed, ~reviewed
    base_before = figures(z_test, y_test, rule)
    held_before = figures(z_site[held], y_site[held], rule)
    tried: list[dict[str, Any]] = []
    chosen = None
    for site_weight in site_weights:
        a_part, db_part = fit(fit_mask, site_weight)
        a_all, db_all = fit(everything, site_weight)
        base_after = figures(z_test + v_test @ a_all + db_all, y_test, rule)
        problems = forgetting(base_before, base_after)
        held_after = figures(z_site[held] + v_site[held] @ a_part + db_part, y_site[held], rule)
        tried.append({"site_weight": site_weight, "base_test_after": base_after, "holdout_after": held_after, "forgets": problems})
        log.info(
            "site weight %.2f: held-out normals called normal %s, base test %s%s",
            site_weight,
            held_after["normals_called_normal"],
            base_after,
            f" — forgets: {problems}" if problems else "",
        )
        if not problems:
            chosen = (site_weight, a_all, db_all, base_after, held_after)
            break
    if chosen is None:
        raise SiteAdaptError(
            "every refit forgets the sites the model was trained on (base test split: "
            + "; ".join(tried[-1]["forgets"])
            + f" even at site weight {site_weights[-1]}); the site bundle is refused"
        )
    site_weight, a_all, db_all, base_after, held_after = chosen
    weights = w0 + basis @ a_all
    bias = b0 + db_all
    a_part, db_part = fit(fit_mask, site_weight)
    temperature = _site_temperature(
        z_site[held] + v_site[held] @ a_part + db_part,
        y_site[held],
        z_site + v_site @ a_all + db_all,
        y_site,
        z_test + v_test @ a_all + db_all,
        y_test,
        base_before,
        rule,
    )
    if temperature["refitted"]:
        rule = dataclasses.replace(rule, temperature=temperature["site"])
        base_after = figures(z_test + v_test @ a_all + db_all, y_test, rule)
        held_after = figures(z_site[held] + v_site[held] @ a_part + db_part, y_site[held], rule)
    thresholds = _site_thresholds(spec, softmax_rows(z_site + v_site @ a_all + db_all, rule.temperature), y_site, labels, rule)
    return Adaptation(
        weights=weights,
        bias=bias,
        site_weight=site_weight,
        counts=counts,
        patients=patients,
        refitted=" and ".join(free_labels) + " only" if len(free_labels) < len(labels) else "all columns",
        l2=l2,
        holdout={
            "cases": int(held.sum()),
            "normals": int((held & (y_site == labels.index(NORMAL))).sum()),
            "split": "by patient" if patients is not None else "by image",
            "before": held_before,
            "after": held_after,
            "note": "after: a head fitted without these patients; the shipped head is then fitted on every case",
        },
        base_test={"before": base_before, "after": base_after, "n": int(len(y_test))},
        review=review,
        scanner=scanner,
        tried=tried,
        unfit=site.unfit,
        data_sha256=site.sha256,
        basis_rank=basis.shape[1],
        thresholds=thresholds,
        temperature=temperature,
        seconds=time.perf_counter() - start,
    )


def _site_temperature(
    held_logits: np.ndarray,
    held_y: np.ndarray,
    site_logits: np.ndarray,
    site_y: np.ndarray,
    test_logits: np.ndarray,
    test_y: np.ndarray,
    base_before: dict[str, Any],
    rule: Rule,
) -> dict[str, Any]:
    """The site bundle's temperature (module docstring, step 8): refitted on the held-out cases when they hold at
    least MIN_TEMPERATURE_LESIONS lesions, and taken only when it loses no cancer (the site's at the threshold; the
    base test split's sensitivity and AUC within the no-forgetting limits); else the base's, with the reason."""
    labels = rule.labels
    lesions = int((held_y != labels.index(NORMAL)).sum())
    out: dict[str, Any] = {
        "base": rule.temperature,
        "site": rule.temperature,
        "refitted": False,
        "held_out_cases": int(len(held_y)),
        "held_out_lesions": lesions,
    }
    if lesions < MIN_TEMPERATURE_LESIONS:
        out["reason"] = (
            f"{lesions} biopsy-proven lesion(s) held out, at least {MIN_TEMPERATURE_LESIONS} needed: "
            "the base temperature is kept (normals alone would only teach over-confidence in 'normal')"
        )
        return out
    fitted = fit_temperature(held_logits, held_y)
    out.update(
        {
            "fitted": round(fitted, 4),
            "nll_base": round(mean_nll(held_logits, held_y, rule.temperature), 4),
            "nll_fitted": round(mean_nll(held_logits, held_y, fitted), 4),
        }
    )
    new_rule = dataclasses.replace(rule, temperature=fitted)
    malignant = site_y == labels.index(MALIGNANT)
    # Calibration moves how many normals fall below the lesion threshold — that is what it is for; what it may not
    # do is lose cancers, here or on the base test split (the thresholds were chosen at the base temperature).
    problems = [
        p for p in forgetting(base_before, figures(test_logits, test_y, new_rule)) if p.startswith(("malignant_sensitivity", "auc_malignant"))
    ]
    if malignant.any():
        k = labels.index(MALIGNANT)
        before = float((softmax_rows(site_logits[malignant], rule.temperature)[:, k] >= rule.malignant_threshold).mean())
        after = float((softmax_rows(site_logits[malignant], fitted)[:, k] >= rule.malignant_threshold).mean())
        out["site_malignant_sensitivity"] = {"base_temperature": round(before, 4), "fitted": round(after, 4)}
        if after < before - 1e-12:
            problems.append(f"the site's cancers called suspicious {before:.3f} -> {after:.3f}")
    if problems:
        out["reason"] = "refitted temperature refused, the base one is kept: " + "; ".join(problems)
        return out
    out.update({"site": round(fitted, 6), "refitted": True, "reason": f"refitted on {len(held_y)} held-out cases ({lesions} lesions), by patient"})
    return out


def _site_thresholds(spec: Any, p: np.ndarray, y: np.ndarray, labels: tuple[str, ...], rule: Rule) -> dict[str, Any] | None:
    """With at least MIN_MALIGNANT biopsy-proven cancers among the site's cases: the malignant threshold that keeps
    TARGET_SENSITIVITY on them in CONFIDENCE of resamples (device.model.operating_point, as ``site-check``), under the
    refitted head; each operating mode gets the lower of its own and that one (so their order holds). Chosen on
    all the site's cancers (the figures next to it are on the same cases, not held out). None with fewer."""
    malignant = y == labels.index(MALIGNANT)
    if int(malignant.sum()) < MIN_MALIGNANT:
        return None
    p_mal = p[:, labels.index(MALIGNANT)]
    proposed, _ = robust_threshold(p_mal[malignant], TARGET_SENSITIVITY, CONFIDENCE)
    modes = {name: min(mode.malignant_threshold, proposed) for name, mode in spec.modes.items()}
    applied = modes[spec.default_mode]
    base_sens, base_spec = sensitivity_specificity(malignant, p_mal >= rule.malignant_threshold)
    new_sens, new_spec = sensitivity_specificity(malignant, p_mal >= applied)
    return {
        "modes": {k: float(v) for k, v in modes.items()},
        "proposed": float(proposed),
        "malignant_cases": int(malignant.sum()),
        "target_sensitivity": TARGET_SENSITIVITY,
        "confidence": CONFIDENCE,
        "at_base_threshold": {"threshold": rule.malignant_threshold, "sensitivity": round(base_sens, 4), "specificity": round(base_spec, 4)},
        "at_site_threshold": {"threshold": round(applied, 6), "sensitivity": round(new_sens, 4), "specificity": round(new_spec, 4)},
        "note": "chosen and measured on the same site cases (in-sample), refitted head",
    }


def _review_normals(
    site: SiteData,
    v: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    labels: tuple[str, ...],
    rule: Rule,
    fit: Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]],
    site_weight: float,
    seed: int,
) -> list[Review]:
    """Normals that look like lesions: the base head gives them p(malignant) >= :data:`REVIEW_BASE_P_MALIGNANT`
    (left out of the folds' fits too), or a head fitted without their patient (FOLDS folds of patients) still
    gives them p(lesion) >= :data:`REVIEW_P_LESION`."""
    keys = [c.patient or f"file:{c.path.name}" for c in site.cases]
    patients = sorted(set(keys))
    fold_of_patient = {p: i % FOLDS for i, p in enumerate(np.random.default_rng(seed + 1).permutation(patients))}
    folds = np.array([fold_of_patient[k] for k in keys])
    normal = y == labels.index(NORMAL)
    k_mal, k_normal = labels.index(MALIGNANT), labels.index(NORMAL)
    base_p = softmax_rows(z, rule.temperature)
    suspect = normal & (base_p[:, k_mal] >= REVIEW_BASE_P_MALIGNANT)
    out: list[Review] = []
    for fold in range(FOLDS):
        test = (folds == fold) & normal
        if not test.any():
            continue
        a, db = fit((folds != fold) & ~suspect, site_weight)
        p = softmax_rows(z[test] + v[test] @ a + db, rule.temperature)
        for index, probs in zip(np.flatnonzero(test), p):
            p_lesion = 1.0 - float(probs[k_normal])
            reasons = []
            if suspect[index]:
                reasons.append(f"base p(malignant) {base_p[index, k_mal]:.2f}")
            if p_lesion >= REVIEW_P_LESION:
                reasons.append(f"p(lesion) {p_lesion:.2f} from a head fitted without it")
            if reasons:
                case = site.cases[index]
                out.append(
                    Review(
                        case.path.name,
                        case.patient,
                        round(p_lesion, 4),
                        round(float(probs[k_mal]), 4),
                        round(float(base_p[index, k_mal]), 4),
                        "; ".join(reasons),
                    )
                )
    return sorted(out, key=lambda r: (-r.base_p_malignant, -r.p_lesion))


def report_text(a: Adaptation) -> str:
    """The figures a clinic reads before using the site bundle."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f} %"

    hb, ha = a.holdout["before"], a.holdout["after"]
    tb, ta = a.base_test["before"], a.base_test["after"]
    lines = [
        f"site cases: {', '.join(f'{v} {k}' for k, v in a.counts.items() if v)}"
        + (f" from {a.patients} patients" if a.patients else "")
        + (f"; {len(a.unfit)} left out (unreadable or refused by the quality gate)" if a.unfit else ""),
        f"scanner check: one scanner ({len(a.scanner.odd)} odd image(s){': ' + ', '.join(a.scanner.odd[:5]) if a.scanner.odd else ''}; "
        f"largest robust z {a.scanner.largest_z:.1f}, limit {SCANNER_Z})",
        f"held out ({a.holdout['split']}): {a.holdout['normals']} normal images of {a.holdout['cases']} cases — "
        f"normals called normal {pct(hb['normals_called_normal'])} -> {pct(ha['normals_called_normal'])}, "
        f"called malignant {pct(hb['normals_called_malignant'])} -> {pct(ha['normals_called_malignant'])}",
    ]
    if ha.get("auc_benign_vs_malignant") is not None:
        lines.append(
            f"held-out lesions: benign-vs-malignant AUC {hb['auc_benign_vs_malignant']:.3f} -> "
            f"{ha['auc_benign_vs_malignant']:.3f}, malignant sensitivity {pct(hb['malignant_sensitivity'])} -> "
            f"{pct(ha['malignant_sensitivity'])}"
        )
    lines.append(
        f"base test split ({a.base_test['n']} images, no forgetting): malignant AUC {tb['auc_malignant']:.3f} -> "
        f"{ta['auc_malignant']:.3f}, normals called normal {pct(tb['normals_called_normal'])} -> "
        f"{pct(ta['normals_called_normal'])}, malignant sensitivity {pct(tb['malignant_sensitivity'])} -> "
        f"{pct(ta['malignant_sensitivity'])} (site weight {a.site_weight})"
    )
    if a.temperature:
        t = a.temperature
        lines.append(f"temperature: {t['base']} -> {t['site']}" + (" (refitted" if t["refitted"] else " (base kept") + f"; {t.get('reason', '')})")
    if a.thresholds is not None:
        t = a.thresholds
        lines.append(
            f"malignant threshold re-chosen on the site's {t['malignant_cases']} cancers (sensitivity >= "
            f"{t['target_sensitivity']} in {100 * t['confidence']:.0f} % of resamples; never above the base's): "
            f"{t['at_base_threshold']['threshold']:.4f} -> {t['at_site_threshold']['threshold']:.4f}, sensitivity "
            f"{pct(t['at_base_threshold']['sensitivity'])} -> {pct(t['at_site_threshold']['sensitivity'])}, specificity "
            f"{pct(t['at_base_threshold']['specificity'])} -> {pct(t['at_site_threshold']['specificity'])} (same cases)"
        )
    if a.review:
        lines.append(
            f"REVIEW: {len(a.review)} image(s) labelled normal look like a lesion — check their labels "
            f"(those with base p(malignant) >= {REVIEW_BASE_P_MALIGNANT} were left out of the fit):"
        )
        lines += [f"  {r.file} (patient {r.patient or '-'}): {r.reason}" for r in a.review[:30]]
    return "\n".join(lines)


def report_json(adaptation: Adaptation, extra: dict[str, Any]) -> bytes:
    """``report/site_adapt.json`` of a site bundle: everything :class:`Adaptation` measured, and ``extra``."""
    return (json.dumps({**extra, **adaptation.summary()}, indent=2) + "\n").encode("utf-8")


# --- the site bundle ---------------------------------------------------------------------------------


def site_card(base: ModelBundle, manifest: Any, adaptation: Adaptation, signing: str) -> str:
    """MODEL_CARD.md of a site bundle: what was refitted on what, the site's figures, then the base card."""
    m = base.manifest
    base_card = (base.path / "MODEL_CARD.md").read_text(encoding="utf-8") if (base.path / "MODEL_CARD.md").is_file() else ""
    return "\n".join(
        [
            f"# Site bundle {manifest.name} {manifest.version}",
            "",
            f"A site bundle made on the device by `python -m device site-adapt` from **{m.name} {m.version}** "
            f"(model sha256 {m.model_sha256[:16]}…): the same model file; the classifier head refitted ({adaptation.refitted}) "
            "on this site's own cases together with the base bundle's training images, so that it learns what normal "
            "looks like on this scanner without forgetting the others. The temperature is the base bundle's unless at "
            f"least {MIN_TEMPERATURE_LESIONS} biopsy-proven site lesions were held out (then refitted on them: "
            f"{adaptation.temperature.get('base')} -> {adaptation.temperature.get('site')}); the operating thresholds are "
            "the base's, unless at least 20 site cancers were given, which may only lower them (a refit never raises the "
            "malignant threshold).",
            "",
            f"- site data: sha256 {adaptation.data_sha256[:16]}…, {', '.join(f'{v} {k}' for k, v in adaptation.counts.items() if v)}"
            + (f", {adaptation.patients} patients" if adaptation.patients else ""),
            f"- signing: {signing}",
            "",
            "## Site figures (report/site_adapt.json)",
            "",
            "```",
            report_text(adaptation),
            "```",
            "",
            "The held-out figures come from a head fitted without the held-out patients; they are few and from one "
            "site — check them with `python -m device site-check` on biopsy-proven local cases before trusting the "
            "threshold. Everything below is the **base bundle's** card: its metrics are the base head's.",
            "",
            "---",
            "",
            base_card,
        ]
    )


def write_site_bundle(base: ModelBundle, adaptation: Adaptation, out: Path, site_key: Path | None = None) -> ModelBundle:
    """Write the site bundle to ``out`` (refused when it exists and is not empty): the base model file (and its
    segmentation model, when it has one), a manifest with the head, a reference frame recomputed through the head
    (``device selftest`` checks it), the report and card; signed with ``site_key`` (an Ed25519 private key,
    device.model.signing) or marked ``unsigned-site``."""
    import os
    import shutil

    from device.engine import Classifier
    from device.head import SIGNING_UNSIGNED, BaseIdentity, HeadSpec
    from device.model.bundle import edit_bundle, load_bundle, write_bundle
    from device.model.signing import key_id, load_private_key, sign_bundle
    from device.selftest import compute_reference

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SiteAdaptError(f"{out}: exists and is not an empty directory; choose a new --out")
    private = load_private_key(site_key) if site_key is not None else None
    signing = f"site key {key_id(private.public_key())}" if private is not None else SIGNING_UNSIGNED
    m = base.manifest
    version = f"{m.version}+site-{adaptation.short_hash()}"
    if len(version) > MAX_VERSION_LENGTH:  # results carry it to the hub (device/link/schemas/result.schema.json)
        raise SiteAdaptError(
            f"site bundle version {version!r} would be {len(version)} characters; results allow "
            f"{MAX_VERSION_LENGTH} — give the base bundle a shorter version"
        )
    site = {
        "data_sha256": adaptation.data_sha256,
        "counts": adaptation.counts,
        "patients": adaptation.patients,
        "refitted": adaptation.refitted,
        "site_weight": adaptation.site_weight,
        "signing": signing,
        "holdout": adaptation.holdout,
        "base_test": adaptation.base_test,
        "review": len(adaptation.review),
        "thresholds": adaptation.thresholds,
        "temperature": adaptation.temperature,
        "report": REPORT_FILE,
    }
    head = HeadSpec(
        weights=tuple(tuple(float(v) for v in row) for row in adaptation.weights),
        bias=tuple(float(v) for v in adaptation.bias),
        base=BaseIdentity(m.name, m.version, m.model_sha256),
        site=site,
    )
    thresholds, decision = dict(m.thresholds), m.decision
    if adaptation.thresholds is not None:  # lowered, never raised
        modes = adaptation.thresholds["modes"]
        default = m.decision_spec().default_mode
        thresholds[MALIGNANT] = min(thresholds.get(MALIGNANT, 1.0), modes[default])
        if decision is not None:
            decision = dataclasses.replace(
                decision,
                modes={
                    name: dataclasses.replace(
                        mode,
                        malignant_threshold=min(mode.malignant_threshold, modes[name]),
                        figures=None if modes[name] < mode.malignant_threshold else mode.figures,
                        categories=None if modes[name] < mode.malignant_threshold else mode.categories,
                    )
                    for name, mode in decision.modes.items()
                },
            )
    temperature = adaptation.temperature.get("site", m.temperature) if adaptation.temperature.get("refitted") else m.temperature
    manifest = dataclasses.replace(
        m,
        version=version,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        head=head,
        reference=None,
        thresholds=thresholds,
        decision=decision,
        temperature=float(temperature),
    )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # the base's segmentation model (docs/lesion-outline.md) goes on unchanged: its section and its file together
    seg_path = base.segmentation_path
    write_bundle(partial, base.model_path.read_bytes(), manifest, segmentation=seg_path.read_bytes() if seg_path is not None else None)
    files = base.other_files(leave_out={HEAD_DATA_FILE})
    files["MODEL_CARD.md"] = site_card(base, manifest, adaptation, signing).encode("utf-8")
    files[REPORT_FILE] = report_json(adaptation, {"base": head.base.__dict__, "version": version, "signing": signing})
    edit_bundle(partial, files=files)
    if m.reference is not None and m.reference.frame in files:  # the selftest frame, recomputed through the head
        bundle = load_bundle(partial)
        reference = compute_reference(Classifier(bundle, threads=1), files[m.reference.frame], m.reference.frame)
        edit_bundle(partial, manifest=dataclasses.replace(bundle.manifest, reference=reference))
    if private is not None:
        sign_bundle(partial, private)
    if out.exists():
        out.rmdir()
    os.replace(partial, out)
    log.info("site bundle %s %s written to %s (%s)", m.name, version, out, signing)
    return load_bundle(out)


def run(
    classifier: Any,
    cases_dir: Path,
    out: Path,
    site_key: Path | None = None,
    options: AnalysisOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Adaptation, ModelBundle]:
    """``device site-adapt``: read the cases with ``classifier`` (the base bundle's), adapt, write the site bundle."""
    bundle = classifier.bundle
    if getattr(bundle.manifest, "head", None) is not None:
        raise SiteAdaptError(
            f"model {bundle.manifest.name} {bundle.manifest.version} is already a site bundle; adapt "
            f"its base bundle ({bundle.manifest.head.base.name} {bundle.manifest.head.base.version}) instead"
        )
    head_data = HeadData.load(bundle.path / HEAD_DATA_FILE)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SiteAdaptError(f"{out}: exists and is not an empty directory; choose a new --out")
    cases = read_site_cases(cases_dir)
    site = read_site_data(classifier, cases, options, progress=progress)
    adaptation = adapt(bundle, head_data, site)
    return adaptation, write_site_bundle(bundle, adaptation, out, site_key)
