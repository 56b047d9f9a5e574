"""Dark theme and touch-sized metrics for the two supported displays (800x480 and 1280x720)."""

from __future__ import annotations

from dataclasses import dataclass

# Colours: a dark, low-glare palette for reading ultrasound; text contrast >= 7:1 on the background.
BG = "#0e1216"
PANEL = "#182028"
PANEL_2 = "#222c36"
BORDER = "#33414f"
TEXT = "#eef2f6"
MUTED = "#a9b6c3"
ACCENT = "#5aa9ff"
OK = "#5fd38d"
WARN = "#f2b84b"
DANGER = "#ff7a70"
INFO = "#7cc4ff"

LABEL_COLOURS = {"malignant": DANGER, "benign": WARN, "normal": OK}
DELIVERY_TEXT = {"stored": "On device", "sent": "Sent", "acked": "Received by hub"}
DELIVERY_TEXT_COMPACT = {**DELIVERY_TEXT, "acked": "Received\nby hub"}  # History on the 7" panel: the Lesion column stays in view
DELIVERY_COLOURS = {"stored": WARN, "sent": INFO, "acked": OK}
NOTICE = "Decision support only — not a diagnosis"


def rgba(colour: str, alpha: int) -> str:
    """'#rrggbb' + alpha as a stylesheet rgba() (Qt reads 8-digit hex as #AARRGGBB, not #RRGGBBAA)."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def label_colour(label: str | None) -> str:
    return LABEL_COLOURS.get(label or "", MUTED)


@dataclass(frozen=True)
class Theme:
    """Metrics in pixels, chosen from the window size (the 7" panel is "compact")."""

    compact: bool
    control: int  # minimum height of any tappable control (>= 48)
    font: int  # body text
    small: int  # secondary text (still legible at arm's length)
    large: int  # headings, the result label
    huge: int  # the live gauge figure
    gap: int
    side_panel: int  # width of the result card

    @classmethod
    def for_size(cls, width: int, height: int) -> Theme:
        if height < 600 or width < 1000:
            return cls(compact=True, control=52, font=17, small=15, large=26, huge=34, gap=6, side_panel=268)
        return cls(compact=False, control=64, font=21, small=18, large=34, huge=46, gap=10, side_panel=440)

    def stylesheet(self) -> str:
        c = self.control
        return f"""
        QWidget {{ background: {BG}; color: {TEXT}; font-size: {self.font}px; }}
        QLabel {{ background: transparent; }}
        QLabel[role="muted"] {{ color: {MUTED}; font-size: {self.small}px; }}
        QLabel[role="heading"] {{ font-size: {self.large}px; font-weight: bold; }}
        QLabel[role="notice"] {{ color: {WARN}; font-size: {self.small}px; font-weight: bold; }}
        QFrame[role="panel"] {{ background: {PANEL}; border: 1px solid {BORDER}; border-radius: 8px; }}
        QFrame[role="panel"] QLabel {{ background: transparent; }}
        QPushButton {{
            background: {PANEL_2}; color: {TEXT}; border: 1px solid {BORDER}; border-radius: 8px;
            min-height: {c}px; min-width: {c}px; padding: 0 {self.gap * 2}px; font-size: {self.font}px;
        }}
        QPushButton:pressed {{ background: {BORDER}; }}
        QPushButton:checked {{ background: #1d4a78; color: #ffffff; border: 2px solid {ACCENT}; }}
        QPushButton:disabled {{ color: #6b7785; background: {PANEL}; }}
        QPushButton[role="primary"] {{ background: {ACCENT}; color: {BG}; font-weight: bold; border-color: {ACCENT}; }}
        QPushButton[role="primary"]:disabled {{ background: #2b3a4a; color: #7d8a97; border-color: #2b3a4a; }}
        QPushButton[role="nav"] {{ border-radius: 0; border: none; border-top: 3px solid transparent; background: {PANEL}; }}
        QPushButton[role="nav"]:checked {{ background: {PANEL_2}; color: {ACCENT}; border-top: 3px solid {ACCENT}; }}
        QPushButton[role="key"] {{ font-size: {self.large}px; font-weight: bold; padding: 0; }}
        QPushButton[role="keyok"] {{ background: {ACCENT}; color: {BG}; font-weight: bold; border-color: {ACCENT};
                                     padding: 0; }}
        QTableWidget {{ background: {PANEL}; gridline-color: {BORDER}; border: 1px solid {BORDER}; }}
        QTableWidget::item {{ padding: 4px; }}
        QTableWidget::item:selected {{ background: {PANEL_2}; color: {TEXT}; }}
        QHeaderView::section {{ background: {PANEL_2}; color: {MUTED}; border: none; padding: 4px;
                                font-size: {self.small}px; }}
        QScrollBar:vertical {{ width: {max(16, c // 3)}px; background: {PANEL}; }}
        QScrollBar::handle:vertical {{ background: {BORDER}; min-height: {c}px; border-radius: 4px; }}
        QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; }}
        QScrollArea {{ border: none; }}
        """
