"""Frame sources: folders, video files, the V4L2 adapter (exercised through OpenCV on a file), picamera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from device.config import SourceSection
from device.demo import scanner_screen
from device.errors import ImageDecodeError, SourceError, SourceUnavailableError
from device.sources import open_source, parse_spec
from device.sources.picamera import PiCameraSource
from device.sources.v4l2 import V4L2Source


def _write_video(path: Path, frames: int = 5, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 30 + 40 * i, dtype=np.uint8))
    writer.release()
    return path


def test_parse_spec() -> None:
    assert parse_spec("v4l2:/dev/video0") == ("v4l2", "/dev/video0")
    assert parse_spec("picamera") == ("picamera", "")
    for bad in ("", "camera:0", "folder:", "/dev/video0"):
        with pytest.raises(SourceError, match="expected one of"):
            parse_spec(bad)


def test_folder_is_sorted_naturally_and_skips_bad_files(tmp_path: Path) -> None:
    for name in ("img10.png", "img2.png", "img1.png"):
        cv2.imwrite(str(tmp_path / name), np.full((80, 80), 100, np.uint8))
    (tmp_path / "img3.png").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")
    names, errors = [], []
    with open_source(f"folder:{tmp_path}") as source:
        while True:
            try:
                frame = source.read()
            except ImageDecodeError as exc:
                errors.append(Path(str(exc).split(":")[0]).name)
                continue
            if frame is None:
                break
            names.append(Path(frame.origin).name)
    assert names == ["img1.png", "img2.png", "img10.png"]
    assert errors == ["img3.png"]


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="folder not found"):
        open_source(f"folder:{tmp_path / 'absent'}").open()
    with pytest.raises(SourceError, match="no readable files"):
        open_source(f"folder:{tmp_path}").open()


def test_video_file_frames_and_loop(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "clip.avi")
    with open_source(f"video:{video}") as source:
        frames = list(source)
    assert len(frames) == 5 and frames[0].image.dtype == np.uint8
    assert frames[-1].image.mean() > frames[0].image.mean()
    with open_source(f"file:{video}", SourceSection(loop=True)) as looping:
        assert len([looping.read() for _ in range(12)]) == 12


def test_v4l2_adapter_detects_unplug_and_reopens(tmp_path: Path) -> None:
    """OpenCV reads files through the same VideoCapture API: the end of the file stands in for an unplug."""
    video = _write_video(tmp_path / "capture.avi", frames=3)
    sleeps: list[float] = []
    clock = iter(float(t) for t in range(1000))
    source = V4L2Source(
        str(video),
        width=160,
        height=120,
        fps=10,
        fourcc="MJPG",
        reopen_interval_s=2.0,
        api=cv2.CAP_ANY,
        clock=lambda: next(clock),
        sleep=sleeps.append,
    )
    source.open()
    assert source.state == "streaming"
    assert [source.read().index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SourceError, match="no signal"):
        source.read()
    assert source.state == "disconnected"
    frame = source.read()  # reopens (after waiting out the reopen interval)
    assert frame is not None and source.state == "streaming" and sleeps
    video.unlink()  # the card is gone for good
    source.close()
    with pytest.raises(SourceError, match="cannot open capture device"):
        source.read()
    source.close()


def test_v4l2_missing_device_is_a_clear_error() -> None:
    source = open_source("v4l2:/dev/video-does-not-exist", SourceSection(reopen_interval_s=0.01))
    with pytest.raises(SourceError, match="is the capture card plugged in"):
        source.open()


def test_picamera_absent_is_a_clear_error() -> None:
    try:
        import picamera2  # noqa: F401  (imported only to learn whether it is installed)
    except ImportError:
        with pytest.raises(SourceUnavailableError, match="picamera2 library is not installed"):
            PiCameraSource().open()
    else:
        pytest.skip("picamera2 is installed here: the not-installed error path cannot be exercised")


def test_synthetic_screen_crop_is_found() -> None:
    from device.crop import detect_scan_region

    for seed in range(4):
        screen, (x, y, w, h) = scanner_screen(seed)
        box = detect_scan_region(screen)
        assert abs(box.x - x) <= 4 and abs(box.y - y) <= 4
        assert abs(box.width - w) <= 8 and abs(box.height - h) <= 8
