"""The USB barcode / wristband scanner as patient-ID input. A HID scanner is a keyboard to the system: it "types"
its code as a burst of key presses ending in Enter, far faster than a person. :class:`ScannerInput` watches every
key press the app receives (an application event filter; the device has no other keyboard, and no text field takes
keys), collects a burst whose presses come at most ``max_gap_s`` apart, and on the Enter that ends it emits the raw
text. What the text means — a patient ID or not — is decided in :mod:`device.barcode`, not here.

Key presses are swallowed (a scanner's Enter or space must never press a focused button); slow typing on a
developer's keyboard is not a scan and is dropped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from PyQt5.QtCore import QEvent, QObject, Qt, pyqtSignal
from PyQt5.QtGui import QKeyEvent

log = logging.getLogger(__name__)

ENTER_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Tab)  # scanners end a code with Enter, some are set to Tab
MAX_GAP_S = 0.05  # scanners send a key every 1-15 ms; people rarely type two keys 50 ms apart
MIN_CHARS = 2


class ScannerInput(QObject):
    """``scanned(raw)``: a fast burst of printable key presses ended by Enter or Tab (the raw text, the end as CR)."""

    scanned = pyqtSignal(str)

    def __init__(
        self, parent: QObject | None = None, *, max_gap_s: float = MAX_GAP_S, min_chars: int = MIN_CHARS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(parent)
        self.max_gap_s = max_gap_s
        self.min_chars = min_chars
        self._clock = clock
        self._burst: list[str] = []
        self._last = 0.0
        self.enabled = True

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is None:
            return False
        kind = event.type()
        if kind == QEvent.Type.KeyPress:
            press = cast(QKeyEvent, event)  # PyQt delivers a key event as its QKeyEvent
            return self.key(press.key(), press.text()) if self.enabled else False
        if kind == QEvent.Type.KeyRelease:
            release = cast(QKeyEvent, event)
            return self.enabled and (release.key() in ENTER_KEYS or _printable(release.text()))
        return False

    def key(self, key: int, text: str) -> bool:
        """One key press; True when it is taken (part of a possible scan)."""
        now = self._clock()
        fast = bool(self._burst) and now - self._last <= self.max_gap_s
        if key in ENTER_KEYS:
            burst, self._burst = "".join(self._burst), []
            if fast and len(burst) >= self.min_chars:
                self.scanned.emit(burst + "\r")
            elif burst:
                log.info("%d keys ending in Enter, too slow for a scanner: not a scan", len(burst))
            return True
        if not _printable(text):
            return False  # Shift and other modifiers a scanner sends around capitals: neither part nor break
        if not fast:
            self._burst = []  # a pause: whatever came before was not the start of this scan
        self._burst.append(text)
        self._last = now
        return True


def _printable(text: str) -> bool:
    return len(text) == 1 and text.isprintable()
