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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageDecodeError
from device.imageio import decode_image_file
from device.model.preprocess import prepare
from device.outline import Segmenter, crop_mask
from model_build.data import DatasetError, Sample, scan_source
from model_build.outline_descriptors import load_segmenter

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.8  # (the CLI's --min-confidence default) mean mask probability over the outlined region; below it the image gets no pseudo mask


@dataclass(frozen=True)
class PseudoMasks:
    """What :func:`write_pseudo_masks` wrote: the new source folder and how many lesion images got a mask."""

    folder: Path
    lesion_images: int
    masked: int
    not_outlined: int  # the teacher drew nothing (or less than its smallest region)
    unsure: int  # outlined below the confidence
    unreadable: int


def outline_with_confidence(segmenter: Segmenter, frame: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The teacher's largest region on ``frame`` as an image-sized 0/1 mask and its mean mask probability; None when
    it outlines nothing of at least its smallest region."""
    spec = segmenter.spec
    prepared = prepare(frame, spec.input, auto_crop=True)
    _, prob, placement = segmenter.run(prepared, same_input=True)
    binary = (prob >= spec.mask.threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:
        return None
    best = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    if stats[best, cv2.CC_STAT_AREA] < spec.mask.min_region_px:
        return None
    region = labels == best
    confidence = float(prob[region].mean())
    kept = np.where(region, prob, 0.0).astype(np.float32)
    crop = prepared.crop
    on_crop = crop_mask(kept, placement, crop, spec.input.height, spec.input.width, spec.mask.threshold)
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[crop.y : crop.y + crop.height, crop.x : crop.x + crop.width] = on_crop
    return mask, confidence


def write_pseudo_masks(seg_dir: Path, data: str | os.PathLike[str], out: Path, min_confidence: float = MIN_CONFIDENCE) -> PseudoMasks:
    """The source ``data`` with the teacher ``seg_dir``'s confident outlines as its masks, in ``out/<its name>``."""
    root = Path(data).resolve()
    if not 0.0 < min_confidence < 1.0:
        raise DatasetError(f"--min-confidence {min_confidence}: must be in (0, 1)")
    samples, _ = scan_source(root)
    folder = out / root.name
    if folder.exists():
        raise DatasetError(f"{folder}: exists already; pseudo masks go into a new folder")
    segmenter = load_segmenter(seg_dir)
    (folder / "masks").mkdir(parents=True)
    (folder / "images").symlink_to(root, target_is_directory=True)
    counts = {"masked": 0, "not_outlined": 0, "unsure": 0, "unreadable": 0}
    rows: list[dict[str, str]] = []
    for n, sample in enumerate(samples):
        mask_file = _pseudo_mask(segmenter, sample, folder / "masks" / f"pseudo_{n:05d}.png", min_confidence, counts)
        rows.append({"filename": str(sample.path.relative_to(root)), "label": sample.label, "mask": mask_file})
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filename", "label", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    lesions = sum(1 for s in samples if s.label != "normal")
    result = PseudoMasks(folder, lesions, **counts)
    log.info("%s: %d of %d lesion images masked by %s", folder, result.masked, lesions, seg_dir)
    return result


def _pseudo_mask(segmenter: Segmenter, sample: Sample, path: Path, min_confidence: float, counts: dict[str, int]) -> str:
    """The mask column for one image ("" for a normal scan or no confident outline); writes the mask file."""
    if sample.label == "normal":
        return ""
    try:
        frame = decode_image_file(sample.path)
    except ImageDecodeError as exc:
        log.warning("%s: not read (%s); no pseudo mask", sample.path, exc)
        counts["unreadable"] += 1
        return ""
    found = outline_with_confidence(segmenter, frame)
    if found is None:
        counts["not_outlined"] += 1
        return ""
    mask, confidence = found
    if confidence < min_confidence:
        counts["unsure"] += 1
        return ""
    if not cv2.imwrite(str(path), mask * 255):
        raise OSError(f"{path}: could not be written")
    counts["masked"] += 1
    return path.name
