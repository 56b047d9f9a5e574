"""Classifying on the predicted lesion region, measured on a source both models never saw.

Issue 16 asks whether classifying the region the segmentation model outlines (rather than the whole frame) helps
the leave-one-source-out classification figures, and to adopt it only if it does. This scores a held-out source
through the device's own path four ways, with a classifier fold and a segmentation fold that both held that
source out:

* ``whole``: ``Classifier.classify(frame)``, what the device does today;
* ``region``: the outlined lesion's box, widened (:func:`region_around`), classified as a clinician's ROI
  (``classify(frame, roi=…)``); a frame with no outline keeps its whole-frame probabilities;
* ``mean``: the mean of the two (the whole frame's context and the lesion's close-up);
* ``true_region``: the same region cut around the reference mask instead of the outline (the upper bound a perfect
  outline would give); frames without a mask keep their whole-frame result.

Each is written as a study fold (``<out>/<way>/report/external_predictions.csv``, full images only), so
``model_build compare --baseline <out>/whole --candidate <out>/region`` measures the difference paired.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.crop import Box
from model_build.data import Sample
from model_build.lesion_views import mask_path, read_mask
from model_build.operating_modes import LABELS, PREDICTIONS_FILE, StudyError, scored_group

log = logging.getLogger(__name__)

WAYS = ("whole", "region", "mean", "true_region")
REGION_GROWTH = 1.3  # the outline's box widened as the training's lesion-centred views are (model_build.lesion_views)
REGION_MIN_FRACTION = 0.6  # and never smaller than a tap's square (ui.live_view.SEED_FRACTION of the shorter side)


@dataclass(frozen=True)
class RegionScoring:
    folds: dict[str, Path]  # way -> fold directory
    images: int
    outlined: int  # frames the segmentation model outlined a lesion on (the others keep the whole frame)
    with_mask: int  # frames with a reference lesion mask (``true_region``)


def region_around(box: tuple[int, int, int, int], frame_shape: tuple[int, int]) -> Box:
    """The ROI classified for an outline's ``box`` (x, y, width, height): the box grown by :data:`REGION_GROWTH`
    around its centre, each side at least :data:`REGION_MIN_FRACTION` of the frame's shorter side, inside the frame."""
    h, w = frame_shape
    x, y, bw, bh = box
    floor = REGION_MIN_FRACTION * min(h, w)
    width = int(min(w, max(REGION_GROWTH * bw, floor)))
    height = int(min(h, max(REGION_GROWTH * bh, floor)))
    cx, cy = x + bw // 2, y + bh // 2
    left = int(np.clip(cx - width // 2, 0, w - width))
    top = int(np.clip(cy - height // 2, 0, h - height))
    return Box(left, top, width, height)


def score_on_regions(bundle_dir: Path, segmentation_dir: Path, roots: Sequence[Path], out_dir: Path) -> RegionScoring:
    """Score every full image of ``roots`` the four ways (module docstring) and write one fold per way."""
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.quality import QualityLimits
    from model_build.data import scan_source
    from model_build.pipeline import write_predictions
    from model_build.segmentation_build import pack_segmentation

    found = [(Path(root), s) for root in roots for s in scan_source(root)[0] if s.view == "full"]
    samples = [s for _, s in found]
    if not samples:
        raise StudyError(f"no image in {', '.join(map(str, roots))}")
    with tempfile.TemporaryDirectory() as tmp:
        packed = pack_segmentation(bundle_dir, segmentation_dir, Path(tmp) / "bundle")
        if tuple(packed.manifest.labels) != LABELS:
            raise StudyError(f"bundle {bundle_dir}: labels {packed.manifest.labels}, the study needs {LABELS}")
        # probabilities are what is scored: no frame may be withheld as inconclusive for low confidence
        classifier = Classifier(packed, threads=2, limits=QualityLimits(min_confidence=0.0))
        probs = {way: np.zeros((len(samples), len(LABELS))) for way in WAYS}
        outlined = with_mask = 0
        for i, (root, sample) in enumerate(found):
            frame = decode_image_file(sample.path)
            shape = (frame.shape[0], frame.shape[1])
            whole = classifier.classify(frame)
            probs["whole"][i] = probs["region"][i] = probs["true_region"][i] = [whole.probabilities[k] for k in LABELS]
            if whole.lesion is not None and whole.lesion.outline is not None:
                outlined += 1
                region = classifier.classify(frame, roi=region_around(whole.lesion.outline.box, shape), outline=False)
                probs["region"][i] = [region.probabilities[k] for k in LABELS]
            truth = _mask_box(root, sample, shape)
            if truth is not None:
                with_mask += 1
                true_region = classifier.classify(frame, roi=region_around(truth, shape), outline=False)
                probs["true_region"][i] = [true_region.probabilities[k] for k in LABELS]
            if (i + 1) % 200 == 0:
                log.info("%d of %d images scored, %d outlined", i + 1, len(samples), outlined)
    probs["mean"] = (probs["whole"] + probs["region"]) / 2
    groups = np.array([scored_group(s) for s in samples])
    folds = {}
    for way in WAYS:
        folds[way] = Path(out_dir) / way
        path = folds[way] / PREDICTIONS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_predictions(path, samples, groups, probs[way], LABELS)
    log.info("scored %d image(s) %d ways; %d outlined, %d with a mask", len(samples), len(WAYS), outlined, with_mask)
    return RegionScoring(folds, len(samples), outlined, with_mask)


def _mask_box(root: Path, sample: Sample, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The reference mask's box (x, y, width, height) for a lesion image, or None (no mask, empty, or another size)."""
    if sample.label == "normal":
        return None
    path = mask_path(root, sample.path.name, sample.meta("mask") or None)
    mask = read_mask(path) if path is not None and path.is_file() else None
    if mask is None or not mask.any() or mask.shape != shape:
        return None
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
