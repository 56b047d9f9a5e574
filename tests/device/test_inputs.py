"""Unusual but valid inputs classify correctly; broken ones give a clear per-input error and the batch goes on."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.errors import ImageDecodeError
from device.imageio import decode_image_file, normalise_frame
from tests.tiny_bundle import expected_label
from tests.unprivileged import make_traversable, run_unprivileged


def _speckle(level: int, shape=(120, 160), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def _classify_json(bundle: Path, *paths: Path) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-m", "device", "classify", "--model", str(bundle), "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


# --- valid but unusual --------------------------------------------------------------------------------


def test_16bit_png_is_scaled_by_its_bit_depth(tmp_path: Path) -> None:
    grey8 = _speckle(180)
    twelve_bit = grey8.astype(np.uint16) * 16  # 12-bit data stored in 16 bits
    path = tmp_path / "x16.png"
    Image.fromarray(twelve_bit).save(path)
    frame = decode_image_file(path)
    assert frame.dtype == np.uint8 and frame.ndim == 2
    assert abs(float(frame.mean()) - float(grey8.mean())) < 2.0


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channel_counts(channels: int) -> None:
    grey = _speckle(100)
    stacked = np.repeat(grey[:, :, None], channels, axis=2)
    if channels in (2, 4):
        stacked[:, :, -1] = 255  # alpha
    frame = normalise_frame(stacked if channels > 1 else grey[:, :, None])
    assert frame.shape == grey.shape and np.array_equal(frame, grey)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    wide = _speckle(100, shape=(60, 200))
    image = Image.fromarray(wide)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert decode_image_file(path).shape == (200, 60)


def test_unusual_valid_inputs_classify_correctly(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ünïcödé 病例"
    folder.mkdir()
    cases = {
        "tiny.png": _speckle(40, shape=(70, 70)),  # small (just above the 64 px quality limit)
        "huge.png": _speckle(220, shape=(3000, 4000)),  # very large
        "rgba.png": np.dstack([np.repeat(_speckle(130)[:, :, None], 3, axis=2), np.full((120, 160), 255, np.uint8)]),
    }
    for name, array in cases.items():
        _save(folder / name, array)
    code, outputs = _classify_json(tiny_bundle_dir, folder)
    assert code == 0, outputs
    by_name = {Path(o["path"]).name: o for o in outputs}
    assert set(by_name) == set(cases)
    for name, array in cases.items():
        grey = array[:, :, 0] if array.ndim == 3 else array
        assert by_name[name]["label"] == expected_label(grey.mean() / 255), name
        assert not by_name[name]["inconclusive"], by_name[name]


# --- broken inputs ------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a huge image (decompression bomb) with a tiny, valid-looking stream."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _broken_files(folder: Path) -> dict[str, str]:
    """name -> expected error code"""
    (folder / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_speckle(100)).save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(_speckle(100)).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (folder / "notes.png").write_text("this is a text file, not an image\n")
    (folder / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    return {
        "empty.png": "empty_file",
        "truncated.png": "corrupt_image",
        "truncated.jpg": "corrupt_image",
        "notes.png": "not_an_image",
        "bomb.png": "too_large",
    }


def test_broken_files_each_get_a_clear_error_and_the_batch_continues(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    expected = _broken_files(folder)
    _save(folder / "good.png", _speckle(220))
    code, outputs = _classify_json(tiny_bundle_dir, folder, tmp_path / "missing.png")
    assert code == 1  # some inputs failed
    by_name = {Path(o["path"]).name: o for o in outputs}
    assert by_name["good.png"]["label"] == "malignant"
    assert by_name["missing.png"]["error"]["code"] == "not_found"
    for name, code_expected in expected.items():
        error = by_name[name]["error"]
        assert error["code"] == code_expected, (name, error)
        assert name in error["message"]


def _decode_error_code(path: Path) -> str:
    try:
        decode_image_file(path)
    except ImageDecodeError as exc:
        return f"{exc.code}|{exc}"
    return "ok|"


def test_unreadable_permissions(tmp_path: Path) -> None:
    """A file without read permission gives 'unreadable' (as 'nobody' when the suite runs as root)."""
    locked = _save(tmp_path / "locked.png", _speckle(100))
    locked.chmod(0o000)
    make_traversable(tmp_path)
    result = run_unprivileged(lambda: _decode_error_code(locked))
    code, _, message = result.partition("|")
    assert code == "unreadable", result
    assert "permission denied" in message and "locked.png" in message


def test_decode_errors_are_typed(tmp_path: Path) -> None:
    expected = _broken_files(tmp_path)
    for name, code in expected.items():
        with pytest.raises(ImageDecodeError) as info:
            decode_image_file(tmp_path / name)
        assert info.value.code == code
