"""Raspberry Pi camera through picamera2 (imported lazily: it exists only on Raspberry Pi OS)."""

from __future__ import annotations

from typing import Any

from device.errors import SourceError, SourceUnavailableError
from device.imageio import normalise_frame
from device.sources.base import Frame, FrameSource


class PiCameraSource(FrameSource):
    finite = False

    def __init__(self, width: int | None = None, height: int | None = None) -> None:
        super().__init__("picamera")
        self.size = (width or 1280, height or 720)
        self._camera: Any = None  # picamera2.Picamera2 once open (imported there: not on a workstation)
        self._index = 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceUnavailableError(
                "picamera: the picamera2 library is not installed (on Raspberry Pi OS: sudo apt install python3-picamera2)"
            ) from exc
        try:
            camera = Picamera2()
            # "RGB888" is laid out B, G, R in memory (libcamera's naming): converted in read().
            camera.configure(camera.create_video_configuration(main={"format": "RGB888", "size": self.size}))
            camera.start()
        except (RuntimeError, IndexError) as exc:
            raise SourceError(f"picamera: cannot start the camera ({exc}) — is it connected and enabled?") from exc
        self._camera = camera

    def read(self) -> Frame | None:
        if self._camera is None:
            self.open()
        try:
            bgr = self._camera.capture_array("main")
        except RuntimeError as exc:
            self.close()
            raise SourceError(f"picamera: capture failed ({exc})") from exc
        frame = Frame(normalise_frame(bgr[:, :, ::-1]), "picamera", self._index, spacing=self.spacing)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
                self._camera.close()
            finally:
                self._camera = None

    @property
    def state(self) -> str:
        return "streaming" if self._camera is not None else "disconnected"
