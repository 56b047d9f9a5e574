"""Site case folders for the site-adapt tests, made from the shared datasets.

The site is BrEaST-Lesions-USG (Poland, several scanners): a hospital the v1 bundle (models/sonopi-lite0-v1) never saw (it was
trained on BUSI and BUS-BRA only). It has 4 normal scans; its lesion masks give one lesion-free view per
lesion image (model_build.lesion_views) — breast tissue without a lesion, imaged by that hospital's scanners,
which is what a clinic's normal scans are. Its patients are split in two halves by a seeded draw: the
"site" half's normal images make the CASES folder ``device site-adapt`` takes; the other half's normal views
and lesion images are what the site bundle is scored on, as the hidden hospital's other half will be.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from device.imageio import decode_image_file
from model_build.data import Sample, scan_source
from model_build.lesion_views import LESION_FREE

SITE_SOURCE = "breast-lesions-usg"


def site_samples(datasets: Path) -> list[Sample]:
    """BrEaST-Lesions-USG's full images and lesion-free views (normal)."""
    samples, _ = scan_source(datasets / SITE_SOURCE, lesion_views=True)
    return [s for s in samples if s.view in ("full", LESION_FREE)]


def split_patients(samples: Sequence[Sample], seed: int = 0) -> tuple[set[str], set[str]]:
    """Two halves of the patients (seeded)."""
    patients = sorted({s.patient_id or s.path.name for s in samples})
    order = np.random.default_rng(seed).permutation(len(patients))
    half = len(patients) // 2
    return {patients[i] for i in order[:half]}, {patients[i] for i in order[half:]}


def write_cases(samples: Sequence[Sample], folder: Path, label: str | None = None) -> Path:
    """A CASES folder: ``labels.csv`` (filename,label,patient_id) and each sample's pixels (its view cut out) as PNG.
    ``label`` overrides the samples' labels (e.g. lesion images wrongly labelled normal)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in samples:
        frame = decode_image_file(sample.path)
        if sample.region is not None:
            x0, y0, x1, y1 = sample.region
            frame = frame[y0:y1, x0:x1]
        name = f"{sample.path.stem}-{sample.view}.png"
        Image.fromarray(np.ascontiguousarray(frame)).save(images / name)
        rows.append((name, label or sample.label, sample.patient_id or sample.path.stem))
    with open(folder / "labels.csv", "a" if (folder / "labels.csv").exists() else "w", newline="") as fh:
        writer = csv.writer(fh)
        if fh.tell() == 0:
            writer.writerow(["filename", "label", "patient_id"])
        writer.writerows(rows)
    return folder
