"""A confirmation overlay: says what is about to happen and what it affects, with the action and a way back.
Used before an exam is finished (it shows how many results the exam holds) and before one is started (the patient
ID read back big, to be compared with the wristband)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ui.overlay import Overlay
from ui.theme import Theme

log = logging.getLogger(__name__)


class ConfirmOverlay(Overlay):
    """``ask(title, message, action, on_accept)``: *action* runs ``on_accept``; *Keep* closes and changes nothing."""

    def __init__(self, parent: QWidget, th: Theme) -> None:
        super().__init__(parent)
        self._on_accept: Callable[[], object] | None = None  # its return value is not used
        layout = QVBoxLayout(self.panel)
        layout.setContentsMargins(th.gap * 3, th.gap * 2, th.gap * 3, th.gap * 2)
        layout.setSpacing(th.gap * 2)
        self.title = QLabel("")
        self.title.setProperty("role", "heading")
        self.title.setWordWrap(True)
        self.readback = QLabel("")  # an ID shown big, e.g. the patient ID before Start
        self.readback.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.readback.setTextFormat(Qt.TextFormat.RichText)
        self.readback.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.accept_button = QPushButton("")
        self.accept_button.setProperty("role", "primary")
        self.accept_button.clicked.connect(self._accepted)
        self.cancel_button = QPushButton("")
        self.cancel_button.clicked.connect(self.close_overlay)
        row = QHBoxLayout()
        row.setSpacing(th.gap * 2)
        row.addWidget(self.cancel_button, 1)
        row.addWidget(self.accept_button, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.readback)
        layout.addWidget(self.message)
        layout.addLayout(row)

    def ask(self, title: str, message: str, action: str, on_accept: Callable[[], object], cancel: str = "Keep it open", readback: str = "") -> None:
        self.title.setText(title)
        self.readback.setText(readback)
        self.readback.setVisible(bool(readback))
        self.message.setText(message)
        self.accept_button.setText(action)
        self.cancel_button.setText(cancel)
        self._on_accept = on_accept
        self.panel.setFixedWidth(max(320, int(self.host().width() * 0.8)))
        self.open()

    def close_overlay(self) -> None:
        self._on_accept = None
        super().close_overlay()

    def _accepted(self) -> None:
        on_accept = self._on_accept
        self.close_overlay()
        if on_accept is not None:
            on_accept()
