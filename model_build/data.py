"""Dataset loaders: class-folder layouts and CSV layouts, decoded exactly as the device decodes frames.

* class folders: ``<root>/<class>/*.<image>`` (files with ``_mask`` in the name are dropped — BUSI
  ships segmentation masks beside the images);
* CSV: ``<root>/labels.csv`` (or the only ``*.csv``) with ``filename,label[,patient_id,...]``; images
  are looked up in ``<root>/images/`` then ``<root>/``.

Pixels go through ``device.imageio.decode_image_file`` and ``device.model.preprocess.prepare``, so
training sees what the device feeds the model. Unreadable files are collected as :class:`BadFile`
records (or raise with ``strict``).
"""

from __future__ import annotations

import csv
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from device.errors import ImageDecodeError
from device.imageio import IMAGE_SUFFIXES, decode_image_file
from device.model.bundle import InputSpec
from device.model.preprocess import prepare
from model_build.lesion_removal import apply_removal, derive_lesion_removed
from model_build.lesion_views import derive_views

log = logging.getLogger(__name__)

CANONICAL_ORDER = ("normal", "benign", "malignant")
MASK_MARKER = "_mask"


class DatasetError(ValueError):
    """A dataset cannot be used: missing, empty, single-class, malformed CSV, or a bad file under --strict."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    source: str
    patient_id: str | None = None
    extra: tuple[tuple[str, str], ...] = ()  # other CSV columns (device, histology...)
    view: str = "full"  # or a view cut from the image by its mask (model_build.lesion_views)
    region: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 of the view in the image's pixels

    def meta(self, key: str) -> str | None:
        return dict(self.extra).get(key)


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str
    code: str


@dataclass
class LoadedData:
    """Decoded, letterboxed grey pixels (``N x H x W`` uint8) with their samples."""

    samples: list[Sample]
    pixels: np.ndarray
    labels: tuple[str, ...]
    bad_files: list[BadFile] = field(default_factory=list)
    source_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def label_index(self) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(self.labels)}
        return np.array([lookup[s.label] for s in self.samples], dtype=np.int64)

    def sources(self) -> np.ndarray:
        """Per sample its source, or ``source#view`` for a view cut by a mask: metrics keep them apart."""
        return np.array([s.source if s.view == "full" else f"{s.source}#{s.view}" for s in self.samples])

    def subset(self, idx: np.ndarray) -> LoadedData:
        return LoadedData([self.samples[i] for i in idx], self.pixels[idx], self.labels, self.bad_files, self.source_labels)


def source_name(root: Path) -> str:
    return root.resolve().name


def scan_source(root: str | os.PathLike[str], lesion_views: bool = False, lesion_removed: float = 0.0) -> tuple[list[Sample], list[BadFile]]:
    """List a source's samples (no decoding). CSV layout if a CSV is present, otherwise class folders.
    With ``lesion_views``, add the views its lesion masks allow (:mod:`model_build.lesion_views`); with
    ``lesion_removed`` > 0, that share of its lesion images with the lesion filled in (:mod:`model_build.lesion_removal`)."""
    folder = Path(root)
    if not folder.is_dir():
        raise DatasetError(f"dataset {folder}: not a directory")
    csvs = [folder / "labels.csv"] if (folder / "labels.csv").is_file() else sorted(folder.glob("*.csv"))
    if len(csvs) > 1:
        raise DatasetError(f"dataset {folder}: several CSV files ({', '.join(p.name for p in csvs)}); keep one")
    samples, bad = _scan_csv(folder, csvs[0]) if csvs else _scan_class_folders(folder)
    if not samples:
        raise DatasetError(f"dataset {folder}: no images found")
    extra: list[Sample] = []
    if lesion_views:
        extra += derive_views(samples, folder)
    if lesion_removed > 0:
        extra += derive_lesion_removed(samples, folder, lesion_removed)
    return samples + extra, bad


def _scan_class_folders(root: Path) -> tuple[list[Sample], list[BadFile]]:
    name = source_name(root)
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() in IMAGE_SUFFIXES and MASK_MARKER not in file.stem.lower():
                samples.append(Sample(file, class_dir.name.lower(), name))
    return samples, []


def _scan_csv(root: Path, csv_path: Path) -> tuple[list[Sample], list[BadFile]]:
    name = source_name(root)
    image_dir = root / "images" if (root / "images").is_dir() else root
    samples: list[Sample] = []
    bad: list[BadFile] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "filename" not in fields or "label" not in fields:
            raise DatasetError(f"{csv_path}: needs 'filename' and 'label' columns, has {fields}")
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("filename") or not row.get("label"):
                bad.append(BadFile(str(csv_path), f"row without filename/label: {row}", "bad_row"))
                continue
            file = image_dir / row["filename"]
            if not file.is_file():
                bad.append(BadFile(str(file), "listed in CSV but missing", "not_found"))
                continue
            extra = tuple((k, v) for k, v in row.items() if k not in ("filename", "label", "patient_id"))
            samples.append(Sample(file, row["label"].lower(), name, row.get("patient_id") or None, extra))
    return samples, bad


def order_labels(labels: set[str]) -> tuple[str, ...]:
    known = [x for x in CANONICAL_ORDER if x in labels]
    return tuple(known + sorted(labels - set(known)))


def decode_sample(sample: Sample, spec: InputSpec, auto_crop: bool = True) -> np.ndarray:
    """File -> model-size grey pixels, exactly as ``python -m device classify`` does it:
    decode, crop to the detected scan region (``device.crop``), letterbox (``device.model.preprocess``)."""
    frame = apply_removal(decode_image_file(sample.path), sample)
    if sample.region is not None:
        x0, y0, x1, y1 = sample.region
        frame = np.ascontiguousarray(frame[y0:y1, x0:x1])
    return prepare(frame, spec, auto_crop=auto_crop).pixels[:, :, 0]


def load_sources(
    roots: list[str | os.PathLike[str]],
    spec: InputSpec,
    strict: bool = False,
    limit_per_class: int | None = None,
    seed: int = 0,
    workers: int = 2,
    auto_crop: bool = True,
    lesion_views: bool = False,
    lesion_removed: float = 0.0,
) -> LoadedData:
    """Scan and decode every source. ``limit_per_class`` takes a seeded sample per (source, class);
    ``lesion_views`` adds the views cut from lesion images by their masks, ``lesion_removed`` that share of the
    lesion images with their lesion filled in (0: none)."""
    if not roots:
        raise DatasetError("no dataset given (use --data DIR)")
    all_samples: list[Sample] = []
    bad: list[BadFile] = []
    source_labels: dict[str, tuple[str, ...]] = {}
    for root in roots:
        samples, scan_bad = scan_source(root, lesion_views, lesion_removed)
        if limit_per_class:
            samples = _limit(samples, limit_per_class, seed)
        source_labels[samples[0].source] = order_labels({s.label for s in samples})
        all_samples.extend(samples)
        bad.extend(scan_bad)
    if strict and bad:
        raise DatasetError(f"{len(bad)} bad file(s) with --strict, first: {bad[0].path}: {bad[0].reason}")

    def work(sample: Sample) -> np.ndarray | BadFile:
        try:
            return decode_sample(sample, spec, auto_crop)
        except ImageDecodeError as exc:
            return BadFile(str(sample.path), str(exc), exc.code)

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda it, **_: it  # noqa: E731  (stands in for the imported tqdm, under its name)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(work, all_samples), total=len(all_samples), desc="decode", unit="img"))
    kept, arrays = [], []
    for sample, result in zip(all_samples, results):
        if isinstance(result, BadFile):
            if strict:
                raise DatasetError(f"bad image with --strict: {result.path}: {result.reason}")
            log.warning("skipping %s: %s", result.path, result.reason)
            bad.append(result)
        else:
            kept.append(sample)
            arrays.append(result)
    labels = order_labels({s.label for s in kept})
    if not kept:
        raise DatasetError("no readable images in the given dataset(s)")
    if len(labels) < 2:
        raise DatasetError(f"only one class ({labels[0]!r}) in the given dataset(s): a classifier needs two or more")
    return LoadedData(kept, np.stack(arrays), labels, bad, source_labels)


def _limit(samples: list[Sample], per_class: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        pick = rng.choice(len(group), size=min(per_class, len(group)), replace=False)
        out.extend(group[i] for i in sorted(pick))
    return out
