"""A lesion's outline, size and shape descriptors, from its mask (no model here: the outline may come from a
segmentation model or a reference mask; ``model_build descriptors`` measures the rules against a radiologist).

* size: the outline's width (along the image's x axis) x depth (along y) and area — in millimetres only when the
  pixel spacing is known (DICOM ``PixelSpacing`` / ultrasound regions, or a calibrated capture source); otherwise
  in pixels and marked uncalibrated. Never a made-up mm figure.
* orientation (BI-RADS): *parallel* when the lesion is wider than it is deep (its long axis along the skin),
  *not parallel* otherwise — from the outline's extents in millimetres when known, else in pixels.
* shape: *round* / *oval* / *irregular*, from the outline's solidity (area over its convex hull's) and the
  fitted ellipse's axis ratio; margin: *circumscribed* / *not circumscribed*, from how far the outline wanders
  from its fitted ellipse. Thresholds: :class:`ShapeRules` (chosen and validated in docs/model.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from device.spacing import PixelSpacing

MAX_CONTOUR_POINTS = 64
MIN_AREA_PX = 16  # fewer pixels is no outline


class Orientation(StrEnum):
    PARALLEL = "parallel"
    NOT_PARALLEL = "not_parallel"


class Shape(StrEnum):
    OVAL = "oval"
    ROUND = "round"
    IRREGULAR = "irregular"


class Margin(StrEnum):
    CIRCUMSCRIBED = "circumscribed"
    NOT_CIRCUMSCRIBED = "not_circumscribed"


@dataclass(frozen=True)
class ShapeRules:
    """Chosen on half of BrEaST-Lesions-USG's patients by ``python -m model_build descriptors`` (docs/model.md)."""

    irregular_below_solidity: float = 0.93
    round_above_axis_ratio: float = 0.75
    circumscribed_below_roughness: float = 0.075


@dataclass(frozen=True)
class OutlineFeatures:
    area_px: float
    width_px: int
    depth_px: int
    solidity: float  # area / convex hull area, 1 for a convex outline
    axis_ratio: float  # fitted ellipse minor / major, 1 for a circle
    roughness: float  # mean distance of the outline from its fitted ellipse, relative to the ellipse's mean radius


@dataclass(frozen=True)
class LesionOutline:
    box: tuple[int, int, int, int]  # x, y, width, height in image pixels
    contour: tuple[tuple[int, int], ...]  # simplified polygon, <= MAX_CONTOUR_POINTS points, image pixels
    area_px: float
    width_mm: float | None
    depth_mm: float | None
    area_mm2: float | None
    orientation: Orientation
    shape: Shape
    margin: Margin
    features: OutlineFeatures

    @property
    def calibrated(self) -> bool:
        return self.width_mm is not None


def largest_contour(mask: np.ndarray) -> np.ndarray | None:
    """The outline of the mask's largest connected region (``N x 2`` int points), or None when there is none."""
    mask = np.asarray(mask)
    # findContours reads any non-zero uint8 as inside and leaves its input alone: a uint8 mask needs no copy
    binary = np.ascontiguousarray(mask) if mask.dtype == np.uint8 else (mask > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    best = max(contours, key=cv2.contourArea)
    if cv2.contourArea(best) < MIN_AREA_PX or len(best) < 5:
        return None
    return best.reshape(-1, 2)


def to_image_pixels(contour: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Mask pixel centres ``N x 2`` (x, y) as the image pixels under them, for a mask ``scale`` times smaller."""
    points = (contour.astype(np.float64) + 0.5) * np.array(scale) - 0.5
    placed: np.ndarray = np.rint(points).astype(np.int32)
    return placed


def simplify(contour: np.ndarray, max_points: int = MAX_CONTOUR_POINTS) -> np.ndarray:
    """The outline as a polygon of at most ``max_points`` points (Douglas-Peucker, tolerance grown until it fits)."""
    epsilon = 0.5
    poly = contour.reshape(-1, 1, 2)
    while True:
        approx = cv2.approxPolyDP(poly, epsilon, closed=True)
        if len(approx) <= max_points:
            return approx.reshape(-1, 2)
        epsilon *= 1.5


def outline_features(contour: np.ndarray) -> OutlineFeatures:
    pts = contour.reshape(-1, 1, 2).astype(np.int32)
    area = float(cv2.contourArea(pts))
    hull = float(cv2.contourArea(cv2.convexHull(pts)))
    x, y, w, h = cv2.boundingRect(pts)
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(pts)
    a, b = max(d1, d2) / 2.0, min(d1, d2) / 2.0
    return OutlineFeatures(
        area_px=area,
        width_px=int(w),
        depth_px=int(h),
        solidity=area / hull if hull > 0 else 0.0,
        axis_ratio=b / a if a > 0 else 0.0,
        roughness=_ellipse_roughness(contour.astype(np.float64), cx, cy, d1 / 2.0, d2 / 2.0, math.radians(angle)),
    )


def _ellipse_roughness(points: np.ndarray, cx: float, cy: float, r1: float, r2: float, theta: float) -> float:
    """Mean |radial distance - ellipse radius| at each outline point's angle, over the ellipse's mean radius."""
    if r1 <= 0 or r2 <= 0:
        return 1.0
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)  # into the ellipse's frame (r1 along u)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    radius = np.hypot(u, v)
    phi = np.arctan2(v, u)
    ellipse_radius = (r1 * r2) / np.sqrt((r2 * np.cos(phi)) ** 2 + (r1 * np.sin(phi)) ** 2)
    return float(np.mean(np.abs(radius - ellipse_radius)) / ((r1 + r2) / 2.0))


def describe(
    mask: np.ndarray, spacing: PixelSpacing | None = None, rules: ShapeRules | None = None, scale: tuple[float, float] = (1.0, 1.0)
) -> LesionOutline | None:
    """The lesion's outline and descriptors from a mask the size of the image, or None when it outlines nothing.
    ``scale``: image pixels per mask pixel along x and y, for a mask smaller than the image (the outline is traced
    on the mask, its points put on the image's pixel grid, and everything measured there)."""
    rules = rules or ShapeRules()
    contour = largest_contour(mask)
    if contour is None:
        return None
    if scale != (1.0, 1.0):
        contour = to_image_pixels(contour, scale)
    f = outline_features(contour)
    x, y, w, h = cv2.boundingRect(contour.reshape(-1, 1, 2).astype(np.int32))
    width_mm = depth_mm = area_mm2 = None
    if spacing is not None:
        width_mm, depth_mm = f.width_px * spacing.x_mm, f.depth_px * spacing.y_mm
        area_mm2 = f.area_px * spacing.x_mm * spacing.y_mm
    wide, deep = (width_mm, depth_mm) if width_mm is not None and depth_mm is not None else (f.width_px, f.depth_px)
    return LesionOutline(
        box=(int(x), int(y), int(w), int(h)),
        contour=tuple((int(px), int(py)) for px, py in simplify(contour)),
        area_px=f.area_px,
        width_mm=width_mm,
        depth_mm=depth_mm,
        area_mm2=area_mm2,
        orientation=Orientation.PARALLEL if wide >= deep else Orientation.NOT_PARALLEL,
        shape=classify_shape(f, rules),
        margin=Margin.CIRCUMSCRIBED if f.roughness < rules.circumscribed_below_roughness else Margin.NOT_CIRCUMSCRIBED,
        features=f,
    )


def classify_shape(f: OutlineFeatures, rules: ShapeRules) -> Shape:
    if f.solidity < rules.irregular_below_solidity:
        return Shape.IRREGULAR
    return Shape.ROUND if f.axis_ratio >= rules.round_above_axis_ratio else Shape.OVAL
