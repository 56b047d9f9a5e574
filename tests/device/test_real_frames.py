"""Crop and quality gate on real breast-ultrasound images (skipped without ../shared/datasets)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.crop import detect_scan_region
from device.imageio import decode_image_file, to_grey
from device.quality import QualityLimits, image_problems
from device.sources.files import list_inputs


def _sample(datasets: Path, per_folder: int = 60) -> list[Path]:
    folders = [datasets / "bus-bra" / "images", *(datasets / "busi" / c for c in ("normal", "benign", "malignant"))]
    files: list[Path] = []
    for folder in folders:
        found = list_inputs(folder)
        files += found[:: max(1, len(found) // per_folder)][:per_folder]
    return files


def test_real_images_pass_the_image_checks(datasets: Path) -> None:
    flagged = {}
    for path in _sample(datasets):
        image = decode_image_file(path)
        problems = image_problems(detect_scan_region(image).apply(image), QualityLimits())
        if problems:
            flagged[path.name] = problems
    assert not flagged, flagged


def test_real_image_on_a_scanner_screen_is_found(datasets: Path) -> None:
    """A real scan pasted onto a black screen with text and a depth ruler, as a capture card delivers it."""
    errors = []
    for index, path in enumerate(_sample(datasets, per_folder=8)):
        scan = to_grey(decode_image_file(path))
        scale = (400 + 20 * (index % 8)) / scan.shape[0]  # the scan fills 55-75 % of the screen's height
        scan = cv2.resize(scan, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        h, w = scan.shape
        screen = np.zeros((720, max(1280, w + 300)), dtype=np.uint8)
        x, y = 180 + index % 7 * 10, 100
        screen[y : y + h, x : x + w] = scan
        cv2.putText(screen, "PATIENT 0000  BREAST L  14MHz", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 230, 2)
        for tick in range(0, h, 20):
            cv2.line(screen, (x + w + 10, y + tick), (x + w + 22, y + tick), 230, 1)
        box = detect_scan_region(screen)
        overlap_w = min(box.x + box.width, x + w) - max(box.x, x)
        overlap_h = min(box.y + box.height, y + h) - max(box.y, y)
        iou = max(0, overlap_w) * max(0, overlap_h) / (box.width * box.height + w * h - max(0, overlap_w) * max(0, overlap_h))
        if iou < 0.85:
            errors.append((path.name, box.as_tuple(), (x, y, w, h), round(iou, 3)))
    assert not errors, errors
