"""USB/HDMI capture card through OpenCV's V4L2 backend, with unplug detection and automatic reopen.

OpenCV's ``VideoCapture`` reads video files through the same API, which is how this adapter is
exercised on machines without a capture card (``api=cv2.CAP_ANY`` and a file path).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import cv2

from device.errors import SourceError
from device.imageio import normalise_frame
from device.sources.base import Frame, FrameSource

log = logging.getLogger(__name__)


class V4L2Source(FrameSource):
    finite = False

    def __init__(
        self,
        device: str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        reopen_interval_s: float = 2.0,
        api: int = cv2.CAP_V4L2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(f"v4l2:{device}")
        self.device = device
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self.reopen_interval_s = reopen_interval_s
        self._api = api
        self._clock, self._sleep = clock, sleep
        self._capture: cv2.VideoCapture | None = None
        self._last_attempt = float("-inf")
        self._index = 0
        self._state = "disconnected"

    def open(self) -> None:
        self._last_attempt = self._clock()
        target = int(self.device) if self.device.isdigit() else self.device
        capture = cv2.VideoCapture(target, self._api)
        if not capture.isOpened():
            capture.release()
            self._state = "disconnected"
            raise SourceError(f"{self.description}: cannot open capture device — is the capture card plugged in?")
        if self.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        if self.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a stale queue
        self._capture = capture
        self._state = "streaming"
        log.info(
            "%s opened: %dx%d @ %.1f fps",
            self.description,
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            capture.get(cv2.CAP_PROP_FPS),
        )

    def read(self) -> Frame | None:
        if self._capture is None:
            wait = self._last_attempt + self.reopen_interval_s - self._clock()
            if wait > 0:
                self._sleep(wait)
            self.open()
        assert self._capture is not None  # open() sets it or raises
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            self.close()
            self._state = "disconnected"
            raise SourceError(f"{self.description}: no signal — capture card unplugged or scanner output off; retrying")
        frame = Frame(normalise_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), self.device, self._index, spacing=self.spacing)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    @property
    def state(self) -> str:
        return self._state
