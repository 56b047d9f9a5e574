"""Synthetic scanner screens for demos and tests when no real ultrasound images are at hand.

Each frame imitates a capture of a scanner's display: black screen, a banner of text, a depth
ruler, and a speckled B-mode sector with a dark, roughly elliptical lesion. They are NOT
ultrasound images: the model's output on them means nothing. ``make run`` uses real images from
``../shared/datasets`` when present and falls back to these.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def scanner_screen(seed: int, size: tuple[int, int] = (1280, 720)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A synthetic screen capture (RGB) and the box (x, y, w, h) of its ultrasound image."""
    rng = np.random.default_rng(seed)
    width, height = size
    screen = np.zeros((height, width, 3), dtype=np.uint8)
    box = (int(width * 0.22), int(height * 0.14), int(width * 0.52), int(height * 0.78))
    x, y, w, h = box
    speckle = rng.rayleigh(scale=38.0 + 10 * rng.random(), size=(h, w))
    depth_gain = np.linspace(1.1, 0.6, h)[:, None]
    image: np.ndarray = speckle * depth_gain
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h * (0.35 + 0.3 * rng.random()), w * (0.3 + 0.4 * rng.random())
    ry, rx = h * (0.06 + 0.08 * rng.random()), w * (0.08 + 0.1 * rng.random())
    lesion = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    image[lesion] *= 0.25
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0)
    screen[y : y + h, x : x + w] = image[:, :, None]
    white = (230, 230, 230)
    cv2.putText(screen, "DEMO SCANNER  Breast L  12L-RS", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, white, 2)
    cv2.putText(screen, "MI 1.0  TIs 0.4  Gain 50  DR 66", (20, height - 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, white, 1)
    for tick in range(0, h, max(10, h // 20)):  # depth ruler right of the image
        cv2.line(screen, (x + w + 8, y + tick), (x + w + 18 + (8 if tick % (h // 4 or 1) == 0 else 0), y + tick), white, 1)
    return screen, box


def write_demo_frames(out: Path, count: int = 12) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        screen, _ = scanner_screen(index)
        path = out / f"demo-{index:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(screen, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
