"""FrameReader packets: a still image re-sent at preview_fps is scaled once per view size, not per send."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PyQt5")

from device.sources.base import Frame
from ui import workers
from ui.workers import FrameReader


def test_still_frame_is_scaled_once_per_view_size(monkeypatch) -> None:
    calls = []
    real = workers.display_image

    def counting(image, w, h):
        calls.append((w, h))
        return real(image, w, h)

    monkeypatch.setattr(workers, "display_image", counting)
    reader = FrameReader("folder:/nowhere", opener=None)
    packets = []
    reader.packet_ready.connect(packets.append)
    still = Frame(np.full((240, 320), 128, np.uint8), "still.png", 0)

    def send(frame: Frame, fresh: bool) -> None:
        reader._send(frame, None, fresh)
        reader.frame_shown()

    reader.set_target_size(160, 120)
    send(still, True)
    send(still, False)
    send(still, False)
    assert calls == [(160, 120)]
    assert [p.image.size().width() for p in packets] == [160, 160, 160] and packets[1].scale == 0.5

    reader.set_target_size(640, 480)  # the view was resized: scale again
    send(still, False)
    assert calls == [(160, 120), (640, 480)] and packets[-1].image.width() == 640 and packets[-1].scale == 2.0

    other = Frame(np.zeros((240, 320), np.uint8), "next.png", 1)  # a new frame, same size: scale again
    send(other, True)
    assert calls[-1] == (640, 480) and len(calls) == 3 and packets[-1].frame is other
