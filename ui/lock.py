"""Idle lock (PIN to unlock) and the first-run notice of intended use and its limits."""

from __future__ import annotations

import logging
from pathlib import Path

from PyQt5.QtCore import QEvent, QObject, QTimer, pyqtSignal
from PyQt5.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from ui.number_entry import NumberEntry
from ui.overlay import Overlay
from ui.theme import NOTICE, Theme

log = logging.getLogger(__name__)

USER_EVENTS = (QEvent.Type.MouseButtonPress, QEvent.Type.TouchBegin, QEvent.Type.KeyPress)
FIRST_RUN_MARKER = ".ui-intended-use-accepted"

LIMITS = (
    "For trained clinicians, as a second look at a breast ultrasound image. It does not replace the clinician's reading.",
    "The model suggests a category (normal / benign / malignant) with probabilities. It never makes a diagnosis.",
    'It can be wrong. An "Inconclusive — rescan" result means the image is not fit for analysis or the model is unsure.',
    "It was validated only on the images described under Settings → Model; other scanners, presets or patient groups are not validated.",
    "Use the usual clinical pathway (BI-RADS, biopsy decisions) regardless of the model's output.",
)


class IdleWatcher(QObject):
    """Emits ``idle`` after ``timeout_s`` without a tap or key press anywhere in the application."""

    idle = pyqtSignal()

    def __init__(self, timeout_s: float, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(timeout_s * 1000))
        self.timer.timeout.connect(self.idle)

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and event.type() in USER_EVENTS:
            self.timer.start()
        return False

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        """No more ``idle`` (the window shut down: nothing is left to lock)."""
        self.timer.stop()


class LockScreen(NumberEntry):
    """Hides patient information until the PIN is entered."""

    unlocked = pyqtSignal()

    def __init__(self, parent: QWidget, th: Theme, pin: str) -> None:
        super().__init__(parent, th, masked=True, opaque=True)
        self._pin = pin

    def lock(self) -> None:
        if not self.isVisible():
            log.info("screen locked")
            self.ask("Locked", self._check, "Enter the PIN to continue.", cancellable=False)

    def _check(self, value: str) -> str | None:
        if value != self._pin:
            return "Wrong PIN. Try again."
        self.unlocked.emit()
        return None


class FirstRun(Overlay):
    """Shown until the intended use has been acknowledged once on this device (a marker in data_dir)."""

    def __init__(self, parent: QWidget, th: Theme, data_dir: Path) -> None:
        super().__init__(parent, opaque=True)
        self._marker = data_dir / FIRST_RUN_MARKER
        layout = QVBoxLayout(self.panel)
        layout.setContentsMargins(th.gap * 3, th.gap * 2, th.gap * 3, th.gap * 2)
        layout.setSpacing(th.gap)
        title = QLabel(NOTICE)
        title.setProperty("role", "heading")
        title.setWordWrap(True)
        layout.addWidget(title)
        self.text = QLabel("<br>".join(f"• {line}" for line in LIMITS))
        self.text.setWordWrap(True)
        self.text.setStyleSheet(f"font-size: {th.small}px;")
        layout.addWidget(self.text)
        self.accept = QPushButton("I understand")
        self.accept.setProperty("role", "primary")
        self.accept.clicked.connect(self._accepted)
        layout.addWidget(self.accept)
        self.panel.setMaximumWidth(int(parent.width() * 0.94) if parent.width() > 0 else 1000)

    def set_intended_use(self, text: str) -> None:
        self.text.setText("<br>".join(f"• {line}" for line in (f"Intended use (model): {text}",) + LIMITS))

    @property
    def needed(self) -> bool:
        return not self._marker.exists()

    def _accepted(self) -> None:
        try:
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            self._marker.write_text("accepted\n")
        except OSError as exc:  # read-only data dir: show again next start, but let the clinician work now
            log.warning("cannot record first-run acceptance: %s", exc)
        self.close_overlay()
