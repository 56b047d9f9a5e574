"""Lesion-free views: normal tissue from every scanner, cut from lesion images by their masks.

Only BUSI has normal scans, all from one scanner model, so a classifier can learn "normal" as "looks
like that scanner". BUS-BRA and BrEaST-Lesions-USG carry a lesion mask per image; the largest
rectangle of each image that stays clear of the (dilated) lesion is breast tissue without a lesion,
imaged by that image's scanner. Used as extra ``normal`` samples (view ``lesion_free``), they teach
"normal" across scanners. A view keeps the patient of its image, so it is split with it.

Rules (the constants below): everything below the lesion is excluded (posterior shadowing or
enhancement is a lesion sign, not normal tissue), the lesion is dilated by a margin (its halo), the
rectangle must cover a minimum share of the image and of each side (a thin strip is not a
scan at the scale of a normal one), and images whose mask is missing, empty or unreadable give no view.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from model_build.data import Sample

log = logging.getLogger(__name__)

GRID = 64  # the mask is reduced to a GRID x GRID occupancy grid before the rectangle search
MARGIN_FRACTION = 0.06  # dilation of the lesion, as a fraction of the image's longer side
MIN_AREA_FRACTION = 0.25  # the view covers at least this share of the image
MIN_SIDE_FRACTION = 0.35  # and at least this share of its width and of its height
LESION_FREE = "lesion_free"  # the view's name (Sample.view)


@dataclass(frozen=True)
class Region:
    """A rectangle in image pixels: columns ``x0:x1``, rows ``y0:y1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


def mask_path(root: Path, filename: str, mask_column: str | None) -> Path | None:
    """The lesion mask of ``filename`` in a source: the CSV's ``mask`` column (BrEaST-Lesions-USG) or
    ``masks/mask_<id>.png`` for ``<prefix>_<id>.png`` (BUS-BRA); None when the source has none."""
    masks = root / "masks"
    if not masks.is_dir():
        return None
    if mask_column:
        return masks / mask_column
    stem = Path(filename).stem
    _, sep, ident = stem.partition("_")
    candidate = masks / f"mask_{ident if sep else stem}.png"
    return candidate if candidate.is_file() else None


def lesion_free_region(mask: np.ndarray) -> Region | None:
    """The largest rectangle clear of the dilated lesion that meets the size rules, or None."""
    h, w = mask.shape
    if h < 8 or w < 8 or not mask.any():
        return None
    blocked = _grid(mask > 0, _margin_cells(h, w))
    rows, cols = blocked.shape
    best = _largest_free_rectangle(~blocked)
    if best is None:
        return None
    r0, c0, r1, c1 = best
    region = Region(int(c0 * w / cols), int(r0 * h / rows), int(np.ceil(c1 * w / cols)), int(np.ceil(r1 * h / rows)))
    region = Region(region.x0, region.y0, min(region.x1, w), min(region.y1, h))
    if region.area() < MIN_AREA_FRACTION * h * w:
        return None
    if (region.x1 - region.x0) < MIN_SIDE_FRACTION * w or (region.y1 - region.y0) < MIN_SIDE_FRACTION * h:
        return None
    return region


def _margin_cells(h: int, w: int) -> int:
    return int(np.ceil(MARGIN_FRACTION * max(h, w) * GRID / max(h, w)))


def _grid(lesion: np.ndarray, margin: int) -> np.ndarray:
    """GRID x GRID (aspect kept) occupancy: a cell is blocked if any lesion pixel falls in it, then dilated."""
    h, w = lesion.shape
    rows = max(1, round(GRID * h / max(h, w)))
    cols = max(1, round(GRID * w / max(h, w)))
    ys = np.minimum((np.arange(h) * rows) // h, rows - 1)
    xs = np.minimum((np.arange(w) * cols) // w, cols - 1)
    blocked = np.zeros((rows, cols), dtype=bool)
    yy, xx = np.nonzero(lesion)
    blocked[ys[yy], xs[xx]] = True
    blocked = np.maximum.accumulate(blocked, axis=0)  # the acoustic shadow / enhancement below a lesion is not normal tissue
    if margin > 0:
        import cv2

        kernel = np.ones((2 * margin + 1, 2 * margin + 1), dtype=np.uint8)
        blocked = cv2.dilate(blocked.astype(np.uint8), kernel) > 0
    return blocked


def _largest_free_rectangle(free: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest all-True axis-aligned rectangle (row0, col0, row1, col1), half-open; histogram method."""
    rows, cols = free.shape
    heights = np.zeros(cols, dtype=np.int64)
    best, best_area = None, 0
    for r in range(rows):
        heights = np.where(free[r], heights + 1, 0)
        stack: list[int] = []
        for c in range(cols + 1):
            current = heights[c] if c < cols else 0
            while stack and heights[stack[-1]] >= current:
                top = stack.pop()
                height = int(heights[top])
                left = stack[-1] + 1 if stack else 0
                area = height * (c - left)
                if area > best_area and height > 0:
                    best_area, best = area, (r - height + 1, left, r + 1, c)
            stack.append(c)
    return best


def read_mask(path: Path) -> np.ndarray | None:
    """A binary mask file as a bool array, or None (logged) when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) > 0
    except (OSError, ValueError) as exc:
        log.warning("mask %s unreadable, no lesion-free view: %s", path, exc)
        return None


LESION_CENTRED = "lesion_centred"  # a lesion view cut to the same size as the image's lesion-free view


def lesion_centred_region(mask: np.ndarray, like: Region) -> Region:
    """A rectangle the size of ``like`` (widened to hold the lesion) centred on the lesion, inside the image.

    Cut from the same image as its lesion-free view, it gives the lesion classes views of the same shape,
    so the shape of a view (and its letterbox bands) says nothing about its class."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    width = min(w, max(like.x1 - like.x0, int((xs.max() - xs.min() + 1) * 1.3)))
    height = min(h, max(like.y1 - like.y0, int((ys.max() - ys.min() + 1) * 1.3)))
    cx, cy = (xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2
    x0 = int(np.clip(cx - width // 2, 0, w - width))
    y0 = int(np.clip(cy - height // 2, 0, h - height))
    return Region(x0, y0, x0 + width, y0 + height)


def masked_lesions(samples: list[Sample], root: Path) -> Iterator[tuple[Sample, Path, np.ndarray]]:
    """Each lesion image of ``root`` (full image) with its mask file and the mask read; images without a
    usable mask are left out."""
    for sample in samples:
        if sample.label == "normal" or sample.view != "full":
            continue
        path = mask_path(root, sample.path.name, sample.meta("mask") or None)
        if path is None or not path.is_file():
            continue
        mask = read_mask(path)
        if mask is not None:
            yield sample, path, mask


def derive_views(samples: list[Sample], root: Path) -> list[Sample]:
    """For each lesion image of ``root`` with a usable mask: a ``lesion_free`` view labelled normal and a
    ``lesion_centred`` view with the image's label, both keeping the image's patient. Others give none."""
    out: list[Sample] = []
    for sample, _, mask in masked_lesions(samples, root):
        free = lesion_free_region(mask)
        if free is None:
            continue
        centred = lesion_centred_region(mask, free)
        out.append(dataclasses.replace(sample, label="normal", view=LESION_FREE, region=astuple(free)))
        out.append(dataclasses.replace(sample, view=LESION_CENTRED, region=astuple(centred)))
    log.info("%s: %d lesion-free and %d lesion-centred views from masks", root.name, len(out) // 2, len(out) // 2)
    return out
