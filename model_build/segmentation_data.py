"""Images with their lesion masks, both through the device's crop + letterbox geometry, split by patient.

Which masks (the shared sources): BUS-BRA ``masks/mask_<id>.png``, BrEaST-Lesions-USG the CSV's ``mask`` column
(``masks/case<NNN>_tumor.png``; its ``other`` masks are other structures, not the lesion, and are not used).
BUSI ships without masks: only its normal scans are used, as empty masks. Normal scans of any source and the
lesion-free views cut from lesion images (:mod:`model_build.lesion_views`) are empty masks; lesion images
without a mask file are left out (counted, logged).

Geometry: the image goes through ``device.model.preprocess.prepare`` exactly as on the device; its mask is cut by the
same crop box (found on the image), resized to the same placement inside the letterbox (area-averaged, then
thresholded at one half) and put at the same offset. So mask pixel ``(y, x)`` of the model input is the lesion
or not at the image pixel the model sees there.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from device.errors import ImageDecodeError
from device.imageio import decode_image_file
from device.model.bundle import InputSpec
from device.model.preprocess import Prepared, prepare
from model_build.data import BadFile, DatasetError, LoadedData, Sample, order_labels, scan_source
from model_build.lesion_views import LESION_FREE, mask_path, read_mask
from model_build.split import HoldOutRule, SplitAssignment, assign_groups, check_no_leak, hold_out, split_groups

log = logging.getLogger(__name__)

EMPTY = "empty"  # a sample whose mask is known to be empty (normal scan, lesion-free view)
LESION = "lesion"


@dataclass(frozen=True)
class SegSample:
    """One image and where its mask comes from: a file, or ``None`` when it is known to be empty."""

    sample: Sample
    mask: Path | None

    @property
    def kind(self) -> str:
        return EMPTY if self.mask is None else LESION

    @property
    def source(self) -> str:
        """The source, or ``source#view`` for a view cut by a mask: metrics keep them apart."""
        s = self.sample
        return s.source if s.view == "full" else f"{s.source}#{s.view}"


@dataclass(frozen=True)
class PreparedPair:
    """An image and its mask at the model's input size, with the geometry that took them there."""

    pixels: np.ndarray  # H x W uint8 grey (the device's model pixels, one channel)
    mask: np.ndarray  # H x W uint8, 1 = lesion
    prepared: Prepared

    @property
    def image_box(self) -> tuple[int, int, int, int]:
        """Where the image lies in the model input (x, y, w, h); the rest is letterbox band."""
        p = self.prepared.placement
        return (p.x, p.y, p.width, p.height)

    @property
    def image_px_per_model_px(self) -> float:
        """How many image pixels one model pixel spans (to quote a boundary error in image pixels)."""
        return self.prepared.crop.width / max(1, self.prepared.placement.width)


@dataclass
class SegData:
    samples: list[SegSample]
    pixels: np.ndarray  # N x H x W uint8
    masks: np.ndarray  # N x H x W uint8
    scales: np.ndarray  # N: image px per model px
    image_boxes: np.ndarray  # N x 4: x, y, w, h of the image inside the model input (the rest is letterbox band)
    bad_files: list[BadFile] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # per source: lesion images without a mask

    def subset(self, idx: np.ndarray) -> SegData:
        return SegData(
            [self.samples[i] for i in idx], self.pixels[idx], self.masks[idx], self.scales[idx], self.image_boxes[idx], self.bad_files, self.left_out
        )

    def sources(self) -> np.ndarray:
        return np.array([s.source for s in self.samples])

    def has_lesion(self) -> np.ndarray:
        return np.asarray(self.masks.reshape(len(self.masks), -1).any(axis=1))

    def as_loaded(self) -> LoadedData:
        """The classifier's view of these images (for :mod:`model_build.split`)."""
        samples = [s.sample for s in self.samples]
        return LoadedData(samples, self.pixels, order_labels({s.label for s in samples}))


def mask_file(sample: Sample, root: Path) -> Path | None:
    """The lesion mask file of a full image, or None when the source has none for it."""
    path = mask_path(root, sample.path.name, sample.meta("mask") or None)
    return path if path is not None and path.is_file() else None


def scan_segmentation_source(root: str | os.PathLike[str], lesion_free: bool = True) -> tuple[list[SegSample], int]:
    """A source's segmentation samples and the number of lesion images left out for want of a mask."""
    folder = Path(root)
    samples, _ = scan_source(folder, lesion_views=lesion_free)
    out: list[SegSample] = []
    missing = 0
    for sample in samples:
        if sample.view == LESION_FREE:
            out.append(SegSample(sample, None))
        elif sample.view != "full":
            continue  # lesion-centred views: the full image already carries the lesion
        elif sample.label == "normal":
            out.append(SegSample(sample, None))
        elif (path := mask_file(sample, folder)) is not None:
            out.append(SegSample(sample, path))
        else:
            missing += 1
    if missing:
        log.info("%s: %d lesion image(s) without a mask file left out", folder.name, missing)
    if not out:
        raise DatasetError(f"dataset {folder}: no image with a lesion mask and no normal scan (nothing to segment)")
    return out, missing


def mask_to_model(mask: np.ndarray, prepared: Prepared, spec: InputSpec) -> np.ndarray:
    """An image-size mask through a prepared image's crop and letterbox placement: ``H x W`` uint8 0/1."""
    cut = prepared.crop.apply(np.asarray(mask, dtype=np.float32))
    p = prepared.placement
    shrinking = p.width < cut.shape[1] or p.height < cut.shape[0]
    resized = cv2.resize(cut, (p.width, p.height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    out = np.zeros((spec.height, spec.width), dtype=np.uint8)
    out[p.y : p.y + p.height, p.x : p.x + p.width] = resized >= 0.5
    return out


def prepare_pair(frame: np.ndarray, mask: np.ndarray | None, spec: InputSpec, auto_crop: bool = True) -> PreparedPair:
    """A frame and its mask (same height and width; None = empty) at the model's input size."""
    if mask is not None and mask.shape[:2] != frame.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} px, its image {frame.shape[1]}x{frame.shape[0]}")
    prepared = prepare(frame, spec, auto_crop=auto_crop)
    model_mask = np.zeros((spec.height, spec.width), np.uint8) if mask is None else mask_to_model(mask, prepared, spec)
    return PreparedPair(prepared.pixels[:, :, 0], model_mask, prepared)


def load_pair(seg: SegSample, spec: InputSpec, auto_crop: bool = True) -> PreparedPair:
    """Decode one sample and its mask (cut to the sample's view region) and prepare both."""
    frame = decode_image_file(seg.sample.path)
    mask = None
    if seg.mask is not None:
        mask = read_mask(seg.mask)
        if mask is None:
            raise ImageDecodeError(f"{seg.mask}: mask unreadable", code="mask_unreadable")
    if seg.sample.region is not None:
        x0, y0, x1, y1 = seg.sample.region
        frame = np.ascontiguousarray(frame[y0:y1, x0:x1])
        mask = None if mask is None else mask[y0:y1, x0:x1]
    try:
        return prepare_pair(frame, mask, spec, auto_crop)
    except ValueError as exc:
        raise ImageDecodeError(f"{seg.sample.path} and {seg.mask}: {exc}", code="mask_size") from exc


def _limit(samples: list[SegSample], per_kind: int, seed: int) -> list[SegSample]:
    """A seeded sample of at most ``per_kind`` lesion images and ``per_kind`` empty ones per source/view."""
    rng = np.random.default_rng(seed)
    out: list[SegSample] = []
    for key in sorted({(s.source, s.kind) for s in samples}):
        group = [s for s in samples if (s.source, s.kind) == key]
        pick = rng.choice(len(group), size=min(per_kind, len(group)), replace=False)
        out.extend(group[i] for i in sorted(pick))
    return out


def load_segmentation(
    roots: list[str | os.PathLike[str]],
    spec: InputSpec,
    *,
    limit: int | None = None,
    seed: int = 0,
    lesion_free: bool = True,
    auto_crop: bool = True,
    workers: int = 2,
) -> SegData:
    """Scan and prepare every source's images and masks; unreadable pairs are skipped (logged, in ``bad_files``)."""
    if not roots:
        raise DatasetError("no dataset given (use --data DIR)")
    samples: list[SegSample] = []
    left_out: dict[str, int] = {}
    for root in roots:
        found, missing = scan_segmentation_source(root, lesion_free)
        if missing:
            left_out[found[0].sample.source] = missing
        samples.extend(_limit(found, limit, seed) if limit else found)

    def work(seg: SegSample) -> PreparedPair | BadFile:
        try:
            return load_pair(seg, spec, auto_crop)
        except ImageDecodeError as exc:
            return BadFile(str(seg.sample.path), str(exc), exc.code)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, samples))
    kept, pairs, bad = [], [], []
    for seg, result in zip(samples, results):
        if isinstance(result, BadFile):
            log.warning("skipping %s: %s", result.path, result.reason)
            bad.append(result)
        else:
            kept.append(seg)
            pairs.append(result)
    if not kept:
        raise DatasetError("no readable image/mask pair in the given dataset(s)")
    return SegData(
        kept,
        np.stack([p.pixels for p in pairs]),
        np.stack([p.mask for p in pairs]),
        np.array([p.image_px_per_model_px for p in pairs], dtype=np.float32),
        np.array([p.image_box for p in pairs], dtype=np.int32).reshape(-1, 4),
        bad,
        left_out,
    )


@dataclass(frozen=True)
class SegSplit:
    """Indices of ``data`` per split, the group of every image, and the held-out (external) indices."""

    assignment: SplitAssignment  # over the non-external images, in ``kept`` order
    kept: np.ndarray
    external: np.ndarray
    groups: tuple[str, ...]  # per image of ``data``

    def indices(self, split: str) -> np.ndarray:
        return self.kept[self.assignment.indices(split)]


def split_segmentation(data: SegData, seed: int = 0, external: HoldOutRule | None = None) -> SegSplit:
    """Patient / near-duplicate groups (:mod:`model_build.split`), optionally a held-out rule, then 70/15/15."""
    loaded = data.as_loaded()
    groups = assign_groups(loaded)
    if external is not None:
        kept, held = hold_out(loaded.samples, groups, external)
    else:
        kept, held = np.arange(len(groups)), np.zeros(0, dtype=np.int64)
    assignment = split_groups([loaded.samples[i] for i in kept], [groups[i] for i in kept], seed=seed)
    check_no_leak(assignment)
    return SegSplit(assignment, kept, held, tuple(groups))
