"""Scoring predicted lesion masks: Dice, IoU, boundary error, false outlines on empty masks, and the montage.

A prediction is scored as the device would draw it: the probability map thresholded at ``threshold``, then
only its largest connected region, and none when that region is smaller than the false-outline size
(``min_region_px`` model pixels). Lesion images get Dice, IoU and the mean symmetric contour distance
(model pixels, and image pixels through each image's scale); images with an empty mask count a *false outline*
when a region is drawn. 95 % CIs resample patients / near-duplicate groups (``evaluate.grouped_bootstrap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model_build.evaluate import grouped_bootstrap

THRESHOLD = 0.5


def min_region_px(resolution: int) -> int:
    """The smallest region that counts as an outline: 0.25 % of the input (125 px at 224), at least 16 px."""
    return max(16, round(0.0025 * resolution * resolution))


def outline_mask(prob: np.ndarray, min_px: int, image_box: Sequence[int], threshold: float = THRESHOLD) -> np.ndarray:
    """The drawn outline's region: largest connected region of ``prob >= threshold`` inside ``image_box`` (x, y, w,
    h: where the image lies in the model input; the letterbox bands are left out first, as the device does in
    device/outline.py ``crop_mask``, so a region there is never drawn), empty below ``min_px``."""
    x, y, w, h = (int(v) for v in image_box)
    binary = np.zeros(prob.shape, np.uint8)
    binary[y : y + h, x : x + w] = prob[y : y + h, x : x + w] >= threshold
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros_like(binary)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < min_px:
        return np.zeros_like(binary)
    return (labels == best).astype(np.uint8)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred > 0, truth > 0
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(p, t).sum() / total)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred > 0, truth > 0
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = (mask > 0).astype(np.uint8)
    inner = cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m > 0) & (inner == 0)


def contour_distance(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean symmetric distance (px) between the two boundaries; NaN when either mask is empty."""
    bp, bt = _boundary(pred), _boundary(truth)
    if not bp.any() or not bt.any():
        return float("nan")
    to_truth = cv2.distanceTransform((1 - bt).astype(np.uint8), cv2.DIST_L2, 5)
    to_pred = cv2.distanceTransform((1 - bp).astype(np.uint8), cv2.DIST_L2, 5)
    return float((to_truth[bp > 0].sum() + to_pred[bt > 0].sum()) / (bp.sum() + bt.sum()))


@dataclass(frozen=True)
class Scores:
    """Per image: the drawn outline's scores (NaN where they do not apply)."""

    dice: np.ndarray
    iou: np.ndarray
    boundary_px: np.ndarray  # model pixels
    boundary_image_px: np.ndarray  # image pixels
    drawn_px: np.ndarray  # area of the drawn region, model pixels (0 = no outline)
    lesion: np.ndarray  # bool: the true mask is not empty

    def subset(self, idx: np.ndarray) -> Scores:
        return Scores(*(getattr(self, f)[idx] for f in Scores.__dataclass_fields__))


def score(probs: np.ndarray, truths: np.ndarray, scales: np.ndarray, min_px: int, threshold: float = THRESHOLD, *, image_boxes: np.ndarray) -> Scores:
    """Each image's drawn outline (inside its ``image_boxes`` row, as the device draws it) against its true mask."""
    drawn = [outline_mask(p, min_px, box, threshold) for p, box in zip(probs, image_boxes, strict=True)]
    lesion = np.asarray(truths.reshape(len(truths), -1).any(axis=1))
    nan = float("nan")
    d = np.array([dice(o, t) if les else nan for o, t, les in zip(drawn, truths, lesion)])
    j = np.array([iou(o, t) if les else nan for o, t, les in zip(drawn, truths, lesion)])
    b = np.array([contour_distance(o, t) if les else nan for o, t, les in zip(drawn, truths, lesion)])
    return Scores(d, j, b, b * scales, np.array([int(o.sum()) for o in drawn]), lesion)


def figures(s: Scores, idx: np.ndarray) -> dict[str, float]:
    """The report's figures over the images ``idx``: Dice, IoU, missed lesions and boundary error on lesion images,
    the false-outline rate on images with an empty mask."""
    les, empty = idx[s.lesion[idx]], idx[~s.lesion[idx]]
    nan = float("nan")
    out = {
        "dice_mean": float(np.mean(s.dice[les])) if len(les) else nan,
        "dice_median": float(np.median(s.dice[les])) if len(les) else nan,
        "iou_mean": float(np.mean(s.iou[les])) if len(les) else nan,
        "missed": float(np.mean(s.drawn_px[les] == 0)) if len(les) else nan,
        "false_outline_rate": float(np.mean(s.drawn_px[empty] > 0)) if len(empty) else nan,
    }
    for key, values in (("boundary_px_mean", s.boundary_px[les]), ("boundary_image_px_mean", s.boundary_image_px[les])):
        finite = values[np.isfinite(values)]
        out[key] = float(np.mean(finite)) if len(finite) else nan
    return out


def summarise(s: Scores, groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    idx = np.arange(len(s.dice))
    value = figures(s, idx)
    ci = grouped_bootstrap(groups, lambda i: figures(s, i), n_boot, seed) if len(idx) else {}
    return {
        "n_lesion": int(s.lesion.sum()),
        "n_empty": int((~s.lesion).sum()),
        "n_groups": int(len(np.unique(groups))),
        **{k: {"value": v, "ci95": list(ci.get(k, (float("nan"), float("nan"))))} for k, v in value.items()},
    }


def summarise_by_source(s: Scores, groups: np.ndarray, sources: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``all`` and ``source:<name>`` (a view cut by a mask is its own ``source#view``)."""
    out = {"all": summarise(s, groups, n_boot, seed)}
    for source in sorted(set(sources.tolist())):
        m = sources == source
        out[f"source:{source}"] = summarise(s.subset(m), groups[m], n_boot, seed)
    return out


def parity(float_scores: Scores, int8_scores: Scores) -> dict[str, float]:
    """int8 against float on the same images: mean Dice of each, their difference, and per-image |difference|."""
    les = float_scores.lesion
    if not les.any():
        return {"n": 0}
    f, q = float_scores.dice[les], int8_scores.dice[les]
    return {
        "n": int(les.sum()),
        "dice_float": float(f.mean()),
        "dice_int8": float(q.mean()),
        "dice_difference": float(q.mean() - f.mean()),
        "mean_abs_image_difference": float(np.abs(q - f).mean()),
        "drawn_disagreement": float(np.mean((float_scores.drawn_px > 0) != (int8_scores.drawn_px > 0))),
    }


def montage(
    pixels: np.ndarray,
    truths: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    path: Path,
    min_px: int,
    image_boxes: np.ndarray,
    columns: int = 6,
    tile: int = 192,
) -> None:
    """A grid of images: true outline green, the drawn (predicted) outline red, each tile captioned."""
    tiles = []
    for image, truth, prob, label, box in zip(pixels, truths, probs, labels, image_boxes, strict=True):
        drawn = outline_mask(prob, min_px, box)
        big = cv2.resize(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), (tile, tile), interpolation=cv2.INTER_LINEAR)
        for mask, colour in ((truth, (0, 200, 0)), (drawn, (0, 0, 255))):
            up = cv2.resize(mask.astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(big, contours, -1, colour, 2)
        cv2.rectangle(big, (0, 0), (tile, 16), (0, 0, 0), -1)
        cv2.putText(big, label[:30], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(big)
    if not tiles:
        raise ValueError(f"montage {path}: no images to show")
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    legend = np.zeros((22, rows[0].shape[1], 3), np.uint8)
    cv2.putText(
        legend,
        "green: reference mask   red: predicted outline (int8 model)",
        (4, 15),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.vstack([legend, *rows])):
        raise OSError(f"montage {path}: could not be written")
