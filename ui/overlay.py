"""A full-window overlay panel (instead of modal dialogs: no window manager in kiosk mode, and tests
drive it like any widget). It covers its parent and keeps itself sized to it."""

from __future__ import annotations

from PyQt5.QtCore import QEvent, QObject, Qt
from PyQt5.QtWidgets import QFrame, QVBoxLayout, QWidget

from ui import theme


class Overlay(QFrame):
    def __init__(self, parent: QWidget, opaque: bool = False) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        # Opaque overlays (lock, first run) hide what is beneath, e.g. patient references.
        self.setStyleSheet(f"Overlay {{ background: {theme.rgba(theme.BG, 255 if opaque else 225)}; }}")
        self.panel = QFrame(self)
        self.panel.setProperty("role", "panel")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addWidget(self.panel, 0, Qt.AlignmentFlag.AlignCenter)
        parent.installEventFilter(self)
        self.hide()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.parent() and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.parent().rect())
        return False

    def open(self) -> None:
        self.setGeometry(self.parent().rect())
        self.show()
        self.raise_()

    def close_overlay(self) -> None:
        self.hide()
