"""The status bar: source state, model name and version, hub connection, results waiting to upload,
free disk and the clock. Each item is a short chip with a coloured dot."""

from __future__ import annotations

from datetime import datetime
from html import escape

from PyQt5.QtCore import Qt
from PyQt5.QtGui import QResizeEvent
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QWidget

from ui import theme
from ui.theme import Theme

SOURCE_STATES = {
    "starting": ("Source starting", theme.WARN),
    "streaming": ("Source live", theme.OK),
    "still": ("Images", theme.OK),
    "finished": ("Images: end", theme.WARN),
    "disconnected": ("No source", theme.DANGER),
    "error": ("Source error", theme.WARN),
}


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit in ("B", "KB") else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


# A packed or site bundle's version is long (+modes-<digest>+seg-<sha>+site-<hash>): the model chip is cut in the
# middle, in pixels, to the room the other chips leave it (StatusBar._fit_model), its start and end kept; the tooltip
# and Settings › Model show it whole. (A fixed 64-character cut let a 56-character version wrap at 1280 px, and beside
# "Source error", "Hub offline", "36 to send" and a disk warning even 31 characters did not fit 800 px.)
FIT_SLACK_PX = 4  # what the model chip leaves free when cut to the bar's room (rich-text layout vs font metrics)


class Chip(QLabel):
    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setStyleSheet(f"font-size: {th.small}px; padding: 0 {th.gap // 2 if th.compact else th.gap}px;")
        self.plain = ""
        self._colour = theme.MUTED
        self._shown = ""

    def set(self, text: str, colour: str) -> None:
        """Show ``text``; ``plain`` keeps what the chip says in full, and so does the tooltip of a cut one."""
        self.plain, self._colour = text, colour
        self._render(text)

    def fit(self, width_px: int) -> None:
        """Show the text cut in the middle, in pixels, so the chip is at most ``width_px`` wide (whole when it fits;
        ``plain`` is unchanged). Rendered again only when what it shows changes."""
        self.ensurePolished()  # the stylesheet's font size, before measuring
        metrics = self.fontMetrics()
        overhead = self.sizeHint().width() - metrics.horizontalAdvance(self._shown)  # the dot, its space, the padding
        room = max(width_px - overhead, 0)
        shown = (
            self.plain if metrics.horizontalAdvance(self.plain) <= room else metrics.elidedText(self.plain, Qt.TextElideMode.ElideMiddle, room) or "…"
        )
        if shown != self._shown:
            self._render(shown)

    def _render(self, shown: str) -> None:
        self._shown = shown
        self.setText(f"<span style='color:{self._colour}'>●</span> {escape(shown)}")


class StatusBar(QWidget):
    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet(f"StatusBar {{ background: {theme.PANEL}; border-bottom: 1px solid {theme.BORDER}; }}")
        self.setFixedHeight(th.small + 18)
        row = QHBoxLayout(self)
        self._row = row
        row.setContentsMargins(th.gap, 0, th.gap, 0)
        row.setSpacing(0)
        self.source, self.model, self.hub, self.pending, self.disk = (Chip(th) for _ in range(5))
        self.clock = QLabel("")
        self.clock.setStyleSheet(f"font-size: {th.small}px; font-weight: bold;")
        for chip in (self.source, self.model, self.hub, self.pending, self.disk):
            row.addWidget(chip)
        row.addStretch(1)
        row.addWidget(self.clock)
        self.set_source("starting", "")
        self.set_model(None, "loading")
        self.set_hub(None, "")
        self.set_pending(None)
        self.set_disk(None)
        self.tick()

    def set_source(self, state: str, detail: str) -> None:
        text, colour = SOURCE_STATES.get(state, (state, theme.WARN))
        self.source.set(text, colour)
        self.source.setToolTip(detail)
        self._fit_model()

    def set_model(self, name_version: str | None, problem: str = "") -> None:
        if name_version:
            self.model.set(name_version, theme.OK)
            self.model.setToolTip(name_version)
        elif problem == "loading":
            self.model.set("Model loading", theme.WARN)
        else:
            self.model.set("No model", theme.DANGER)
        self._fit_model()

    def set_hub(self, reachable: bool | None, detail: str) -> None:
        if reachable is None:
            self.hub.set("Hub ?" if detail != "off" else "Hub off", theme.MUTED)
        else:
            self.hub.set("Hub ok" if reachable else "Hub offline", theme.OK if reachable else theme.WARN)
        self.hub.setToolTip(detail)
        self._fit_model()

    def set_pending(self, count: int | None) -> None:
        if count is None:
            self.pending.set("— to send", theme.MUTED)
        else:
            self.pending.set(f"{count} to send", theme.OK if count == 0 else theme.INFO)
        self._fit_model()

    def set_disk(self, free_bytes: int | None, low: bool = False) -> None:
        if free_bytes is None:
            self.disk.set("disk ?", theme.MUTED)
        else:
            self.disk.set(f"{human_bytes(free_bytes)} free", theme.DANGER if low else theme.OK)
        self._fit_model()

    def resizeEvent(self, event: QResizeEvent | None) -> None:
        super().resizeEvent(event)
        self._fit_model()

    def _fit_model(self) -> None:
        """The model chip (the one long item) gets the room the other chips and the clock leave it, its version cut
        in the middle to fit; the others keep their width (each a few words)."""
        margins = self._row.contentsMargins()
        others = sum(w.sizeHint().width() for w in (self.source, self.hub, self.pending, self.disk, self.clock))
        self.model.fit(self.width() - margins.left() - margins.right() - others - FIT_SLACK_PX)

    def tick(self) -> None:
        self.clock.setText(datetime.now().strftime("%H:%M"))
