"""On-screen keypads (no keyboard on the device; gloved fingers): big keys, a display line, backspace and OK.
:class:`Keypad` (digits) for age, PIN and unlock; :class:`Keyboard` (digits, A-Z and "-") for patient IDs."""

from __future__ import annotations

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QGridLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ui.theme import Theme

BACKSPACE = "⌫"
OK_KEY = "OK"


class Keypad(QWidget):
    """Digits 0-9, backspace and OK. ``value`` is the text typed so far."""

    changed = pyqtSignal(str)
    accepted = pyqtSignal(str)
    DISPLAY_STYLE = "letter-spacing: 2px;"

    def __init__(self, th: Theme, *, max_length: int = 12, masked: bool = False, ok_text: str = OK_KEY, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.max_length = max_length
        self.masked = masked
        self.value = ""
        self.keys: dict[str, QPushButton] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(th.gap)
        self.display = QLabel("")
        self.display.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.display.setMinimumHeight(th.control)
        self.display.setStyleSheet(
            f"background: #000; border: 1px solid #33414f; border-radius: 8px; font-size: {th.large}px; font-weight: bold; {self.DISPLAY_STYLE}"
        )
        layout.addWidget(self.display)
        grid = QGridLayout()
        grid.setSpacing(th.gap)
        self._lay_out_keys(grid, th, ok_text)
        layout.addLayout(grid, 1)

    def _lay_out_keys(self, grid: QGridLayout, th: Theme, ok_text: str) -> None:
        rows = (("1", "2", "3"), ("4", "5", "6"), ("7", "8", "9"), (BACKSPACE, "0", OK_KEY))
        for r, row in enumerate(rows):
            for c, key in enumerate(row):
                self._add_key(grid, th, key, ok_text if key == OK_KEY else key, r, c)

    def _add_key(self, grid: QGridLayout, th: Theme, key: str, text: str, row: int, column: int, span: int = 1) -> None:
        button = QPushButton(text)
        button.setProperty("role", "keyok" if key == OK_KEY else "key")
        button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        button.setMinimumSize(th.control, th.control)
        button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        button.clicked.connect(lambda _=False, k=key: self.press(k))
        grid.addWidget(button, row, column, 1, span)
        self.keys[key] = button

    def press(self, key: str) -> None:
        if key == BACKSPACE:
            self.set_value(self.value[:-1])
        elif key == OK_KEY:
            self.accepted.emit(self.value)
        elif key.isdigit() and len(self.value) < self.max_length:
            self.set_value(self.value + key)

    def set_value(self, value: str) -> None:
        self.value = value
        self.display.setText("•" * len(value) if self.masked else value)
        self.changed.emit(value)

    def clear(self) -> None:
        self.set_value("")


KEYBOARD_ROWS = ("1234567890", "QWERTYUIOP", "ASDFGHJKL-", "ZXCVBNM")


class Keyboard(Keypad):
    """Digits, A-Z and "-" in four rows of ten big keys (no shift, no symbols: what patient IDs are made of), with
    backspace and OK on the last row. Same signals and ``value`` as :class:`Keypad`."""

    SPACE = False  # NoteKeyboard: a space key on the last row

    DISPLAY_STYLE = "letter-spacing: 3px; font-family: monospace;"

    def __init__(self, th: Theme, *, max_length: int = 20, ok_text: str = OK_KEY, parent: QWidget | None = None) -> None:
        super().__init__(th, max_length=max_length, ok_text=ok_text, parent=parent)

    def _lay_out_keys(self, grid: QGridLayout, th: Theme, ok_text: str) -> None:
        for r, row in enumerate(KEYBOARD_ROWS):
            for c, key in enumerate(row):
                self._add_key(grid, th, key, key, r, c)
        last, column = len(KEYBOARD_ROWS) - 1, len(KEYBOARD_ROWS[-1])
        if self.SPACE:
            self._add_key(grid, th, SPACE_KEY, "␣", last, column)
            column += 1
        self._add_key(grid, th, BACKSPACE, BACKSPACE, last, column)
        self._add_key(grid, th, OK_KEY, ok_text, last, column + 1, span=2 if not self.SPACE else 1)

    def press(self, key: str) -> None:
        if key in (BACKSPACE, OK_KEY):
            super().press(key)
        elif len(key) == 1 and key.upper() in self.accepted_keys() and len(self.value) < self.max_length:
            if key == SPACE_KEY and (not self.value or self.value.endswith(SPACE_KEY)):
                return  # a note starts with a word and has single spaces
            self.set_value(self.value + key.upper())

    def accepted_keys(self) -> frozenset[str]:
        return KEYS | ({SPACE_KEY} if self.SPACE else set())

    def set_value(self, value: str) -> None:
        super().set_value(value)
        if self.SPACE:  # show where the spaces are
            self.display.setText(value.replace(SPACE_KEY, "·"))


class NoteKeyboard(Keyboard):
    """The keyboard with a space key (instead of two-wide OK): a short note, e.g. a correction's "other" reason."""

    SPACE = True
    DISPLAY_STYLE = "letter-spacing: 1px; font-family: monospace;"

    def __init__(self, th: Theme, *, max_length: int = 40, ok_text: str = OK_KEY, parent: QWidget | None = None) -> None:
        super().__init__(th, max_length=max_length, ok_text=ok_text, parent=parent)


KEYS = frozenset("".join(KEYBOARD_ROWS))
SPACE_KEY = " "
