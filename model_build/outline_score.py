"""A bundle's lesion outlines scored the way the device draws them: the contour of ``classify --json``.

``segment``'s report scores its int8 model on prepared model inputs. What a clinician sees is the device's
contour: the classifier's auto-crop, the quality gate (an inconclusive frame gets no outline), the outline mapped
back to image pixels and simplified to at most 64 points. Issue 16 scores the shipped bundle's outlines on other
hospitals' images from that contour, so this scores it the same way on the shared sources:

* each lesion image of one part of a ``segment`` run's ``split.csv`` (``test``: its held-out patients;
  ``external``: its held-out source) that has a reference mask is classified whole by
  :class:`device.engine.Classifier` with the device's own quality limits;
* its ``lesion.outline.contour`` is filled in image pixels and compared with the mask (Dice); a frame with no
  outline (none found, or withheld as inconclusive) scores 0;
* mean and median Dice, with 95 % CIs resampling patients / near-duplicate groups, over all frames and over the
  conclusive ones, per source; each image's row goes to a CSV.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from model_build.evaluate import grouped_bootstrap
from model_build.lesion_views import read_mask
from model_build.segmentation_data import SegSample, scan_segmentation_source
from model_build.segmentation_eval import dice
from model_build.split import relative_name

if TYPE_CHECKING:
    from device.engine import Classifier

log = logging.getLogger(__name__)

ALL = "all"
COLUMNS = ("source", "file", "group", "dice", "outlined", "inconclusive", "category")


class OutlineScoreError(ValueError):
    """The images cannot be scored: no split file, no such part, or none of its images found under ``--data``."""


@dataclass(frozen=True)
class OutlineRow:
    source: str
    file: str
    group: str
    dice: float  # 0 when no outline was drawn
    outlined: bool
    inconclusive: bool
    category: str  # the result's category (device.decision), or "" when it has none


@dataclass(frozen=True)
class OutlineScoring:
    rows: list[OutlineRow]
    summary: dict[str, dict[str, Any]]  # "all" and each source -> figures with CIs


def filled(contour: Sequence[Sequence[int]], shape: tuple[int, int]) -> np.ndarray:
    """The region a contour (image pixel points, as ``classify --json`` gives them) encloses, as a 0/1 mask."""
    mask = np.zeros(shape, np.uint8)
    if len(contour) >= 3:
        cv2.fillPoly(mask, [np.asarray(contour, np.int32).reshape(-1, 1, 2)], 1)
    return mask


def listed_images(split_csv: Path, part: str, roots: Sequence[str | os.PathLike[str]]) -> list[tuple[SegSample, str]]:
    """The lesion images of ``part`` in ``split_csv`` that have a mask under ``roots``, with their groups."""
    try:
        with open(split_csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise OutlineScoreError(f"split file {split_csv}: {exc.strerror or exc}") from None
    if rows and not {"source", "file", "group", "split"} <= set(rows[0]):
        raise OutlineScoreError(f"split file {split_csv}: needs the columns source, file, group, split (a `segment` report's split.csv)")
    listed = {(r["source"], r["file"]): r["group"] for r in rows if r["split"] == part}
    if not listed:
        parts = sorted({r["split"] for r in rows})
        raise OutlineScoreError(f"split file {split_csv}: no image in part {part!r} (its parts: {', '.join(parts) or 'none'})")
    found = []
    for root in roots:
        samples, _ = scan_segmentation_source(root, lesion_free=False)
        for seg in samples:
            key = (seg.sample.source, relative_name(seg.sample))
            if seg.mask is not None and key in listed:
                found.append((seg, listed[key]))
    if not found:
        raise OutlineScoreError(f"none of the {len(listed)} {part} images of {split_csv} is a masked lesion image under {', '.join(map(str, roots))}")
    return found


def score_outlines(
    bundle_dir: Path,
    split_csv: Path,
    roots: Sequence[str | os.PathLike[str]],
    part: str = "test",
    segmentation_dir: Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> OutlineScoring:
    """Score the bundle's outlines (or ``segmentation_dir``'s, packed into a copy of it) on ``part``'s lesions."""
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.model.bundle import load_bundle
    from model_build.segmentation_build import pack_segmentation

    images = listed_images(split_csv, part, roots)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = pack_segmentation(bundle_dir, segmentation_dir, Path(tmp) / "bundle", replace=True) if segmentation_dir else load_bundle(bundle_dir)
        if bundle.manifest.segmentation is None:
            raise OutlineScoreError(f"bundle {bundle_dir} has no segmentation model (give --segmentation)")
        classifier = Classifier(bundle, threads=2)
        log.info("scoring the outlines of %d lesion image(s) with %s", len(images), bundle.manifest.version)
        rows = [_score_one(classifier, decode_image_file(seg.sample.path), seg, group) for seg, group in images]
    return OutlineScoring(rows, summarise(rows, n_boot, seed))


def _score_one(classifier: Classifier, frame: np.ndarray, seg: SegSample, group: str) -> OutlineRow:
    truth = read_mask(seg.mask) if seg.mask is not None else None
    if truth is None:
        raise OutlineScoreError(f"mask {seg.mask} of {seg.sample.path}: missing or unreadable")
    if truth.shape != frame.shape[:2]:
        raise OutlineScoreError(f"mask {seg.mask}: {truth.shape[1]}x{truth.shape[0]}, its image {seg.sample.path} {frame.shape[1]}x{frame.shape[0]}")
    result = classifier.classify(frame)
    outline = result.lesion.outline if result.lesion is not None else None
    value = dice(filled(outline.contour, truth.shape), truth) if outline is not None else 0.0
    category = result.category.value if result.category is not None else ""
    return OutlineRow(seg.sample.source, relative_name(seg.sample), group, value, outline is not None, result.inconclusive, category)


def _figures(dices: np.ndarray, conclusive: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    d, c = dices[idx], conclusive[idx]
    nan = float("nan")
    return {
        "dice_mean": float(d.mean()) if len(d) else nan,
        "dice_median": float(np.median(d)) if len(d) else nan,
        "conclusive_dice_mean": float(d[c].mean()) if c.any() else nan,
        "conclusive_dice_median": float(np.median(d[c])) if c.any() else nan,
    }


def summarise(rows: list[OutlineRow], n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Figures with 95 % CIs (resampling groups) over all rows and per source."""
    sources = np.array([r.source for r in rows])
    out: dict[str, dict[str, Any]] = {}
    for name in (ALL, *sorted(set(sources.tolist()))):
        sub = [r for r, s in zip(rows, sources) if name == ALL or s == name]
        dices = np.array([r.dice for r in sub])
        conclusive = np.array([not r.inconclusive for r in sub])
        groups = np.array([r.group for r in sub])
        stat = functools.partial(_figures, dices, conclusive)
        ci = grouped_bootstrap(groups, stat, n_boot, seed)
        values = stat(np.arange(len(sub)))
        out[name] = {
            "lesions": len(sub),
            "outlined": sum(r.outlined for r in sub),
            "inconclusive": int((~conclusive).sum()),
            **{key: {"value": value, "ci95": list(ci[key])} for key, value in values.items()},
        }
    return out


def write_rows(path: Path, rows: list[OutlineRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.source, r.file, r.group, f"{r.dice:.6f}", int(r.outlined), int(r.inconclusive), r.category])


def table(summary: dict[str, dict[str, Any]]) -> list[str]:
    """The summary as a Markdown table (the CLI's output)."""

    def cell(entry: dict[str, Any]) -> str:
        lo, hi = entry["ci95"]
        return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]"

    lines = [
        "| images | lesions | outlined | inconclusive | Dice mean | Dice median | conclusive: Dice mean | conclusive: Dice median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        keys = ("dice_mean", "dice_median", "conclusive_dice_mean", "conclusive_dice_median")
        lines.append(f"| {name} | {s['lesions']} | {s['outlined']} | {s['inconclusive']} | " + " | ".join(cell(s[k]) for k in keys) + " |")
    return lines
