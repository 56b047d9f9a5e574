"""The segmentation model's mask comes back to the right place in the image: through the letterbox and the crop
(whole frame, an offset crop, a tall crop); with the clinician's ROI, the lesion under it, whole — an ROI inside a
lesion outlines the lesion, not the ROI's part of it, and the region under the ROI wins over a larger one elsewhere;
the outline rule's minimum region;
mm only with a known spacing; the classifier's pixels reused when both models take the same input; and the
descriptors shown are the bundle's display rule (none without one), at the level docs/lesion-outline.md documents."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.crop import Box
from device.model.bundle import DESCRIPTOR_NAMES as DESCRIPTORS
from device.model.bundle import SegmentationSpec, load_bundle
from device.model.preprocess import prepare
from device.outline import Segmenter, keep_region_under_roi
from device.spacing import PixelSpacing
from model_build.outline_descriptors import DISPLAY_MIN_KAPPA
from tests.bundle_copies import copy_bundle, rewrite_manifest
from tests.conftest import REPO, TRAINED_SEGMENTATION
from tests.device.tiny_segmentation import lesion_frame


@pytest.fixture(scope="module")
def segmenter(seg_bundle_dir: Path) -> Segmenter:
    return Segmenter.from_bundle(load_bundle(seg_bundle_dir), threads=1)


def _truth(shape: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
    return mask


def _drawn(shape: tuple[int, int], contour) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.asarray(contour, np.int32).reshape(-1, 1, 2)], 1)
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def _outline(segmenter: Segmenter, frame: np.ndarray, *, crop: Box | None = None, roi: Box | None = None, **kwargs):
    """``crop``: the region segmented (the whole frame by default; the engine's is the scan region)."""
    prepared = prepare(frame, segmenter.spec.input, auto_crop=False, roi=crop)
    return prepared, segmenter.outline(prepared, frame.shape[:2], roi=roi, **kwargs)


CASES = [  # frame (h, w), lesion centre (x, y), semi-axes, crop
    ((300, 500), (320, 120), (60, 30), None),  # wide frame: letterbox bars above and below
    ((480, 260), (90, 330), (40, 55), None),  # tall frame: bars left and right
    ((400, 640), (450, 260), (50, 35), Box(300, 150, 260, 180)),  # an offset ROI: the crop moves the outline
]


@pytest.mark.parametrize(("shape", "centre", "axes", "crop"), CASES)
def test_the_outline_lands_on_the_lesion_through_crop_and_letterbox(segmenter: Segmenter, shape, centre, axes, crop) -> None:
    frame = lesion_frame(*shape, centre, axes)
    prepared, result = _outline(segmenter, frame, crop=crop)
    p = prepared.placement
    assert (p.width, p.height) != (segmenter.spec.input.width, segmenter.spec.input.height)  # there is letterbox padding
    assert result.found and result.withheld is None
    o = result.outline
    truth = _truth(shape, centre, axes)
    tx, ty, tw, th = cv2.boundingRect(truth)
    model_px = max(prepared.crop.width / p.width, prepared.crop.height / p.height)  # one model pixel in image pixels
    assert all(abs(a - b) <= 1.5 * model_px + 1 for a, b in zip(o.box, (tx, ty, tw, th))), (o.box, (tx, ty, tw, th))
    assert _iou(_drawn(shape, o.contour), truth) >= 0.8
    assert 5 <= len(o.contour) <= 64
    assert abs(o.area_px - truth.sum()) / truth.sum() < 0.2


def test_an_roi_inside_a_lesion_outlines_the_whole_lesion(segmenter: Segmenter) -> None:
    """A tap's square, or a box drawn inside a large mass: the mass is outlined, not the ROI's part of it (a size and
    shape cut by a box would be the box's)."""
    shape, centre, axes = (400, 640), (300, 200), (120, 80)
    roi = Box(280, 180, 40, 40)  # well inside the lesion
    _, result = _outline(segmenter, lesion_frame(*shape, centre, axes), roi=roi)
    assert result.found
    assert _iou(_drawn(shape, result.outline.contour), _truth(shape, centre, axes)) >= 0.8
    x, y, w, h = result.outline.box
    assert w > 4 * roi.width and h > 3 * roi.height


def test_the_region_under_the_roi_is_outlined_not_the_largest(segmenter: Segmenter) -> None:
    shape = (400, 640)
    frame = np.maximum(lesion_frame(*shape, (200, 200), (110, 80)), lesion_frame(*shape, (520, 150), (40, 30)))
    _, result = _outline(segmenter, frame, roi=Box(470, 110, 100, 80))  # around the small one
    assert result.found and _iou(_drawn(shape, result.outline.contour), _truth(shape, (520, 150), (40, 30))) >= 0.8
    _, straddled = _outline(segmenter, frame, roi=Box(300, 100, 280, 120))  # on both: the one it holds more of
    assert _iou(_drawn(shape, straddled.outline.contour), _truth(shape, (520, 150), (40, 30))) >= 0.8


def test_an_roi_on_lesion_free_tissue_outlines_nothing(segmenter: Segmenter) -> None:
    _, result = _outline(segmenter, lesion_frame(400, 640, (150, 150), (60, 40)), roi=Box(400, 250, 150, 100))
    assert not result.found and result.withheld is None  # looked for: "no lesion outlined" under the ROI


def test_keep_region_under_roi_keeps_the_whole_region_it_holds_most_of_and_ignores_an_off_frame_roi() -> None:
    mask = np.zeros((100, 200), np.uint8)  # a crop at (50, 20) of a 300 x 400 frame
    mask[10:90, 10:90] = 1  # a large region
    mask[40:60, 150:190] = 1  # a small one
    crop = Box(50, 20, 200, 100)
    kept = mask.copy()
    keep_region_under_roi(kept, crop, Box(50 + 140, 20 + 30, 60, 40), (300, 400))  # holds the small one
    assert kept.sum() == 20 * 40 and kept[40:60, 150:190].all()
    kept = mask.copy()
    keep_region_under_roi(kept, crop, Box(50 + 80, 20 + 30, 100, 40), (300, 400))  # 400 px of the large, 600 of the small
    assert kept.sum() == 20 * 40
    kept = mask.copy()
    keep_region_under_roi(kept, crop, Box(50 + 60, 20 + 20, 10, 10), (300, 400))  # inside the large one: all of it
    assert kept.sum() == 80 * 80 and kept[10:90, 10:90].all()
    kept = mask.copy()
    keep_region_under_roi(kept, crop, Box(50 + 95, 20 + 0, 50, 30), (300, 400))  # on no region: nothing
    assert kept.sum() == 0
    untouched = mask.copy()
    keep_region_under_roi(untouched, crop, Box(5000, 5000, 10, 10), (300, 400))  # ignored by the classifier too
    assert (untouched == mask).all()


def test_a_dark_frame_or_a_speck_is_no_outline(segmenter: Segmenter) -> None:
    _, empty = _outline(segmenter, lesion_frame(300, 400, (200, 150), (1, 1), lesion=50))
    assert not empty.found and empty.to_json()["found"] is False and empty.to_json()["box"] is None
    # 3 x 3 image px in a 400 px frame letterboxed to 48 px: under a model pixel, below mask.min_region_px
    _, speck = _outline(segmenter, lesion_frame(300, 400, (200, 150), (6, 6)))
    assert not speck.found


def test_millimetres_only_with_a_known_spacing(segmenter: Segmenter) -> None:
    frame = lesion_frame(300, 500, (250, 150), (70, 40))
    _, plain = _outline(segmenter, frame)
    assert plain.outline.width_mm is None and plain.to_json()["area_mm2"] is None and plain.to_json()["spacing_mm"] is None
    spacing = PixelSpacing(0.1, 0.2, "dicom:PixelSpacing")
    _, sized = _outline(segmenter, frame, spacing=spacing)
    o, js = sized.outline, sized.to_json()
    assert o.width_mm == pytest.approx(o.box[2] * 0.1) and o.depth_mm == pytest.approx(o.box[3] * 0.2)
    assert js["width_mm"] == pytest.approx(o.box[2] * 0.1, abs=0.01) and js["spacing_mm"] == [0.1, 0.2]
    assert js["area_mm2"] == pytest.approx(o.area_px * 0.02, abs=0.01)


def test_the_classifiers_pixels_are_reused_when_the_inputs_match(segmenter: Segmenter) -> None:
    frame = lesion_frame(300, 500, (320, 120), (60, 30))
    prepared = prepare(frame, segmenter.spec.input, auto_crop=False)
    reused = segmenter.outline(prepared, frame.shape[:2], same_input=True)
    again = segmenter.outline(prepared, frame.shape[:2], same_input=False)
    assert reused.outline == again.outline


def test_the_display_level_is_the_documented_one_and_the_trained_model_carries_its_measurement() -> None:
    text = (REPO / "docs" / "lesion-outline.md").read_text(encoding="utf-8")
    assert f"at least {DISPLAY_MIN_KAPPA:.2f}" in text  # the doc's display level is the build's
    trained = SegmentationSpec.from_dict(json.loads((TRAINED_SEGMENTATION / "segmentation.json").read_text()))
    assert trained.descriptors is not None and trained.descriptors.min_kappa == DISPLAY_MIN_KAPPA
    assert trained.shown_descriptors() == frozenset()  # shape 0.31, margin 0.11 on its own outlines: below the level
    assert "orientation" not in trained.descriptors.kappa  # no reference reading: never validated


def test_the_json_marks_every_descriptor_by_the_bundles_display_rule(segmenter: Segmenter) -> None:
    _, result = _outline(segmenter, lesion_frame(300, 500, (250, 150), (70, 40)))
    js = result.to_json()
    assert {js[name]["shown"] for name in DESCRIPTORS} == {True, False}
    assert {name for name in DESCRIPTORS if js[name]["shown"]} == segmenter.spec.shown_descriptors() == {"shape"}


def test_a_bundle_without_the_display_rule_shows_no_descriptor(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: (d["segmentation"].pop("descriptors"), d.update(format_version=5)))
    _, result = _outline(Segmenter.from_bundle(load_bundle(bundle), threads=1), lesion_frame(300, 500, (250, 150), (70, 40)))
    js = result.to_json()
    assert result.found and not any(js[name]["shown"] for name in DESCRIPTORS)
    assert js["orientation"]["value"] == "parallel" and js["shape"]["value"] in ("oval", "round")
