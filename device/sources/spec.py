"""Parsing a source spec (``folder:/media/usb``, ``v4l2:/dev/video0``...) into an adapter."""

from __future__ import annotations

from pathlib import Path

from device.config import SourceSection
from device.errors import SourceError
from device.sources.base import FrameSource
from device.spacing import PixelSpacing

KINDS = ("file", "folder", "video", "dicom", "v4l2", "picamera")


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, target = spec.partition(":")
    if kind == "picamera" and not target:
        return kind, ""
    if not sep or kind not in KINDS or not target:
        raise SourceError(f"source spec {spec!r}: expected one of file:PATH, folder:PATH, video:PATH, dicom:PATH, v4l2:/dev/videoN, picamera")
    return kind, target


def open_source(spec: str, settings: SourceSection | None = None) -> FrameSource:
    """Build the adapter for ``spec`` (not yet opened: call ``open()`` or use it as a context manager)."""
    from device.sources.files import file_source, folder_source
    from device.sources.picamera import PiCameraSource
    from device.sources.v4l2 import V4L2Source

    settings = settings or SourceSection()
    kind, target = parse_spec(spec)
    if kind in ("file", "video", "dicom"):
        return file_source(Path(target), settings.dicom_frame, settings.loop)
    if kind == "folder":
        return folder_source(Path(target), settings.dicom_frame, settings.loop)
    live: FrameSource
    if kind == "v4l2":
        live = V4L2Source(
            target,
            width=settings.width,
            height=settings.height,
            fps=settings.fps,
            fourcc=settings.fourcc,
            reopen_interval_s=settings.reopen_interval_s,
        )
    else:
        live = PiCameraSource(settings.width, settings.height)
    if settings.pixel_spacing_mm is not None:  # only a live source: a file or DICOM says its own, or nothing
        live.spacing = PixelSpacing(*settings.pixel_spacing_mm, origin="config:[source] pixel_spacing_mm")
    return live
