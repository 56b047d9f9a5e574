"""Lesion-removed images: a whole lesion scan with its lesion replaced by the tissue beside it.

Lesion-free *views* (:mod:`model_build.lesion_views`) give "normal" tissue from every scanner, but as a
crop: a view lacks what a whole normal scan has (its field of view, the skin line, the chest wall), and a
model fine-tuned on views still calls most whole normal scans of an unseen scanner a lesion
(docs/model.md, the BUSI fold). A lesion-removed image keeps the whole field: the lesion, its margin and
the column below it (posterior shadowing or enhancement is a lesion sign) are filled with the tissue at the
same depth on either side, mirrored about the band's edges and blended across it, so the layers of the
breast run through where the lesion was. Labelled ``normal`` (view ``lesion_removed``), it keeps its
image's patient, so the split keeps the pair together: the model sees the same scan with and without
its lesion. Used for training only (never scored: it is not a real normal scan).

The fill is row-wise and deterministic, from two mirror images: the tissue left of the band mirrored about
its left edge and the tissue right of it mirrored about its right edge (so both edges are seamless). Their
brightness (a blur) is blended linearly across the band, so a darker side fades into a brighter one without
a step; their fine detail (the speckle) is taken from the nearer side and cross-faded only over a narrow
strip in the middle, as a wide blend of two speckle patterns would be smoother than either (a two-band
blend). The band's top rows fade in from the original so there is no horizontal seam.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_build.lesion_views import MARGIN_FRACTION, masked_lesions, read_mask

if TYPE_CHECKING:
    from model_build.data import Sample

log = logging.getLogger(__name__)

LESION_REMOVED = "lesion_removed"  # the view's name (Sample.view)
MAX_BAND_FRACTION = 0.5  # a lesion band (with its margin) wider than this share of the image gives no image
MIN_DONOR_FRACTION = 0.5  # the tissue on the sides must be at least this share of the band's width
DETAIL_SIGMA_PX = 4.0  # the fill's brightness is blended across the band, its finer detail (speckle) only at its middle
CROSSFADE_FRACTION = 0.1  # the share of the band over which the two sides' detail is cross-faded
FEATHER_FRACTION = 0.5  # the top rows that fade from the original into the fill, as a share of the margin
MAX_ADDED_BACKGROUND = 0.03  # a fill that brings in more of the image's black background than this share is refused
BACKGROUND_LEVEL = 8 / 255  # "black background", as a share of the pixel type's full scale
SHARE_SEED = 0  # which images a share below 1 keeps
MASK_KEY = "lesion_mask"  # Sample.extra key holding the mask file of a lesion-removed sample


@dataclasses.dataclass(frozen=True)
class Band:
    """The columns ``x0:x1`` from row ``y0`` to the bottom that the fill replaces."""

    x0: int
    x1: int
    y0: int
    feather: int


def lesion_band(mask: np.ndarray) -> Band | None:
    """The band to fill for a lesion mask, or None when the lesion leaves too little tissue beside it."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    margin = int(np.ceil(MARGIN_FRACTION * max(h, w)))
    x0, x1 = max(0, int(xs.min()) - margin), min(w, int(xs.max()) + 1 + margin)
    y0 = max(0, int(ys.min()) - margin)
    width = x1 - x0
    if width > MAX_BAND_FRACTION * w or (x0 + (w - x1)) < MIN_DONOR_FRACTION * width:
        return None
    return Band(x0, x1, y0, min(y0, int(FEATHER_FRACTION * margin)))


def _fold(index: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Reflect indices into ``lo:hi`` (symmetric, repeating), as ``numpy.pad(mode="symmetric")`` does."""
    n = hi - lo
    k = np.mod(index - lo, 2 * n)
    return lo + np.where(k >= n, 2 * n - 1 - k, k)


def _two_band_fill(below: np.ndarray, band: Band) -> np.ndarray:
    """The band's new pixels (rows from ``band.y0``): the two sides mirrored about the band's edges, their
    brightness blended linearly across it, their detail cross-faded at its middle."""
    import cv2

    w = below.shape[1]
    cols = np.arange(band.x0, band.x1)
    width = band.x1 - band.x0
    shape = (1, width) + (1,) * (below.ndim - 2)
    smooth_right = ((cols - band.x0 + 0.5) / width).reshape(shape).astype(np.float32)
    crossfade = max(2.0, CROSSFADE_FRACTION * width)
    sharp_right = np.clip((cols - (band.x0 + band.x1) / 2) / crossfade + 0.5, 0.0, 1.0).reshape(shape).astype(np.float32)
    if band.x0 == 0:
        smooth_right[:], sharp_right[:] = 1.0, 1.0
    elif band.x1 == w:
        smooth_right[:], sharp_right[:] = 0.0, 0.0
    left = below[:, _fold(2 * band.x0 - 1 - cols, 0, band.x0) if band.x0 > 0 else cols]
    right = below[:, _fold(2 * band.x1 - 1 - cols, band.x1, w) if band.x1 < w else cols]
    left_low = cv2.GaussianBlur(left, (0, 0), DETAIL_SIGMA_PX)
    right_low = cv2.GaussianBlur(right, (0, 0), DETAIL_SIGMA_PX)
    fill = (1.0 - smooth_right) * left_low + smooth_right * right_low
    fill += (1.0 - sharp_right) * (left - left_low) + sharp_right * (right - right_low)
    return fill


def remove_lesion(frame: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """``frame`` (``H x W`` or ``H x W x C``) with the lesion of ``mask`` (``H x W``) filled, or None."""
    if frame.shape[:2] != mask.shape:
        return None
    band = lesion_band(mask)
    if band is None:
        return None
    below = frame[band.y0 :].astype(np.float32)
    fill = _two_band_fill(below, band)
    if band.feather > 0:
        ramp = np.ones(len(below), dtype=np.float32)
        ramp[: band.feather] = (np.arange(band.feather) + 0.5) / band.feather
        ramp = ramp.reshape((-1, 1) + (1,) * (frame.ndim - 2))
        fill = ramp * fill + (1.0 - ramp) * below[:, band.x0 : band.x1]
    full_scale = float(np.iinfo(frame.dtype).max) if frame.dtype.kind in "ui" else 1.0
    original = below[:, band.x0 : band.x1]
    added_background = np.mean(fill < BACKGROUND_LEVEL * full_scale) - np.mean(original < BACKGROUND_LEVEL * full_scale)
    if added_background > MAX_ADDED_BACKGROUND:
        return None  # a sector scan: the fan's black surround would be mirrored into the tissue
    out = frame.copy()
    out[band.y0 :, band.x0 : band.x1] = np.clip(fill + 0.5, 0, full_scale).astype(frame.dtype)
    return out


def derive_lesion_removed(samples: list[Sample], root: Path, share: float = 1.0) -> list[Sample]:
    """For each lesion image of ``root`` whose mask leaves room: a ``lesion_removed`` sample labelled normal,
    keeping the image's patient; with ``share`` < 1, a seeded choice of that share of them (by file name, so
    the same images for any order). The mask file travels in the sample (``MASK_KEY``) for the decoder."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"lesion-removed share {share}: must be in (0, 1]")
    out: list[Sample] = []
    for sample, path, mask in masked_lesions(samples, root):
        if lesion_band(mask) is None or not _fills(sample.path, mask):
            continue
        out.append(dataclasses.replace(sample, label="normal", view=LESION_REMOVED, extra=sample.extra + ((MASK_KEY, str(path)),)))
    if share < 1.0:
        out.sort(key=lambda removed: removed.path.name)
        keep = np.random.default_rng(SHARE_SEED).permutation(len(out))[: round(share * len(out))]
        out = [out[i] for i in sorted(keep)]
    log.info("%s: %d lesion-removed images from masks (share %.2f)", root.name, len(out), share)
    return out


def _fills(image: Path, mask: np.ndarray) -> bool:
    from device.errors import ImageDecodeError
    from device.imageio import decode_image_file

    try:
        return remove_lesion(decode_image_file(image), mask) is not None
    except ImageDecodeError:
        return False  # the scan reports the file itself


def apply_removal(frame: np.ndarray, sample: Sample) -> np.ndarray:
    """The decoded frame of a ``lesion_removed`` sample with its lesion filled (the frame itself otherwise)."""
    mask_file = sample.meta(MASK_KEY)
    if sample.view != LESION_REMOVED or not mask_file:
        return frame
    mask = read_mask(Path(mask_file))
    filled = remove_lesion(frame, mask) if mask is not None else None
    if filled is None:
        raise ValueError(f"{sample.path}: its lesion mask {mask_file} no longer gives a lesion-removed image")
    return filled
