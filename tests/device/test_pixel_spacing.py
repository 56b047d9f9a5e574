"""Pixel spacing (device/spacing.py) comes only from where it is known: a DICOM file's ultrasound regions
(``PhysicalDeltaX/Y`` in cm) or its ``PixelSpacing``, or a live source calibrated in the config. A PNG, or a DICOM
file without either, has none; an implausible header figure is dropped with a warning naming the file (the frame
is still analysed); an implausible config figure is refused at start-up naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.config import parse_config
from device.errors import ConfigError
from device.sources.files import frames_from_file
from device.sources.spec import open_source
from device.spacing import PixelSpacing
from tests.dicom_factory import write_dicom


def _dicom(tmp_path: Path, name: str, **attributes) -> Path:
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = write_dicom(tmp_path / name, np.full((1, 64, 80), 90, np.uint8))
    ds = pydicom.dcmread(path)
    regions = attributes.pop("regions", None)
    if regions is not None:
        items = []
        for units, dx, dy in regions:
            item = Dataset()
            item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = units
            item.PhysicalDeltaX, item.PhysicalDeltaY = dx, dy
            items.append(item)
        ds.SequenceOfUltrasoundRegions = Sequence(items)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def _spacing(path: Path) -> PixelSpacing | None:
    frames = list(frames_from_file(path, None))
    assert len(frames) == 1
    return frames[0].spacing


def test_ultrasound_region_in_cm_wins_over_pixel_spacing(tmp_path: Path) -> None:
    path = _dicom(tmp_path, "us.dcm", regions=[(0, 1.0, 1.0), (3, 0.0075, 0.008)], PixelSpacing=[0.5, 0.5])
    spacing = _spacing(path)
    assert spacing is not None and spacing.origin == "dicom:SequenceOfUltrasoundRegions"
    assert spacing.x_mm == pytest.approx(0.075) and spacing.y_mm == pytest.approx(0.08)


def test_pixel_spacing_is_row_then_column(tmp_path: Path) -> None:
    spacing = _spacing(_dicom(tmp_path, "ps.dcm", PixelSpacing=[0.2, 0.1]))
    assert spacing == PixelSpacing(0.1, 0.2, "dicom:PixelSpacing")


def test_no_spacing_in_the_header_or_a_png_is_none(tmp_path: Path) -> None:
    import cv2

    assert _spacing(_dicom(tmp_path, "bare.dcm")) is None
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.full((64, 80), 90, np.uint8))
    assert _spacing(png) is None


def test_implausible_header_spacing_is_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    path = _dicom(tmp_path, "zero.dcm", PixelSpacing=[0.0, 0.0])
    assert _spacing(path) is None
    assert str(path) in caplog.text and "pixel spacing unusable" in caplog.text


def test_config_calibrates_live_sources_only(tmp_path: Path) -> None:
    config = parse_config({"source": {"spec": "v4l2:/dev/video0", "pixel_spacing_mm": [0.08, 0.09]}}, "device.toml")
    live = open_source("v4l2:/dev/video0", config.source)
    assert live.spacing == PixelSpacing(0.08, 0.09, "config:[source] pixel_spacing_mm")
    (tmp_path / "frames").mkdir()
    assert open_source(f"folder:{tmp_path / 'frames'}", config.source).spacing is None


@pytest.mark.parametrize("value", [[0.0, 0.1], [0.1, 9.0], [0.1], "fine"])
def test_implausible_config_spacing_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match="source.pixel_spacing_mm"):
        parse_config({"source": {"pixel_spacing_mm": value}}, "device.toml")
