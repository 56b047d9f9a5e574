"""Fault banners: one per fault kind, each saying what is wrong and what to do. The app keeps running."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ui import theme
from ui.theme import Theme

SEVERITY_COLOURS = {"error": theme.DANGER, "warning": theme.WARN, "info": theme.INFO}


@dataclass(frozen=True)
class Fault:
    key: str  # "source", "model", "disk", "hub", "store", ...
    severity: str  # "error" | "warning" | "info"
    title: str
    action: str  # what the clinician should do
    priority: int = 0  # among faults of one severity, the higher is shown first (one banner at a time on 7")


def brief(detail: str, limit: int = 90) -> str:
    """Banner details stay short (two lines on the 7" screen); the full text is in the log and Settings."""
    return detail if len(detail) <= limit else detail[: limit - 1] + "…"


def source_fault(detail: str) -> Fault:
    return Fault("source", "error", "Image source not available", f"Check the cable or USB stick; reconnecting automatically. ({brief(detail)})")


def model_fault(detail: str) -> Fault:
    return Fault(
        "model",
        "error",
        "Model missing or rejected — analysis is off",
        f"The live image still works. Ask support to install a valid model. ({brief(detail)})",
    )


def files_gone_fault(detail: str) -> Fault:
    return Fault(
        "source",
        "error",
        "Images not available — USB stick removed or folder gone",
        f"Put it back: the images return by themselves. Analyse is off until then. ({brief(detail)})",
        priority=5,
    )


def disk_low_fault(free_mb: int) -> Fault:
    return Fault("disk", "warning", f"Storage low — {free_mb} MB left", "Results are still being saved. Ask support to free space soon.")


def store_fault(reason: str) -> Fault:
    """A result was not saved: what happened (the store's own reason, without its file path) and what to do.
    Shown before every other banner of its severity: it is about the frame on screen now."""
    if is_disk_full(reason):
        return Fault(
            "store",
            "error",
            "Storage full — this result was not saved",
            f"The frame is kept: ask support to free space, then Analyse again. ({brief(reason)})",
            priority=10,
        )
    return Fault(
        "store", "error", "Result could not be saved", f"The frame is kept: Analyse again; if it repeats, ask support. ({brief(reason)})", priority=10
    )


DISK_FULL_WORDS = ("disk is full", "no space left", "disk full", "errno 28")


def is_disk_full(reason: str) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full") or the OS's ENOSPC ("No space left on device")."""
    lowered = reason.lower()
    return any(words in lowered for words in DISK_FULL_WORDS)


def store_reason(message: str) -> str:
    """A StoreError's message without its "result store /path/results.sqlite:" prefix: the screen says what
    happened, not where the database file is."""
    head, sep, rest = message.partition(": ")
    reason = rest if sep and head.startswith("result store ") else message
    what, paren, why = reason.partition(" (")  # "write failed (database or disk is full)" -> "write failed: ..."
    return f"{what}: {why[:-1]}" if paren and why.endswith(")") else reason


def scan_fault(scanned: str, open_for: str) -> Fault:
    return Fault(
        "scan",
        "warning",
        f"Wristband {scanned} scanned, but the open exam is for {open_for}",
        "If this is another patient, finish the open exam first, then scan again.",
    )


def hub_fault(detail: str) -> Fault:
    return Fault(
        "hub", "warning", "Hospital hub not reachable", f"Results stay on this device and are sent when the network is back. ({brief(detail)})"
    )


class Banner(QWidget):
    def __init__(self, fault: Fault, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fault = fault
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        colour = SEVERITY_COLOURS.get(fault.severity, theme.WARN)
        self.setStyleSheet(f"Banner {{ background: {theme.PANEL}; border-left: 8px solid {colour}; }}")
        row = QHBoxLayout(self)
        row.setContentsMargins(th.gap * 2, 2, th.gap, 2)
        self.text = QLabel(f"<b style='color:{colour}'>{fault.title}.</b> {fault.action}")
        self.text.setWordWrap(True)
        self.text.setStyleSheet(f"font-size: {th.small}px;")
        row.addWidget(self.text, 1)
        self.more = QLabel("")
        self.more.setProperty("role", "muted")
        row.addWidget(self.more)
        self.dismiss = QPushButton("Hide")
        self.dismiss.setMinimumWidth(th.control + 20)
        self.dismiss.setStyleSheet("min-height: 48px;")
        row.addWidget(self.dismiss)


SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


class BannerArea(QWidget):
    """Active fault banners, most severe first; ``show_fault`` replaces a banner of the same key.

    At most ``max_visible`` are on screen at once (one on the 7" display, so the screens keep their
    room); the last one shown says how many more are waiting, and Hide reveals the next."""

    def __init__(self, th: Theme, parent: QWidget | None = None, max_visible: int | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.max_visible = max_visible or (1 if th.compact else 3)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self.banners: dict[str, Banner] = {}
        self._hidden_keys: set[str] = set()
        self.hide()

    def show_fault(self, fault: Fault) -> None:
        current = self.banners.get(fault.key)
        if current is not None and current.fault == fault:
            return
        self._remove(fault.key)
        if fault.key not in self._hidden_keys:
            banner = Banner(fault, self._th, self)
            banner.dismiss.clicked.connect(lambda: self._dismiss(fault.key))
            self.banners[fault.key] = banner
            self._layout.addWidget(banner)
        self._arrange()

    def clear_fault(self, key: str) -> None:
        """The fault is resolved: remove its banner (a later fault of this kind shows again)."""
        self._remove(key)
        self._hidden_keys.discard(key)
        self._arrange()

    def _remove(self, key: str) -> None:
        banner = self.banners.pop(key, None)
        if banner is not None:
            banner.hide()
            banner.deleteLater()

    def _dismiss(self, key: str) -> None:
        """Hide until this fault clears (the status bar still shows the state)."""
        self._hidden_keys.add(key)
        self._remove(key)
        self._arrange()

    def _arrange(self) -> None:
        ordered = sorted(self.banners.values(), key=lambda b: (SEVERITY_RANK.get(b.fault.severity, 3), -b.fault.priority))
        shown = ordered[: self.max_visible]
        waiting = len(ordered) - len(shown)
        for banner in ordered:
            banner.setVisible(banner in shown)
            banner.more.setText("")
        if shown and waiting:
            shown[-1].more.setText(f"+{waiting} more")
        self.setVisible(bool(ordered))

    def visible_faults(self) -> list[Fault]:
        return [b.fault for b in self.banners.values() if not b.isHidden()]

    def active(self) -> list[Fault]:
        return [b.fault for b in self.banners.values()]
