"""A full-window overlay panel (instead of modal dialogs: no window manager in kiosk mode, and tests
drive it like any widget). It covers its parent and keeps itself sized to it."""

from __future__ import annotations

from PyQt5.QtCore import QEvent, QObject, QRect, Qt
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

    def host(self) -> QWidget:
        """The widget the overlay covers (its parent)."""
        parent = self.parentWidget()
        assert parent is not None  # made on its parent (__init__), never re-parented
        return parent

    def _host_rect(self) -> QRect:
        return self.host().rect()

    def eventFilter(self, watched: QObject | None, event: QEvent | None) -> bool:
        if event is not None and watched is self.parent() and event.type() == QEvent.Type.Resize:
            self.setGeometry(self._host_rect())
        return False

    def open(self) -> None:
        self.setGeometry(self._host_rect())
        self.show()
        self.raise_()

    def close_overlay(self) -> None:
        self.hide()
