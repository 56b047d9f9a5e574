"""Outline, size and descriptors (device/lesion_shape.py) on synthetic shapes with known answers: a circle is
round and circumscribed, a wide ellipse oval and parallel, a tall one not parallel, a spiculated star irregular and
not circumscribed; millimetres only with a known pixel spacing (and exactly width x spacing); the contour is at
most 64 points; an empty mask outlines nothing. On BrEaST-Lesions-USG (skipped without the datasets) the shipped
thresholds are the ones ``model_build descriptors`` chooses on its half A, and the CLI prints the measured table."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.lesion_shape import MAX_CONTOUR_POINTS, Margin, Orientation, Shape, ShapeRules, describe
from device.spacing import PixelSpacing
from model_build.__main__ import main


def ellipse(w: int, h: int, size: int = 400) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, size // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    return mask


def star(points: int = 12, outer: int = 150, inner: int = 80, size: int = 400) -> np.ndarray:
    angles = np.linspace(0, 2 * math.pi, 2 * points, endpoint=False)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    poly = np.stack([size / 2 + radii * np.cos(angles), size / 2 + radii * np.sin(angles)], 1).astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [poly], 255)
    return mask


def test_circle_is_round_circumscribed() -> None:
    out = describe(ellipse(200, 200))
    assert out is not None and out.shape is Shape.ROUND and out.margin is Margin.CIRCUMSCRIBED


def test_wide_ellipse_is_oval_and_parallel_tall_one_not_parallel() -> None:
    wide, tall = describe(ellipse(300, 150)), describe(ellipse(150, 300))
    assert wide is not None and tall is not None
    assert wide.shape is Shape.OVAL and wide.orientation is Orientation.PARALLEL and wide.margin is Margin.CIRCUMSCRIBED
    assert tall.orientation is Orientation.NOT_PARALLEL


def test_spiculated_star_is_irregular_not_circumscribed() -> None:
    out = describe(star())
    assert out is not None and out.shape is Shape.IRREGULAR and out.margin is Margin.NOT_CIRCUMSCRIBED


def test_millimetres_only_with_a_known_spacing() -> None:
    mask = ellipse(300, 150)
    bare = describe(mask)
    assert bare is not None and not bare.calibrated and bare.width_mm is None and bare.area_mm2 is None
    spaced = describe(mask, PixelSpacing(0.1, 0.2))
    assert spaced is not None and spaced.calibrated
    assert spaced.width_mm == pytest.approx(spaced.features.width_px * 0.1)
    assert spaced.depth_mm == pytest.approx(spaced.features.depth_px * 0.2)
    assert spaced.area_mm2 == pytest.approx(spaced.area_px * 0.02)
    # wider than deep in pixels, deeper in millimetres (30 x 45 mm): the orientation follows the physical extents
    physical = describe(mask, PixelSpacing(0.1, 0.3))
    assert bare.orientation is Orientation.PARALLEL and physical is not None and physical.orientation is Orientation.NOT_PARALLEL
    with pytest.raises(ValueError, match="pixel spacing x_mm"):
        PixelSpacing(0.0, 0.1)
    with pytest.raises(ValueError, match="pixel spacing y_mm"):
        PixelSpacing(0.1, float("nan"))


def test_contour_is_simplified_and_inside_the_image() -> None:
    out = describe(star(points=40))
    assert out is not None and 3 <= len(out.contour) <= MAX_CONTOUR_POINTS
    assert all(0 <= x < 400 and 0 <= y < 400 for x, y in out.contour)


def test_empty_or_tiny_mask_outlines_nothing() -> None:
    assert describe(np.zeros((100, 100), np.uint8)) is None
    speck = np.zeros((100, 100), np.uint8)
    speck[50:52, 50:52] = 255
    assert describe(speck) is None


def test_shipped_thresholds_are_the_chosen_ones_and_cli_reports(datasets: Path, capsys) -> None:
    from model_build.descriptors import choose_rules, read_lesions

    root = datasets / "breast-lesions-usg"
    lesions = read_lesions(root)
    rng = np.random.default_rng(0)
    patients = sorted({x.patient for x in lesions})
    half_a = set(rng.permutation(patients)[: len(patients) // 2])
    assert choose_rules([x for x in lesions if x.patient in half_a]) == ShapeRules()
    assert main(["descriptors", "--data", str(root), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "| shape (oval / round / irregular) |" in out and "| margin (circumscribed / not) |" in out
