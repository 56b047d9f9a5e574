"""Is the model reading the sonographer's marks (calipers, text, measurement lines)?

Three checks on the test split, all reported in ``metrics.json`` and the model card:

* **removal** — bright thin overlay structures are detected (white top-hat) and inpainted away;
  predictions should not change much;
* **injection** — synthetic marks (as in ``augment.draw_marks``) are drawn on every image;
  predictions should not change much;
* **attention** — the class-activation map's mass on the overlay pixels, relative to their area
  (1.0 = no preference; well above 1 = the model looks at marks). A CAM montage is saved to look at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model_build.augment import draw_marks

log = logging.getLogger(__name__)

ProbFn = Callable[[np.ndarray], np.ndarray]  # N x H x W grey uint8 -> N x K calibrated probabilities


@dataclass(frozen=True)
class PerturbationResult:
    n: int
    accuracy_before: float
    accuracy_after: float
    prediction_flip_rate: float
    mean_abs_malignant_prob_change: float


def overlay_mask(grey: np.ndarray) -> np.ndarray:
    """Bright, thin structures (caliper crosses, text, dotted lines): white top-hat + brightness."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    tophat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel)
    return (tophat > 70) & (grey > 170)


def remove_overlays(grey: np.ndarray) -> np.ndarray:
    mask = cv2.dilate(overlay_mask(grey).astype(np.uint8), np.ones((3, 3), np.uint8))
    if not mask.any():
        return grey
    return cv2.inpaint(grey, mask, 3, cv2.INPAINT_TELEA)


def _compare(before: np.ndarray, after: np.ndarray, y: np.ndarray, malignant: int | None) -> PerturbationResult:
    change = float(np.mean(np.abs(before[:, malignant] - after[:, malignant]))) if malignant is not None else float("nan")
    return PerturbationResult(
        n=int(len(y)),
        accuracy_before=float(np.mean(before.argmax(1) == y)),
        accuracy_after=float(np.mean(after.argmax(1) == y)),
        prediction_flip_rate=float(np.mean(before.argmax(1) != after.argmax(1))),
        mean_abs_malignant_prob_change=change,
    )


def cam_maps(features: np.ndarray, weights: np.ndarray, bias: np.ndarray, classes: np.ndarray, size: int) -> np.ndarray:
    """CAM of the given class per image, ReLU'd and upsampled to ``size x size`` (0..1 per image)."""
    maps = []
    for f, k in zip(features, classes):
        cam = np.maximum(f @ weights[:, k] + bias[k], 0.0)
        cam = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        maps.append(cam / cam.max() if cam.max() > 0 else cam)
    return np.stack(maps)


def attention_on_marks(grey: np.ndarray, cams: np.ndarray) -> dict[str, float]:
    """Mean over images with marks of (CAM mass on mark pixels / mark area fraction)."""
    ratios = []
    for g, cam in zip(grey, cams):
        mask = cv2.dilate(overlay_mask(g).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        area = mask.mean()
        if area < 1e-4 or cam.sum() <= 0:
            continue
        ratios.append(float(cam[mask].sum() / cam.sum() / area))
    return {
        "images_with_marks": len(ratios),
        "mean_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "median_ratio": float(np.median(ratios)) if ratios else float("nan"),
    }


def cam_montage(grey: np.ndarray, cams: np.ndarray, captions: list[str], path: Path, columns: int = 6) -> None:
    tiles = []
    for g, cam, text in zip(grey, cams, captions):
        heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
        base = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
        tile = np.hstack([base, cv2.addWeighted(base, 0.55, heat, 0.45, 0)])
        cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    montage = np.vstack(rows)
    montage = cv2.resize(montage, (montage.shape[1] * 2 // 3, montage.shape[0] * 2 // 3), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), montage, [cv2.IMWRITE_JPEG_QUALITY, 80])


def analyse(
    probs_fn: ProbFn,
    grey: np.ndarray,
    y: np.ndarray,
    malignant: int | None,
    seed: int = 0,
) -> dict[str, object]:
    base = probs_fn(grey)
    has_marks = np.array([overlay_mask(g).sum() >= 15 for g in grey])
    removed = probs_fn(np.stack([remove_overlays(g) for g in grey]))
    rng = np.random.default_rng(seed)
    injected = probs_fn(np.stack([draw_marks(g, rng) for g in grey]))
    result: dict[str, Any] = {
        "images_with_detected_marks": int(has_marks.sum()),
        "removal_all": asdict(_compare(base, removed, y, malignant)),
        "injection_all": asdict(_compare(base, injected, y, malignant)),
        "accuracy_with_marks": float(np.mean(base[has_marks].argmax(1) == y[has_marks])) if has_marks.any() else None,
        "accuracy_without_marks": float(np.mean(base[~has_marks].argmax(1) == y[~has_marks])) if (~has_marks).any() else None,
    }
    if has_marks.any():
        result["removal_on_marked"] = asdict(_compare(base[has_marks], removed[has_marks], y[has_marks], malignant))
    log.info(
        "shortcut check: %d/%d test images have marks; removal flips %.1f%%, injection flips %.1f%% of predictions",
        has_marks.sum(),
        len(y),
        100 * result["removal_all"]["prediction_flip_rate"],
        100 * result["injection_all"]["prediction_flip_rate"],
    )
    return result
