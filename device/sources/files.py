"""Sources backed by files: a single image, a folder (images, DICOM, video), a video file."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2

from device.errors import ImageDecodeError, SourceError
from device.imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, decode_image_file, normalise_frame
from device.sources.base import Frame, FrameSource
from device.sources.dicom import dicom_frames

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES | VIDEO_SUFFIXES


def natural_key(path: Path) -> list[int | str]:
    """Sort "img2" before "img10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_inputs(folder: Path) -> list[Path]:
    """Files in a folder (not recursive) that a source can read, naturally sorted; hidden files skipped."""
    if not folder.is_dir():
        raise SourceError(f"{folder}: folder not found")
    try:
        entries = list(folder.iterdir())
    except PermissionError as exc:
        raise SourceError(f"{folder}: permission denied") from exc
    files = [p for p in entries if p.suffix.lower() in SUPPORTED_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=natural_key)


def frames_from_file(path: Path, dicom_frame: int | None = None) -> Iterator[Frame]:
    """Every frame in one file: one for an image, the chosen or every frame for DICOM/video."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        yield from dicom_frames(path, dicom_frame)
    elif suffix in VIDEO_SUFFIXES:
        yield from video_frames(path)
    else:
        yield Frame(decode_image_file(path), str(path), 0)


def video_frames(path: Path) -> Iterator[Frame]:
    if not path.is_file():
        raise ImageDecodeError(f"{path}: file not found", "not_found")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageDecodeError(f"{path}: cannot open video (unsupported or corrupt)", "corrupt_video")
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(normalise_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), f"{path}#frame={index}", index)
            index += 1
        if index == 0:
            raise ImageDecodeError(f"{path}: video has no readable frames", "corrupt_video")
    finally:
        capture.release()


class FileListSource(FrameSource):
    """Frames from a list of files (one file, or a folder's files). One bad file does not stop the rest."""

    def __init__(self, description: str, files_fn: Callable[[], list[Path]], dicom_frame: int | None = None, loop: bool = False) -> None:
        super().__init__(description)
        self._files_fn = files_fn
        self._dicom_frame = dicom_frame
        self._loop = loop
        self._frames: Iterator[Frame | ImageDecodeError] | None = None
        self._index = 0
        self._finished = False

    def open(self) -> None:
        files = self._files_fn()
        if not files:
            raise SourceError(f"{self.description}: no readable files (images, DICOM or video)")
        self._files = files
        self._frames = self._generate()
        self._finished = False

    def _generate(self) -> Iterator[Frame | ImageDecodeError]:
        while True:
            for path in self._files:
                try:
                    yield from frames_from_file(path, self._dicom_frame)
                except ImageDecodeError as exc:
                    yield exc
            if not self._loop:
                return

    def read(self) -> Frame | None:
        if self._frames is None:
            self.open()
        assert self._frames is not None  # open() sets it or raises
        item = next(self._frames, None)
        if item is None:
            self._finished = True
            return None
        if isinstance(item, ImageDecodeError):
            raise item
        frame = Frame(item.image, item.origin, self._index, spacing=item.spacing)
        self._index += 1
        return frame

    @property
    def state(self) -> str:
        return "finished" if self._finished else "ready"


def file_source(path: Path, dicom_frame: int | None = None, loop: bool = False) -> FileListSource:
    def files() -> list[Path]:
        if not path.exists():
            raise SourceError(f"{path}: file not found")
        return [path]

    return FileListSource(f"file:{path}", files, dicom_frame, loop)


def folder_source(path: Path, dicom_frame: int | None = None, loop: bool = False) -> FileListSource:
    return FileListSource(f"folder:{path}", lambda: list_inputs(path), dicom_frame, loop)
