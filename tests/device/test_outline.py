"""The segmentation model's mask comes back to the right place in the image: through the letterbox and the crop
(whole frame, an offset crop, a tall crop); with the clinician's ROI, the lesion under it, whole — an ROI inside a
lesion outlines the lesion, not the ROI's part of it, and the region under the ROI wins over a larger one elsewhere;
the outline rule's minimum region;
mm only with a known spacing; the classifier's pixels reused when both models take the same input; and the
descriptors shown follow the display rule of docs/lesion-outline.md (checked against the doc's own table)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.crop import Box
from device.model.bundle import load_bundle
from device.model.preprocess import prepare
from device.outline import DESCRIPTORS, DISPLAY_MIN_KAPPA, SHOWN_DESCRIPTORS, Segmenter, keep_region_under_roi
from device.spacing import PixelSpacing
from tests.conftest import REPO
from tests.device.tiny_segmentation import lesion_frame


@pytest.fixture(scope="module")
def segmenter(seg_bundle_dir: Path) -> Segmenter:
    return Segmenter(load_bundle(seg_bundle_dir), threads=1)


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


def _doc_kappas() -> dict[str, float]:
    text = (REPO / "docs" / "lesion-outline.md").read_text(encoding="utf-8")
    found = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^\| (shape|margin|orientation) \([^)]*\) \| [^|]+\| (\d\.\d+) ", text, re.MULTILINE)
    }
    assert {"shape", "margin"} <= set(found), found  # the doc's agreement table
    assert f"at least {DISPLAY_MIN_KAPPA:.2f}" in text  # the doc's display level
    return found


def test_the_descriptors_shown_are_those_the_doc_validates() -> None:
    kappas = _doc_kappas()
    assert SHOWN_DESCRIPTORS == {name for name in DESCRIPTORS if kappas.get(name, -1.0) >= DISPLAY_MIN_KAPPA}
    assert "orientation" not in kappas and "orientation" not in SHOWN_DESCRIPTORS  # no reference reading: not validated


def test_the_json_marks_every_descriptor(segmenter: Segmenter) -> None:
    _, result = _outline(segmenter, lesion_frame(300, 500, (250, 150), (70, 40)))
    js = result.to_json()
    assert {js[name]["shown"] for name in DESCRIPTORS} == {True, False}
    assert {name for name in DESCRIPTORS if js[name]["shown"]} == SHOWN_DESCRIPTORS
    assert js["orientation"]["value"] == "parallel" and js["shape"]["value"] in ("oval", "round")
