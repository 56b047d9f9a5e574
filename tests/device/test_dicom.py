"""DICOM from a scanner's export: transfer syntaxes, cine frames, files without pixel data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.errors import ImageDecodeError
from device.sources import open_source
from device.sources.dicom import dicom_frames
from tests.dicom_factory import write_dicom


def _cine(levels=(40, 128, 220), shape=(96, 128)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.stack([np.clip(level + rng.normal(0, 12, shape), 0, 255).astype(np.uint8) for level in levels])


@pytest.mark.parametrize("syntax", ["explicit", "rle", "jpeg"])
def test_transfer_syntaxes_decode_to_the_same_pixels(tmp_path: Path, syntax: str) -> None:
    cine = _cine()
    path = write_dicom(tmp_path / f"{syntax}.dcm", cine, syntax)
    frames = list(dicom_frames(path))
    assert [f.index for f in frames] == [0, 1, 2]
    for frame, original in zip(frames, cine):
        tolerance = 6 if syntax == "jpeg" else 0  # JPEG baseline is lossy
        assert np.abs(frame.image.astype(int) - original.astype(int)).mean() <= tolerance


def test_chosen_cine_frame_and_out_of_range(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cine.dcm", _cine())
    (only,) = list(dicom_frames(path, chosen=2))
    assert only.index == 2 and only.image.mean() > 180
    with pytest.raises(ImageDecodeError, match="frame 7 requested, the file has 3"):
        list(dicom_frames(path, chosen=7))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    single = _cine(levels=(40,))
    (frame,) = list(dicom_frames(write_dicom(tmp_path / "m1.dcm", single, photometric="MONOCHROME1")))
    assert frame.image.mean() > 150


def test_dicom_without_pixel_data_and_garbage(tmp_path: Path) -> None:
    nopix = write_dicom(tmp_path / "report.dcm", _cine(levels=(40,)), "nopixels")
    with pytest.raises(ImageDecodeError) as info:
        list(dicom_frames(nopix))
    assert info.value.code == "no_pixel_data" and "report.dcm" in str(info.value)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(ImageDecodeError) as info:
        list(dicom_frames(garbage))
    assert info.value.code == "corrupt_dicom"


def test_folder_source_reads_dicom_beside_images(tmp_path: Path) -> None:
    write_dicom(tmp_path / "a.dcm", _cine())
    write_dicom(tmp_path / "b.dcm", _cine(levels=(10,)), "nopixels")
    with open_source(f"folder:{tmp_path}") as source:
        frames, errors = [], []
        while True:
            try:
                frame = source.read()
            except ImageDecodeError as exc:
                errors.append(exc.code)
                continue
            if frame is None:
                break
            frames.append(frame)
    assert len(frames) == 3 and errors == ["no_pixel_data"]


def test_classify_cine_reports_the_most_suspicious_frame(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cine.dcm", _cine(), "rle")
    proc = subprocess.run(
        [sys.executable, "-m", "device", "classify", "--model", str(tiny_bundle_dir), "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (output,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert output["frames"] == 3 and output["frame"] == 2 and output["label"] == "malignant"
