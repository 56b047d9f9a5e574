"""A keypad in an overlay: asks for one number (PIN, age, patient filter...) or, with the alphanumeric keyboard,
one patient ID, and reports it."""

from __future__ import annotations

from collections.abc import Callable

from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ui.keypad import Keyboard, Keypad, NoteKeyboard
from ui.overlay import Overlay
from ui.theme import Theme


class NumberEntry(Overlay):
    """``ask(title, on_ok)``: shows the keypad; ``on_ok(value)`` returns an error text or None to close."""

    def __init__(
        self, parent: QWidget, th: Theme, *, masked: bool = False, opaque: bool = False, alphanumeric: bool = False, note: bool = False
    ) -> None:
        super().__init__(parent, opaque=opaque)
        self._on_ok: Callable[[str], str | None] | None = None
        layout = QVBoxLayout(self.panel)
        layout.setContentsMargins(th.gap * 2, th.gap * 2, th.gap * 2, th.gap * 2)
        layout.setSpacing(th.gap)
        self.title = QLabel("")
        self.title.setProperty("role", "heading")
        self.message = QLabel("")
        self.message.setProperty("role", "muted")
        self.message.setWordWrap(True)
        if alphanumeric or note:
            self.keypad: Keypad = NoteKeyboard(th) if note else Keyboard(th)
            self.keypad.setFixedWidth(th.control * 10 + th.gap * 9 + (150 if th.compact else 200))
        else:
            self.keypad = Keypad(th, masked=masked)
            self.keypad.setFixedWidth(th.control * 5)
        self.keypad.accepted.connect(self._accept)
        self.cancel = QPushButton("Cancel")
        self.cancel.clicked.connect(self.close_overlay)
        layout.addWidget(self.title)
        layout.addWidget(self.message)
        layout.addWidget(self.keypad)
        row = QHBoxLayout()
        row.addWidget(self.cancel)
        layout.addLayout(row)

    def ask(self, title: str, on_ok: Callable[[str], str | None], message: str = "", cancellable: bool = True, initial: str = "") -> None:
        self.title.setText(title)
        self.message.setText(message)
        self.message.setVisible(bool(message))
        self.keypad.set_value(initial)
        self.cancel.setVisible(cancellable)
        self._on_ok = on_ok
        self.open()

    def _accept(self, value: str) -> None:
        error = self._on_ok(value) if self._on_ok else None
        if error:
            self.message.setText(error)
            self.message.show()
            if not isinstance(self.keypad, Keyboard):  # a wrong PIN starts over; a mistyped ID is corrected
                self.keypad.clear()
        else:
            self.close_overlay()
