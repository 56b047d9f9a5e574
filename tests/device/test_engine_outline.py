"""The classifier outlines the lesion when its bundle has a segmentation model: a conclusive frame carries
``lesion`` (found, in image pixels; with an ROI, the whole lesion under it — the segmentation model sees the scan
region, not the ROI's crop, which a large mass fills; mm with the frame's spacing), an inconclusive one a withheld
lesion (no outline), a bundle without a segmentation model ``lesion = None``; ``Analyzer.classify`` passes the
frame's pixel spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.analysis import Analyzer
from device.config import parse_config
from device.crop import Box
from device.engine import Classifier
from device.model.bundle import load_bundle
from device.outline import Withheld
from device.sources.base import Frame
from device.spacing import PixelSpacing
from device.store import ResultStore
from tests.device.tiny_segmentation import lesion_frame


@pytest.fixture(scope="module")
def seg_classifier(seg_bundle_dir: Path) -> Classifier:
    return Classifier(load_bundle(seg_bundle_dir), threads=1)


def test_a_conclusive_frame_carries_its_outline(seg_classifier: Classifier) -> None:
    frame = lesion_frame(300, 500, (320, 120), (60, 30))
    result = seg_classifier.classify(frame, auto_crop=False)
    assert not result.inconclusive and result.lesion is not None and result.lesion.found
    x, y, w, h = result.lesion.outline.box
    assert abs(x - 260) <= 12 and abs(y - 90) <= 12 and abs(w - 121) <= 20 and abs(h - 61) <= 20
    assert result.lesion.outline.width_mm is None  # no spacing: sizes in pixels only


def test_the_lesion_under_the_roi_is_outlined_whole_and_sized_with_the_spacing(seg_classifier: Classifier) -> None:
    frame = lesion_frame(400, 640, (300, 200), (80, 50))  # x 220..380: it straddles the ROI's left edge
    roi = Box(300, 100, 250, 250)
    result = seg_classifier.classify(frame, auto_crop=False, roi=roi, spacing=PixelSpacing(0.1, 0.1))
    assert result.crop == roi and result.lesion.found  # the classifier analysed the ROI
    x, y, w, h = result.lesion.outline.box
    assert all(abs(a - b) <= 16 for a, b in zip((x, y, w, h), (220, 150, 161, 101))), (x, y, w, h)
    assert result.lesion.outline.width_mm == pytest.approx(w * 0.1)


def test_an_roi_inside_a_large_lesion_outlines_the_lesion(seg_classifier: Classifier) -> None:
    frame = lesion_frame(400, 640, (320, 200), (150, 100))
    roi = Box(150, 160, 80, 80)  # almost all lesion (x 170..470): a little background, or the quality gate objects
    result = seg_classifier.classify(frame, auto_crop=False, roi=roi)
    assert result.crop == roi and result.lesion.found
    x, y, w, h = result.lesion.outline.box
    assert all(abs(a - b) <= 16 for a, b in zip((x, y, w, h), (170, 100, 301, 201))), (x, y, w, h)


def test_an_inconclusive_frame_gets_no_outline(seg_classifier: Classifier) -> None:
    frame = np.repeat(lesion_frame(300, 400, (200, 150), (60, 40))[:, :, None], 3, axis=2)
    frame[20:120, 20:160] = (200, 30, 30)  # a Doppler box: the colour check objects
    result = seg_classifier.classify(frame, auto_crop=False)
    assert result.inconclusive and result.lesion is not None
    assert not result.lesion.found and result.lesion.withheld is Withheld.INCONCLUSIVE
    assert result.lesion.to_json()["withheld"] == "inconclusive" and result.lesion.to_json()["contour"] is None


def test_a_bundle_without_segmentation_gives_no_lesion(tiny_bundle) -> None:
    classifier = Classifier(tiny_bundle, threads=1)
    assert classifier.segmenter is None
    assert classifier.classify(lesion_frame(300, 500, (320, 120), (60, 30)), auto_crop=False).lesion is None


def test_the_analyzer_passes_the_frames_spacing(seg_bundle_dir: Path, tmp_path: Path) -> None:
    config = parse_config({"device": {"data_dir": str(tmp_path / "data")}, "model": {"path": str(seg_bundle_dir)}, "source": {"auto_crop": False}})
    frame = Frame(lesion_frame(300, 500, (250, 150), (70, 40)), "scan.dcm", 0, spacing=PixelSpacing(0.2, 0.25))
    with ResultStore(config.store_path) as store:
        result = Analyzer(config, Classifier(load_bundle(seg_bundle_dir), threads=1), store).classify(frame)
    o = result.lesion.outline
    assert result.lesion.spacing == frame.spacing and o.depth_mm == pytest.approx(o.box[3] * 0.25)


def test_no_outline_when_not_asked_for(seg_classifier: Classifier) -> None:
    """The live score (``outline=False``): shown nowhere, so the segmentation model is not run on every live frame."""
    frame = lesion_frame(300, 500, (320, 120), (60, 30))
    calls: list[object] = []
    segmenter = seg_classifier.segmenter
    assert segmenter is not None
    original = segmenter.outline
    segmenter.outline = lambda *a, **k: calls.append(a) or original(*a, **k)  # type: ignore[method-assign]
    try:
        live = seg_classifier.classify(frame, auto_crop=False, outline=False)
        stored = seg_classifier.classify(frame, auto_crop=False)
    finally:
        del segmenter.outline
    assert live.lesion is None and live.probabilities == stored.probabilities
    assert stored.lesion is not None and stored.lesion.found and len(calls) == 1
