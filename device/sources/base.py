"""The frame-source interface shared by every adapter."""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from device.spacing import PixelSpacing


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # uint8, grey (H x W) or RGB (H x W x 3)
    origin: str  # where it came from: a file path, "/dev/video0", "scan.dcm#frame=3"
    index: int  # position in the stream
    timestamp: float = field(default_factory=time.time)
    spacing: PixelSpacing | None = None  # mm per pixel, when the source knows it (device/spacing.py)


class FrameSource(abc.ABC):
    """Open, read frames, close. ``read`` returns ``None`` at the end of a finite source.

    Errors for one item (an unreadable file in a folder) raise :class:`~device.errors.ImageDecodeError`
    and the next ``read`` carries on with the next item. A live source that goes away raises
    :class:`~device.errors.SourceError`; the next ``read`` tries to reopen it.
    """

    finite: bool = True
    spacing: PixelSpacing | None = None  # a live source calibrated in the config (`[source] pixel_spacing_mm`)

    def __init__(self, description: str) -> None:
        self.description = description

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> Frame | None: ...

    def close(self) -> None:  # noqa: B027  (optional to override: sources without a resource keep this no-op)
        """Release the device or file; safe to call twice."""

    @property
    def state(self) -> str:
        """A short human state for status bars: "ready", "streaming", "disconnected", "finished"."""
        return "ready"

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame
