"""Pseudo lesion masks for a source whose lesion images have none (the shared BUSI): a ``model_build segment``
output (the *teacher*) outlines each lesion image, and where it outlines one confidently that region becomes the
image's mask, so ``segment`` can learn from the source's scanner too (self-training; docs/lesion-outline.md).

The result is a source folder ``OUT/<name>/`` that ``segment --data`` reads like any CSV source: ``images`` links to
the source's own folder (nothing is copied), ``labels.csv`` lists every image with its label and, for a confident
outline, its ``mask`` (``masks/pseudo_<n>.png``, image-sized, 0/255). Images the teacher outlines with too little
confidence, or not at all, are listed without a mask: ``segment`` leaves them out as it does any unmasked lesion.

Confidence: the mean of the teacher's mask probability over the region it outlines (model-input pixels). For a
leave-one-source-out fold the teacher must be that fold's model (it never saw the fold's held-out source), or the
pseudo masks carry the held-out source into training.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageDecodeError
from device.imageio import decode_image_file
from device.model.preprocess import prepare
from device.outline import Segmenter, crop_mask
from model_build.data import DatasetError, Sample, scan_source
from model_build.outline_descriptors import load_segmenter
from model_build.segmentation_eval import outline_mask

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.8  # the default --min-confidence: mean mask probability over the outlined region; below it the image gets no pseudo mask


class Outcome(StrEnum):
    """What became of one lesion image."""

    MASKED = "masked"
    NOT_OUTLINED = "not_outlined"  # the teacher drew nothing (or less than its smallest region)
    UNSURE = "unsure"  # outlined below the confidence
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class PseudoMasks:
    """What :func:`write_pseudo_masks` wrote: the new source folder and how many lesion images got a mask."""

    folder: Path
    min_confidence: float
    lesion_images: int
    masked: int
    not_outlined: int
    unsure: int
    unreadable: int


def outline_with_confidence(segmenter: Segmenter, frame: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The teacher's outline on ``frame`` (its largest region, as the device draws it: ``segmentation_eval.
    outline_mask``) as an image-sized 0/1 mask, and its mean mask probability; None when it outlines nothing."""
    spec = segmenter.spec
    prepared = prepare(frame, spec.input, auto_crop=True)
    _, prob, placement = segmenter.run(prepared, same_input=True)
    image_box = (placement.x, placement.y, placement.width, placement.height)
    region = outline_mask(prob, spec.mask.min_region_px, image_box, spec.mask.threshold).astype(bool)
    if not region.any():
        return None
    crop = prepared.crop
    on_crop = crop_mask(np.where(region, prob, 0.0), placement, crop, spec.input.height, spec.input.width, spec.mask.threshold)
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[crop.y : crop.y + crop.height, crop.x : crop.x + crop.width] = on_crop
    return mask, float(prob[region].mean())


def write_pseudo_masks(seg_dir: Path, data: str | os.PathLike[str], out: Path, min_confidence: float | None = None) -> PseudoMasks:
    """The source ``data`` with the teacher ``seg_dir``'s confident outlines as its masks, in ``out/<its name>``;
    ``min_confidence`` None: :data:`MIN_CONFIDENCE`."""
    root = Path(data).resolve()
    confidence = MIN_CONFIDENCE if min_confidence is None else min_confidence
    if not 0.0 < confidence < 1.0:
        raise DatasetError(f"--min-confidence {confidence}: must be in (0, 1)")
    samples, _ = scan_source(root)
    folder = out / root.name
    if folder.exists():
        raise DatasetError(f"{folder}: exists already; pseudo masks go into a new folder")
    segmenter = load_segmenter(seg_dir)
    (folder / "masks").mkdir(parents=True)
    (folder / "images").symlink_to(root, target_is_directory=True)
    outcomes: Counter[Outcome] = Counter()
    rows: list[dict[str, str]] = []
    for n, sample in enumerate(samples):
        mask_name = ""
        if sample.label != "normal":
            path = folder / "masks" / f"pseudo_{n:05d}.png"
            outcome = _pseudo_mask(segmenter, sample, path, confidence)
            outcomes[outcome] += 1
            mask_name = path.name if outcome is Outcome.MASKED else ""
        rows.append({"filename": str(sample.path.relative_to(root)), "label": sample.label, "mask": mask_name})
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filename", "label", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    result = PseudoMasks(folder, confidence, sum(outcomes.values()), **{o.value: outcomes[o] for o in Outcome})
    log.info("%s: %d of %d lesion images masked by %s", folder, result.masked, result.lesion_images, seg_dir)
    return result


def _pseudo_mask(segmenter: Segmenter, sample: Sample, path: Path, min_confidence: float) -> Outcome:
    """One lesion image: its mask written to ``path`` when the teacher outlines it confidently."""
    try:
        frame = decode_image_file(sample.path)
    except ImageDecodeError as exc:
        log.warning("%s: not read (%s); no pseudo mask", sample.path, exc)
        return Outcome.UNREADABLE
    found = outline_with_confidence(segmenter, frame)
    if found is None:
        return Outcome.NOT_OUTLINED
    mask, confidence = found
    if confidence < min_confidence:
        return Outcome.UNSURE
    if not cv2.imwrite(str(path), mask * 255):
        raise OSError(f"{path}: could not be written")
    return Outcome.MASKED
