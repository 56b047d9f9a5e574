"""The result card: what the model suggests for a frame, with calibrated probabilities as bars,
the malignant threshold, the heat-map toggle and (in live analysis) a smoothed malignant gauge.
An inconclusive result shows only that and the reason: no probabilities, no threshold, no heat map.

Wording never states a diagnosis: it reports what the model suggests, or asks for a rescan."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5.QtCore import QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QPainter, QPaintEvent, QPen
from PyQt5.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from device.engine import Classification
from device.results import ResultRecord
from ui import theme
from ui.theme import Theme

MALIGNANT = "malignant"

REASON_TEXT = {
    "blank": "the image is blank or too dark",
    "saturated": "the image is saturated (too bright)",
    "colour": "colour (Doppler) or a photo detected",
    "too_small": "the region is too small",
    "low_confidence": "the model is not confident",
    "uncertain": "the model is uncertain between categories",
}


def reason_text(reason: str) -> str:
    """A clinician-readable reason; unknown codes are shown as they are (they are already words)."""
    key = reason.split(":", 1)[0].strip()
    return REASON_TEXT.get(key, reason.replace("_", " "))


def pretty(label: str) -> str:
    return label.replace("_", " ").capitalize()


class ProbabilityBar(QWidget):
    """One class: name, a bar for its calibrated probability, an optional threshold marker."""

    def __init__(self, label: str, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.value = 0.0
        self.threshold: float | None = None
        self._th = th
        self.setMinimumHeight(max(28, th.font + 12))
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def set_value(self, value: float, threshold: float | None) -> None:
        self.value, self.threshold = max(0.0, min(1.0, value)), threshold
        self.update()

    def text(self) -> str:
        return f"{pretty(self.label)} {self.value * 100:.0f}%"

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        font = QFont(self.font())
        font.setPixelSize(self._th.small)
        painter.setFont(font)
        name_w = int(self.width() * 0.36)
        pct_w = int(self._th.small * 3.2)
        bar = QRectF(name_w, 5, max(10, self.width() - name_w - pct_w - 6), self.height() - 10)
        painter.setPen(QColor(theme.TEXT))
        painter.drawText(QRectF(0, 0, name_w - 6, self.height()), Qt.AlignVCenter | Qt.AlignLeft, pretty(self.label))
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(theme.PANEL_2))
        painter.drawRoundedRect(bar, 4, 4)
        filled = QRectF(bar.left(), bar.top(), bar.width() * self.value, bar.height())
        painter.setBrush(QColor(theme.label_colour(self.label)))
        painter.drawRoundedRect(filled, 4, 4)
        if self.threshold is not None:
            x = bar.left() + bar.width() * self.threshold
            painter.setPen(QPen(QColor(theme.TEXT), 3))
            painter.drawLine(int(x), int(bar.top()) - 4, int(x), int(bar.bottom()) + 4)
        painter.setPen(QColor(theme.TEXT))
        painter.drawText(QRectF(bar.right() + 4, 0, pct_w + 2, self.height()), Qt.AlignVCenter | Qt.AlignRight,
                         f"{self.value * 100:.0f}%")


class Gauge(QWidget):
    """The smoothed malignant probability in live analysis: a big figure over a bar with the threshold."""

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.value: float | None = None
        self.threshold: float | None = None
        self.setMinimumHeight(th.huge + 30)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def set_value(self, value: float | None, threshold: float | None) -> None:
        self.value, self.threshold = value, threshold
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        above = self.value is not None and self.threshold is not None and self.value >= self.threshold
        colour = QColor(theme.DANGER if above else theme.TEXT)
        font = QFont(self.font())
        font.setPixelSize(self._th.huge)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(colour)
        figure = "—" if self.value is None else f"{self.value * 100:.0f}%"
        painter.drawText(QRectF(0, 0, self.width(), self._th.huge + 6), Qt.AlignLeft | Qt.AlignVCenter, figure)
        bar = QRectF(0, self._th.huge + 10, self.width(), 16)
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(theme.PANEL_2))
        painter.drawRoundedRect(bar, 4, 4)
        if self.value is not None:
            painter.setBrush(QColor(theme.DANGER if above else theme.ACCENT))
            painter.drawRoundedRect(QRectF(bar.left(), bar.top(), bar.width() * self.value, bar.height()), 4, 4)
        if self.threshold is not None:
            x = bar.left() + bar.width() * self.threshold
            painter.setPen(QPen(QColor(theme.TEXT), 3))
            painter.drawLine(int(x), int(bar.top()) - 5, int(x), int(bar.bottom()) + 5)


@dataclass(frozen=True)
class CardText:
    caption: str
    headline: str
    detail: str
    colour: str


def describe(classification: Classification, stored: ResultRecord | None, live: bool) -> CardText:
    """The words on the card for one classification."""
    if classification.inconclusive:
        reasons = "; ".join(reason_text(r) for r in classification.reasons) or "quality check failed"
        return CardText("Model output", "Inconclusive — rescan", f"Reason: {reasons}", theme.WARN)
    label = classification.label or classification.top_label
    if live:
        caption = "Live estimate — not stored"
    elif stored is not None:
        caption = f"Model suggests · stored #{stored.seq}"
    else:
        caption = "Model suggests"
    return CardText(caption, pretty(label), decision_detail(classification, label), theme.label_colour(label))


def decision_detail(classification: Classification, label: str) -> str:
    """Why this label: the most likely class, or a class flagged because it reached the model's
    operating threshold (set for high sensitivity) although another class is more likely."""
    top = classification.top_label
    threshold = classification.thresholds.get(label)
    if label != top and threshold is not None:
        return f"Flagged by the {threshold:.0%} {label} threshold (set for sensitivity); {top} is more likely"
    return "Most likely category"


class ResultCard(QFrame):
    heatmap_toggled = pyqtSignal(bool)

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("role", "panel")
        self._th = th
        self.labels: tuple[str, ...] = ()
        self.classification: Classification | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(th.gap * 2, th.gap, th.gap * 2, th.gap)
        layout.setSpacing(max(2, th.gap // 2))
        self.gauge_caption = QLabel("Live malignant score")
        self.gauge_caption.setProperty("role", "muted")
        self.gauge = Gauge(th)
        self.caption = QLabel("No result yet")
        self.caption.setProperty("role", "muted")
        self.headline = QLabel("Freeze, then Analyse")
        self.headline.setProperty("role", "heading")
        self.headline.setWordWrap(True)
        self.detail = QLabel("Draw a region with your finger to analyse only that area.")
        self.detail.setProperty("role", "muted")
        self.detail.setWordWrap(True)
        self.bars_box = QVBoxLayout()
        self.bars_box.setSpacing(2)
        self.bars: dict[str, ProbabilityBar] = {}
        self.threshold = QLabel("")
        self.threshold.setProperty("role", "muted")
        self.threshold.setWordWrap(True)
        self.heatmap_button = QPushButton("Heat map")
        self.heatmap_button.setCheckable(True)
        self.heatmap_button.toggled.connect(self.heatmap_toggled)
        self.heatmap_button.hide()
        for widget in (self.gauge_caption, self.gauge, self.caption, self.headline, self.detail):
            layout.addWidget(widget)
        layout.addLayout(self.bars_box)
        layout.addWidget(self.threshold)
        layout.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.heatmap_button)
        layout.addLayout(row)
        self.set_live_mode(False)

    def set_labels(self, labels: tuple[str, ...], thresholds: dict[str, float]) -> None:
        """Build one bar per class (from the model manifest)."""
        for bar in self.bars.values():
            bar.deleteLater()
        self.bars = {}
        self.labels = labels
        for label in labels:
            bar = ProbabilityBar(label, self._th)
            bar.set_value(0.0, thresholds.get(label))
            self.bars[label] = bar
            self.bars_box.addWidget(bar)
        self._set_threshold_text(thresholds)

    def _set_threshold_text(self, thresholds: dict[str, float]) -> None:
        if MALIGNANT in thresholds:
            self.threshold.setText(f"Malignant threshold (model): {thresholds[MALIGNANT] * 100:.0f}% (white line)")
        else:
            self.threshold.setText("")

    def set_live_mode(self, on: bool) -> None:
        self.gauge_caption.setVisible(on)
        self.gauge.setVisible(on)
        self.detail.setVisible(not on)  # room for the gauge on the 7" screen
        if on:
            self.gauge.set_value(None, None)

    def set_gauge(self, value: float | None, threshold: float | None) -> None:
        self.gauge.set_value(value, threshold)

    def show_result(self, classification: Classification, stored: ResultRecord | None = None, live: bool = False,
                    heatmap_available: bool = False) -> None:
        self.classification = classification
        if tuple(classification.probabilities) != self.labels:
            self.set_labels(tuple(classification.probabilities), classification.thresholds)
        text = describe(classification, stored, live)
        self.caption.setText(text.caption)
        self.headline.setText(text.headline)
        self.headline.setStyleSheet(f"color: {text.colour};")
        self.detail.setText(text.detail)
        conclusive = not classification.inconclusive  # an unfit frame's probabilities mean nothing: not shown
        for label, bar in self.bars.items():
            bar.set_value(classification.probabilities.get(label, 0.0), classification.thresholds.get(label))
            bar.setVisible(conclusive)
        self._set_threshold_text(classification.thresholds)
        self.threshold.setVisible(conclusive)
        heatmap_available = heatmap_available and conclusive
        self.heatmap_button.setVisible(heatmap_available)
        if not heatmap_available:
            self.heatmap_button.setChecked(False)

    def clear(self, headline: str = "Freeze, then Analyse", detail: str = "") -> None:
        self.classification = None
        self.caption.setText("No result yet")
        self.headline.setText(headline)
        self.headline.setStyleSheet("")
        self.detail.setText(detail or "Draw a region with your finger to analyse only that area.")
        for bar in self.bars.values():
            bar.set_value(0.0, bar.threshold)
            bar.setVisible(True)
        self.threshold.setVisible(True)
        self.heatmap_button.setChecked(False)
        self.heatmap_button.hide()
