"""``python -m device classify --json`` as a real process reports ``lesion``: the outline of a synthetic lesion at a
known position (box, ≤ 64-point contour in image pixels, area), sizes in mm only for a DICOM with a pixel spacing,
descriptors marked shown or not; ``withheld`` for an inconclusive frame; ``null`` with a bundle that has no
segmentation model. The one-line output says the size and whether it is calibrated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.device.tiny_segmentation import lesion_frame
from tests.dicom_factory import write_dicom

CENTRE, AXES = (320, 120), (60, 30)  # the lesion in a 300 x 500 frame: box x 260..380, y 90..150


def _config(tmp_path: Path, bundle: Path) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{bundle}"\nthreads = 1\n[source]\nauto_crop = false\n')
    return path


def _classify(config: Path, *paths: Path, as_json: bool = True) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "device", "classify", "--config", str(config), *(["--json"] if as_json else []), *map(str, paths)]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pydicom

    root = tmp_path_factory.mktemp("outline-inputs")
    grey = lesion_frame(300, 500, CENTRE, AXES)
    cv2.imwrite(str(root / "lesion.png"), grey)
    dcm = write_dicom(root / "lesion.dcm", grey[None])
    ds = pydicom.dcmread(dcm)
    ds.PixelSpacing = [0.25, 0.125]  # row (y) then column (x), mm
    ds.save_as(dcm)
    colour = np.repeat(grey[:, :, None], 3, axis=2)
    colour[20:120, 20:160] = (30, 30, 200)  # a Doppler box (BGR on disk): inconclusive
    cv2.imwrite(str(root / "doppler.png"), colour)
    return {"png": root / "lesion.png", "dcm": dcm, "doppler": root / "doppler.png"}


def test_classify_json_outlines_the_lesion(seg_bundle_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = _classify(_config(tmp_path, seg_bundle_dir), inputs["png"], inputs["dcm"], inputs["doppler"])
    assert proc.returncode == 0, proc.stderr
    png, dcm, doppler = (json.loads(line) for line in proc.stdout.splitlines())
    lesion = png["lesion"]
    assert lesion["found"] is True and lesion["withheld"] is None
    x, y, w, h = lesion["box"]
    assert abs(x - 260) <= 12 and abs(y - 90) <= 12 and abs(x + w - 381) <= 12 and abs(y + h - 151) <= 12
    assert 5 <= len(lesion["contour"]) <= 64
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in lesion["contour"])
    truth = np.pi * AXES[0] * AXES[1]
    assert abs(lesion["area_px"] - truth) / truth < 0.2
    assert lesion["width_mm"] is None and lesion["depth_mm"] is None and lesion["area_mm2"] is None
    assert lesion["orientation"] == {"value": "parallel", "shown": False}
    assert lesion["shape"]["shown"] is True and lesion["margin"]["shown"] is False
    sized = dcm["lesion"]
    assert sized["spacing_mm"] == [0.125, 0.25]
    assert sized["width_mm"] == pytest.approx(sized["box"][2] * 0.125, abs=0.01)
    assert sized["depth_mm"] == pytest.approx(sized["box"][3] * 0.25, abs=0.01)
    assert doppler["inconclusive"] is True
    assert doppler["lesion"]["found"] is False and doppler["lesion"]["withheld"] == "inconclusive"
    assert doppler["lesion"]["contour"] is None


def test_the_summary_line_says_the_size(seg_bundle_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = _classify(_config(tmp_path, seg_bundle_dir), inputs["png"], inputs["dcm"], as_json=False)
    assert proc.returncode == 0, proc.stderr
    png, dcm = proc.stdout.splitlines()
    as_json = _classify(_config(tmp_path, seg_bundle_dir), inputs["png"], inputs["dcm"], as_json=True)
    png_json, dcm_json = (json.loads(line) for line in as_json.stdout.splitlines())
    # the result card's words (docs/ui.md): the uncalibrated area, or W × D and area in mm; under "No lesion seen"
    # the outline is the outline model's region, to look at again, with no descriptor
    px = f"uncalibrated: {png_json['lesion']['area_px']:.0f} px"
    d = dcm_json["lesion"]
    mm = f"{d['width_mm']:.1f} × {d['depth_mm']:.1f} mm, {d['area_mm2']:.0f} mm²"
    for line, output, size in ((png, png_json, px), (dcm, dcm_json, mm)):
        if output["category"] == "no_lesion":
            assert line.endswith(f"  Region outlined ({size}) though no lesion seen: look again"), line
        else:
            assert f"  Lesion {size}" in line and "look again" not in line, line
    assert png_json["category"] == "no_lesion", "the tiny models' PNG is the disagreement case this test covers"
    assert "uncalibrated" not in dcm


def test_no_segmentation_model_gives_lesion_null(tiny_bundle_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    proc = _classify(_config(tmp_path, tiny_bundle_dir), inputs["png"])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "lesion" in out and out["lesion"] is None


def test_device_run_says_each_results_outline(seg_bundle_dir: Path, inputs: dict[str, Path], tmp_path: Path) -> None:
    """``device run`` (what ``make run`` shows) prints each stored result's outline line, as the card says it."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("png", "dcm"):
        (folder / inputs[name].name).write_bytes(inputs[name].read_bytes())
    args = [
        sys.executable,
        "-m",
        "device",
        "run",
        "--config",
        str(_config(tmp_path, seg_bundle_dir)),
        "--source",
        f"folder:{folder}",
        "--headless",
        "--once",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if " stored, " in line]
    assert len(lines) == 2, proc.stderr
    assert any("Region outlined (uncalibrated: " in line and " px) though no lesion seen: look again" in line for line in lines), lines
    assert any(" mm²" in line for line in lines), lines
