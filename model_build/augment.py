"""Ultrasound-appropriate augmentation on letterboxed grey ``H x W`` uint8 images.

Geometric: horizontal flip (the transducer is always at the top, so no vertical flip), small
rotation / scale / translation. Photometric: gain (brightness/contrast), gamma, speckle-like
multiplicative noise, blur. Shortcut control: synthetic sonographer marks (calipers, dashed
measurement lines, text) drawn on images of every class, so marks carry no class information.

Scanner style (``style_p``, off by default): what differs between vendors' images of the same tissue rather than
the tissue itself — the grey map (dynamic range / post-processing curve), the depth gain (TGC), the resolution
and speckle grain (probe frequency, image size), and speckle reduction or edge enhancement. Each is drawn at random
so that no one scanner's look is what a class looks like. Black stays black (letterbox bands, a sector's surround).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    max_rotate_deg: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.12)
    max_translate: float = 0.06
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness: float = 20.0
    gamma_range: tuple[float, float] = (0.7, 1.4)
    speckle_p: float = 0.35
    speckle_sigma: float = 0.18
    blur_p: float = 0.2
    marks_p: float = 0.35
    style_p: float = 0.0  # probability of a random scanner style (grey map, depth gain, resolution, speckle filter)


def augment(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """One random augmentation of a grey uint8 image (same shape out)."""
    img = image
    if rng.random() < cfg.flip:
        img = img[:, ::-1]
    img = _affine(img, rng, cfg)
    x: np.ndarray = img.astype(np.float32)
    if cfg.style_p > 0 and rng.random() < cfg.style_p:  # no draw when off: default builds keep their random stream
        x = scanner_style(x, rng)
    if rng.random() < cfg.speckle_p:
        x = _speckle(x, rng, cfg.speckle_sigma)
    contrast = rng.uniform(*cfg.contrast_range)
    x = (x - 128.0) * contrast + 128.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    x = np.clip(x, 0, 255)
    gamma = rng.uniform(*cfg.gamma_range)
    x = 255.0 * (x / 255.0) ** gamma
    if rng.random() < cfg.blur_p:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.3))
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < cfg.marks_p:
        out = draw_marks(out, rng)
    return out


def _affine(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    h, w = img.shape
    angle = rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg)
    scale = rng.uniform(*cfg.scale_range)
    matrix: np.ndarray = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)  # float64 2 x 3
    matrix[:, 2] += rng.uniform(-cfg.max_translate, cfg.max_translate, size=2) * (w, h)
    return cv2.warpAffine(np.ascontiguousarray(img), matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)


def _speckle(x: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    white = rng.normal(0.0, 1.0, size=x.shape).astype(np.float32)
    noise = np.asarray(cv2.GaussianBlur(white, (0, 0), rng.uniform(0.6, 1.5)), dtype=np.float32)  # float32 in, float32 out
    noise /= max(float(noise.std()), 1e-6)
    return x * (1.0 + rng.uniform(0.3, 1.0) * sigma * noise)


def scanner_style(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random scanner look on a float32 grey image (0..255): each of the four parts with probability 1/2."""
    if rng.random() < 0.5:
        x = grey_map(x, rng)
    if rng.random() < 0.5:
        x = depth_gain(x, rng)
    if rng.random() < 0.5:
        x = resample(x, rng)
    if rng.random() < 0.5:
        x = smooth_speckle(x, rng) if rng.random() < 0.5 else enhance_edges(x, rng)
    return np.clip(x, 0.0, 255.0)


def grey_map(x: np.ndarray, rng: np.random.Generator, knots: int = 5) -> np.ndarray:
    """A random monotone grey map through (0, 0) and (255, 255): a vendor's post-processing curve."""
    steps = rng.dirichlet(np.full(knots, 2.0))
    xs = np.linspace(0.0, 255.0, knots + 1)
    ys = np.concatenate([[0.0], np.cumsum(steps) * 255.0])
    return np.interp(x, xs, ys).astype(np.float32)


def depth_gain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random gain down the image (time-gain compensation): a slope and a bump, in log gain."""
    depth = np.linspace(0.0, 1.0, x.shape[0], dtype=np.float32)[:, None]
    log_gain = rng.uniform(-0.5, 0.5) * (depth - 0.5) + rng.uniform(-0.3, 0.3) * np.sin(np.pi * depth)
    return (x * np.exp(log_gain)).astype(np.float32)


def resample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down to 40-85 % of the size and back: a coarser speckle grain and less detail (lower probe frequency)."""
    h, w = x.shape
    factor = rng.uniform(0.4, 0.85)
    small = cv2.resize(x, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def smooth_speckle(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Edge-preserving smoothing, like a scanner's speckle reduction."""
    return np.asarray(cv2.bilateralFilter(x, 5, rng.uniform(15.0, 50.0), rng.uniform(2.0, 5.0)), dtype=np.float32)


def enhance_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unsharp masking, like a scanner's edge enhancement."""
    blurred = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.8, 2.0))
    return (x + rng.uniform(0.3, 1.0) * (x - blurred)).astype(np.float32)


def draw_marks(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw caliper crosses, a dashed measurement line and/or a text label, like a sonographer would."""
    out = np.ascontiguousarray(img).copy()
    h, w = out.shape
    colour = int(rng.integers(170, 256))
    kinds = rng.choice(3, size=int(rng.integers(1, 4)), replace=True)
    for kind in kinds:
        if kind == 0:  # a pair of calipers (+ or x), often around a lesion near the centre
            for _ in range(2):
                cx, cy = int(rng.integers(w // 6, 5 * w // 6)), int(rng.integers(h // 6, 5 * h // 6))
                r = int(rng.integers(2, 5))
                if rng.random() < 0.5:
                    cv2.line(out, (cx - r, cy), (cx + r, cy), colour, 1)
                    cv2.line(out, (cx, cy - r), (cx, cy + r), colour, 1)
                else:
                    cv2.line(out, (cx - r, cy - r), (cx + r, cy + r), colour, 1)
                    cv2.line(out, (cx - r, cy + r), (cx + r, cy - r), colour, 1)
        elif kind == 1:  # dashed measurement line
            x0, y0 = rng.integers(w // 6, 5 * w // 6, size=2)
            x1, y1 = rng.integers(w // 6, 5 * w // 6, size=2)
            n = 12
            for t in range(0, n, 2):
                a = (int(x0 + (x1 - x0) * t / n), int(y0 + (y1 - y0) * t / n))
                b = (int(x0 + (x1 - x0) * (t + 1) / n), int(y0 + (y1 - y0) * (t + 1) / n))
                cv2.line(out, a, b, colour, 1)
        else:  # text annotation, usually near an edge
            text = "".join(rng.choice(list("ABCDEFGHLMRSTX0123456789 .:"), size=int(rng.integers(3, 10))))
            x = int(rng.integers(2, w // 2))
            top = rng.integers(12, h // 5) if h // 5 > 12 else rng.integers(1, max(2, h // 5))  # small images too
            y = int(rng.choice([top, rng.integers(4 * h // 5, h - 2)]))
            cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.3, 0.5), colour, 1, cv2.LINE_AA)
    return out
