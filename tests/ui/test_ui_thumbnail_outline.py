"""The thumbnails History, the exam summary and Teach show carry the result's outline, as the card and the hub's
thumbnail do: the stored contour (image pixels) placed on the thumbnail through the stored crop box, in the card's
magenta; none without an outline, for a withheld one, or without a crop box to place it by. Real pixmaps offscreen;
the thumbnail is a plain grey JPEG so any magenta pixel is the outline's."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

pytest.importorskip("PyQt5")

from PyQt5.QtGui import QImage
from PyQt5.QtWidgets import QApplication

from device.lesion_record import LesionRecord
from device.results import ResultRecord
from tests.device.link.test_contract_v2 import v2_record
from tests.device.test_store_lesion import UNCALIBRATED
from ui.exam import thumbnail_pixmap

CROP = (100, 50, 200, 100)  # x, y, w, h in image pixels: the thumbnail shows this region
# a 40 x 20 px box in the crop's middle-left quarter: x 140..180, y 80..100 in image pixels
SQUARE = {**UNCALIBRATED, "box": [140, 80, 40, 20], "contour": [[140, 80], [180, 80], [180, 100], [140, 100]], "area_px": 800.0}


@pytest.fixture(scope="module")
def app() -> QApplication:
    return QApplication.instance() or QApplication(["test"])


def _record(lesion: LesionRecord | None, crop: tuple[int, int, int, int] | None = CROP) -> ResultRecord:
    grey = np.full((CROP[3], CROP[2], 3), 128, np.uint8)  # the crop at full size: 200 x 100
    ok, jpeg = cv2.imencode(".jpg", grey)
    assert ok
    return replace(v2_record("site-a", "dev-1", 1), thumbnail=jpeg.tobytes(), crop=crop, lesion=lesion)


def _magenta(record: ResultRecord, size: int) -> np.ndarray:
    """The thumbnail's pixels that are the outline's colour (red and blue high, green low)."""
    image = thumbnail_pixmap(record, size).toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    buffer = image.constBits()
    buffer.setsize(image.bytesPerLine() * height)
    rgb = np.frombuffer(buffer, np.uint8).reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3)
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return (r > 180) & (b > 150) & (g < 140)


def test_the_outline_is_drawn_where_the_lesion_is(app: QApplication) -> None:
    mask = _magenta(_record(LesionRecord.from_json(SQUARE)), 100)  # 200 x 100 scaled to 100 x 50: half
    assert mask.shape == (50, 100)
    ys, xs = np.nonzero(mask)
    assert len(xs) > 20, "no outline on the thumbnail"
    # the square's edges at half scale: x (140-100)/2 = 20 .. 40, y (80-50)/2 = 15 .. 25; the pen's width around them
    assert 17 <= xs.min() <= 21 and 39 <= xs.max() <= 43, (xs.min(), xs.max())
    assert 12 <= ys.min() <= 16 and 24 <= ys.max() <= 28, (ys.min(), ys.max())
    assert not mask[18:23, 24:36].any(), "the outline is a line, not a filled region"


@pytest.mark.parametrize(
    "lesion, crop",
    [
        (None, CROP),  # no segmentation model
        (LesionRecord(found=False), CROP),  # none found
        (LesionRecord(found=False, withheld="inconclusive"), CROP),
        (LesionRecord.from_json(SQUARE), None),  # no crop box to place it by
    ],
    ids=["no-model", "none-found", "withheld", "no-crop"],
)
def test_no_outline_to_draw(app: QApplication, lesion: LesionRecord | None, crop: tuple[int, int, int, int] | None) -> None:
    assert not _magenta(_record(lesion, crop), 100).any()
