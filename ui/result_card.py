"""The result card: the decision rule's category in clinician wording, p(malignant), the operating mode it was
judged in with that mode's validated figures (or "not validated"), the heat-map toggle with its fixed-scale legend
(suspicious results only), the lesion outline's toggle, size and shown descriptors (when the bundle has a
segmentation model: lesion_lines) and, in live analysis, a smoothed malignant gauge. An inconclusive result shows only that
and the reason: no probabilities, no thresholds, no heat map. The body scrolls when a banner leaves it little room,
so no text is ever cut or drawn over another.

Wording never states a diagnosis: it reports what the model suggests, or asks for a rescan. The headline is the
category (device/decision.py), never the top class's probability next to a label."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PyQt5.QtCore import QRectF, QSize, Qt, pyqtSignal
from PyQt5.QtGui import QColor, QFont, QImage, QPainter, QPaintEvent, QPen
from PyQt5.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from device.close_up import CloseUpCheck
from device.decision import Category, Decision, Mode
from device.engine import Classification
from device.lesion_record import OUTLINE_UNDER_NO_LESION_SHORT, LesionRecord
from device.model.bundle import Figure
from device.results import ResultRecord
from ui import theme
from ui.frames import heatmap_rgb
from ui.theme import Theme

MALIGNANT = "malignant"
LESION = "lesion"

REASON_TEXT = {
    "blank": "the image is blank or too dark",
    "saturated": "the image is saturated (too bright)",
    "colour": "colour (Doppler) or a photo detected",
    "too_small": "the region is too small",
    "low_confidence": "the model is not confident",
    "uncertain": "the model is uncertain between categories",
}

HEADLINES = {
    Category.NO_LESION: "No lesion seen",
    Category.LOW_SUSPICION: "Lesion — low suspicion",
    Category.SUSPICIOUS: "Suspicious — refer",
    Category.INCONCLUSIVE: "Inconclusive — rescan",
}
COLOURS = {Category.NO_LESION: theme.OK, Category.LOW_SUSPICION: theme.INFO, Category.SUSPICIOUS: theme.DANGER, Category.INCONCLUSIVE: theme.WARN}
MODE_NAMES = {Mode.HIGH_SENSITIVITY: "High sensitivity", Mode.BALANCED: "Balanced", Mode.HIGH_SPECIFICITY: "High specificity"}
HEAT_ONLY_SUSPICIOUS = "Heat map: shown for suspicious results only"
IDLE_HINT = "Or freeze and tap the lesion: only the area around it is analysed (a drag draws a region)."
DESCRIPTOR_NAMES = {"orientation": "Orientation", "shape": "Shape", "margin": "Margin"}
DESCRIPTOR_WORDS = {"not_parallel": "not parallel", "not_circumscribed": "not circumscribed"}


def lesion_of(classification: Classification, stored: ResultRecord | None) -> LesionRecord | None:
    """The outline the card shows: the stored one, else the classification's (None: no segmentation model)."""
    if stored is not None:
        return stored.lesion
    found = classification.lesion
    return LesionRecord.from_json(found.to_json(), "lesion outline") if found is not None else None


def lesion_size_text(lesion: LesionRecord | None, category: Category | None = None) -> str:
    """The card's outline line (:meth:`LesionRecord.headline`): "" with no segmentation model too."""
    return lesion.headline(category is Category.NO_LESION) if lesion is not None else ""


def lesion_size_short(lesion: LesionRecord | None, category: Category | None = None) -> str:
    """The size on one short line for History and the exam summary (per frame): ``"42.7 × 14.5 mm"``,
    ``"1234 px"`` (the uncalibrated area), ``"no outline"``; "" with no segmentation model or an inconclusive result. Under
    *No lesion seen* an outline is a region to look at again, as the card says: :data:`device.lesion_record.OUTLINE_UNDER_NO_LESION_SHORT`."""
    if lesion is None or lesion.withheld is not None:
        return ""
    if not lesion.found:
        return "no outline"
    if category is Category.NO_LESION:
        return OUTLINE_UNDER_NO_LESION_SHORT
    if lesion.width_mm is not None and lesion.depth_mm is not None:
        return f"{lesion.width_mm:.1f} × {lesion.depth_mm:.1f} mm"
    return f"{lesion.area_px or 0:.0f} px"  # the card's uncalibrated area: px, never mm; short enough for the 7" panel's row


def lesion_descriptor_text(lesion: LesionRecord | None, category: Category | None = None) -> str:
    """Only the descriptors the display rule shows (docs/lesion-outline.md), labelled automatic; none for a region
    under *No lesion seen* (not a lesion to describe)."""
    if lesion is None:
        return ""
    shown = lesion.descriptors_to_show(no_lesion_seen=category is Category.NO_LESION)
    return "; ".join(f"{DESCRIPTOR_NAMES[name]} (automatic): {DESCRIPTOR_WORDS.get(value, value)}" for name, value in shown.items())


def reason_text(reason: str) -> str:
    """A clinician-readable reason; unknown codes are shown as they are (they are already words)."""
    key = reason.split(":", 1)[0].strip()
    return REASON_TEXT.get(key, reason.replace("_", " "))


def pretty(label: str) -> str:
    return label.replace("_", " ").capitalize()


def headline(category: str | None) -> str:
    if category is None:
        return "—"
    try:
        return HEADLINES[Category(category)]
    except ValueError:
        return "—"


def mode_name(mode: str | None) -> str:
    if mode is None:
        return "—"
    try:
        return MODE_NAMES[Mode(mode)]
    except ValueError:
        return str(mode or "—")


def percent(value: float, decimals: int) -> str:
    return f"{value * 100:.{decimals}f}%"


def percent_pair(p: float, threshold: float) -> tuple[str, str]:
    """``p`` and ``threshold`` as percentages that compare on screen as they do in fact: one decimal below 10 %,
    none above, more when rounding would make a value below the threshold look equal to it (or the reverse)."""
    base = 1 if min(p, threshold) < 0.1 else 0
    for decimals in range(base, 5):
        if (round(p * 100, decimals) >= round(threshold * 100, decimals)) == (p >= threshold):
            return percent(p, decimals), percent(threshold, decimals)
    return percent(p, 4), percent(threshold, 4)


def figure_text(f: Figure) -> str:
    low, high = f.ci95
    return f"{f.value * 100:.0f}% ({low * 100:.0f}–{high * 100:.0f}%)"


@dataclass(frozen=True)
class CardText:
    caption: str
    headline: str
    detail: str
    colour: str
    p_malignant: str = ""  # "p(malignant) 12%"
    threshold: str = ""  # "Balanced mode: suspicious at ≥ 3%"
    figures: str = ""  # the mode's validated sensitivity/specificity, or "not validated"
    rate: str = ""  # the category's malignancy rate on held-out sources, or "not validated"
    close_up: str = ""  # the result is the whole scan's: the clinician's region alone read less (device/close_up.py)


def describe(classification: Classification, stored: ResultRecord | None, live: bool) -> CardText:
    """The words on the card for one classification."""
    caption = "Live estimate — not stored" if live else (f"Model suggests · stored #{stored.seq}" if stored is not None else "Model suggests")
    d = classification.assessment
    if classification.inconclusive or d is None or d.inconclusive:
        reasons = "; ".join(reason_text(r) for r in classification.reasons) or "quality check failed"
        return CardText(caption if live else "Model output", HEADLINES[Category.INCONCLUSIVE], f"Reason: {reasons}", theme.WARN)
    p_text, t_text = percent_pair(d.p_malignant, d.malignant_threshold)
    threshold = f"Judged in {mode_name(d.mode)} mode: suspicious at ≥ {t_text}"
    if d.site_threshold and d.spec is not None:  # a site threshold is judged against the spec's
        validated = d.spec.mode(d.mode).malignant_threshold
        threshold += f" (site setting; validated at {percent_pair(validated, validated)[1]})"
    check = classification.close_up
    close_up = close_up_text(check, d.malignant_threshold) if check is not None and check.raised else ""
    return CardText(
        caption,
        HEADLINES[d.category],
        lesion_text(d),
        COLOURS[d.category],
        f"p(malignant) {p_text}",
        threshold,
        figures_text(d),
        rate_text(d),
        close_up,
    )


def close_up_text(check: CloseUpCheck, malignant_threshold: float) -> str:
    """Why a result with the clinician's region is the whole scan's (device/close_up.py): the region alone read less."""
    alone = check.close_up
    if alone.category is Category.INCONCLUSIVE:
        return "Whole-scan result. Your region alone was inconclusive."
    # three lines at 800x480: what the card's scroll area shows below an exam's lesion buttons; the figure in brackets
    # is the region's p(malignant), as the line above it is the scan's
    p_text = percent_pair(alone.p_malignant, malignant_threshold)[0]
    return f"Whole-scan result. Your region alone: {HEADLINES[alone.category].lower()} ({p_text})."


def lesion_text(d: Decision) -> str:
    p_text, t_text = percent_pair(d.p_lesion, d.lesion_threshold)
    seen = "lesion seen" if d.p_lesion >= d.lesion_threshold else "no lesion seen"
    return f"p(lesion) {p_text}: {seen} (at ≥ {t_text})"


def figures_text(d: Decision) -> str:
    mode = d.spec.mode(d.mode) if d.spec is not None else None
    sens, spec = (mode.figure("sensitivity"), mode.figure("specificity")) if mode else (None, None)
    if d.spec is None or (sens is None and spec is None):
        return f"{mode_name(d.mode)} mode: not validated"
    parts = [f"{name} {figure_text(f) if f else 'not validated'}" for name, f in (("sensitivity", sens), ("specificity", spec))]
    where = f" ({d.spec.validation})" if d.spec.validation else ""
    return f"Validated{where}: " + ", ".join(parts)


def rate_text(d: Decision) -> str:
    mode = d.spec.mode(d.mode) if d.spec is not None else None
    rate = mode.category_figure(d.category.value) if mode else None
    if rate is None:
        return "Malignancy rate in this category: not validated"
    return f"Malignancy rate in this category: {figure_text(rate)}, n = {rate.n}"


class ProbabilityBar(QWidget):
    """One class: name, a bar for its calibrated probability, an optional threshold marker."""

    def __init__(self, label: str, th: Theme, parent: QWidget | None = None, colour: str | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.colour = colour or theme.label_colour(label)
        self.value = 0.0
        self.threshold: float | None = None
        self._th = th
        self.setMinimumHeight(max(28, th.font + 12))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_value(self, value: float, threshold: float | None) -> None:
        self.value, self.threshold = max(0.0, min(1.0, value)), threshold
        self.update()

    def text(self) -> str:
        return f"{pretty(self.label)} {self.value_text()}"

    def value_text(self) -> str:
        return percent_pair(self.value, self.threshold)[0] if self.threshold is not None else percent(self.value, 0)

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPixelSize(self._th.small)
        painter.setFont(font)
        name_w = int(self.width() * 0.36)
        pct_w = int(self._th.small * 3.2)
        bar = QRectF(name_w, 5, max(10, self.width() - name_w - pct_w - 6), self.height() - 10)
        painter.setPen(QColor(theme.TEXT))
        painter.drawText(QRectF(0, 0, name_w - 6, self.height()), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, pretty(self.label))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.PANEL_2))
        painter.drawRoundedRect(bar, 4, 4)
        filled = QRectF(bar.left(), bar.top(), bar.width() * self.value, bar.height())
        painter.setBrush(QColor(self.colour))
        painter.drawRoundedRect(filled, 4, 4)
        if self.threshold is not None:
            x = bar.left() + bar.width() * self.threshold
            painter.setPen(QPen(QColor(theme.TEXT), 3))
            painter.drawLine(int(x), int(bar.top()) - 4, int(x), int(bar.bottom()) + 4)
        painter.setPen(QColor(theme.TEXT))
        painter.drawText(
            QRectF(bar.right() + 4, 0, pct_w + 2, self.height()), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, self.value_text()
        )


class Gauge(QWidget):
    """The smoothed malignant probability in live analysis: a big figure over a bar with the threshold."""

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.value: float | None = None
        self.threshold: float | None = None
        self.setMinimumHeight(th.huge + 32)  # the figure, the bar and the threshold marker below it
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(self._th.huge * 3, self.minimumHeight())

    def set_value(self, value: float | None, threshold: float | None) -> None:
        self.value, self.threshold = value, threshold
        self.update()

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        above = self.value is not None and self.threshold is not None and self.value >= self.threshold
        colour = QColor(theme.DANGER if above else theme.TEXT)
        font = QFont(self.font())
        font.setPixelSize(self._th.huge)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(colour)
        if self.value is None:
            figure = "—"
        else:
            figure = percent_pair(self.value, self.threshold)[0] if self.threshold is not None else percent(self.value, 0)
        painter.drawText(QRectF(0, 0, self.width(), self._th.huge + 6), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, figure)
        bar = QRectF(0, self._th.huge + 10, self.width(), 16)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(theme.PANEL_2))
        painter.drawRoundedRect(bar, 4, 4)
        if self.value is not None:
            painter.setBrush(QColor(theme.DANGER if above else theme.ACCENT))
            painter.drawRoundedRect(QRectF(bar.left(), bar.top(), bar.width() * self.value, bar.height()), 4, 4)
        if self.threshold is not None:
            x = bar.left() + bar.width() * self.threshold
            painter.setPen(QPen(QColor(theme.TEXT), 3))
            painter.drawLine(int(x), int(bar.top()) - 5, int(x), int(bar.bottom()) + 5)


class HeatLegend(QWidget):
    """The heat map's one fixed colour scale (device.engine.heat_scale): p(malignant) 1 % … 100 %, logarithmic,
    in the colours the view paints."""

    TICKS = ((0.01, "1%"), (0.1, "10%"), (1.0, "100%"))

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        ramp = heatmap_rgb(np.arange(256, dtype=np.uint8).reshape(1, 256))
        self._ramp = QImage(np.ascontiguousarray(ramp).data, 256, 1, 256 * 3, QImage.Format.Format_RGB888).copy()  # type: ignore[call-overload]  # PyQt5 takes any buffer (numpy's memoryview); its stubs list bytes and sip.voidptr only
        self.setMinimumHeight(th.small * 2 + 16)
        self.setMinimumWidth(th.small * 7)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def paintEvent(self, event: QPaintEvent | None) -> None:
        painter = QPainter(self)
        font = QFont(self.font())
        font.setPixelSize(self._th.small)
        painter.setFont(font)
        painter.setPen(QColor(theme.MUTED))
        line = self._th.small + 4
        painter.drawText(QRectF(0, 0, self.width(), line), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "p(malignant)")
        painter.drawImage(QRectF(0, line + 2, self.width(), 10), self._ramp)
        ticks = QRectF(0, line + 14, self.width(), line)
        metrics = painter.fontMetrics()
        room = self.width() >= sum(metrics.horizontalAdvance(t) for _, t in self.TICKS) * 1.6  # else the middle one goes
        for (_value, text), align in zip(self.TICKS, (Qt.AlignmentFlag.AlignLeft, Qt.AlignmentFlag.AlignHCenter, Qt.AlignmentFlag.AlignRight)):
            if align != Qt.AlignmentFlag.AlignHCenter or room:
                painter.drawText(ticks, align | Qt.AlignmentFlag.AlignTop, text)


def _label(text: str = "", role: str | None = "muted") -> QLabel:
    label = QLabel(text)
    if role:
        label.setProperty("role", role)
    label.setWordWrap(True)
    return label


class ResultCard(QFrame):
    heatmap_toggled = pyqtSignal(bool)
    outline_toggled = pyqtSignal(bool)

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("role", "panel")
        self._th = th
        self.labels: tuple[str, ...] = ()
        self.classification: Classification | None = None
        self._numbers = False  # a conclusive result's numbers are on the card
        layout = QVBoxLayout(self)
        layout.setContentsMargins(th.gap * 2, th.gap, th.gap * 2, th.gap)
        layout.setSpacing(max(2, th.gap // 2))
        self.gauge_caption = _label("Live p(malignant) — not stored")
        self.gauge = Gauge(th)
        self.caption = _label("No result yet")
        self.headline = _label("Freeze, then Analyse", "heading")
        self._headline_px = th.font + 3 if th.compact else th.large  # one line for the categories on the 7" panel
        self.p_text = _label("", None)
        self.p_text.setStyleSheet(f"font-size: {th.font}px; font-weight: bold;")
        for widget in (self.gauge_caption, self.gauge, self.caption, self.headline, self.p_text):
            layout.addWidget(widget)
        self.body = QWidget()
        self.body.setObjectName("cardBody")
        self.body.setStyleSheet("QWidget#cardBody { background: transparent; }")
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(max(2, th.gap // 2))
        self.threshold = _label()
        self.figures = _label()
        self.rate = _label()
        self.detail = _label(IDLE_HINT)
        self.bars: dict[str, ProbabilityBar] = {
            LESION: ProbabilityBar(LESION, th, colour=theme.INFO),
            MALIGNANT: ProbabilityBar(MALIGNANT, th, colour=theme.DANGER),
        }
        self.heat_note = _label(HEAT_ONLY_SUSPICIOUS)
        self.close_up = _label("", None)  # first in the body: why the result is the whole scan's (CardText.close_up)
        self.close_up.setStyleSheet(f"color: {theme.WARN};")
        self.close_up.hide()
        self.lesion_size = _label("", None)  # the outline's size (mm only with a known spacing), or no outline
        self.lesion_descriptors = _label()  # the shown descriptors, labelled automatic
        self.lesion: LesionRecord | None = None
        for widget in (
            self.close_up,
            self.lesion_size,
            self.lesion_descriptors,
            self.threshold,
            self.figures,
            self.rate,
            self.detail,
            *self.bars.values(),
            self.heat_note,
        ):
            body.addWidget(widget)
        body.addStretch(1)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidget(self.body)
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setStyleSheet("QScrollArea { background: transparent; }")
        viewport = self.scroll_area.viewport()
        assert viewport is not None  # a QScrollArea makes its viewport
        viewport.setAutoFillBackground(False)
        self.scroll_area.setMinimumHeight(0)  # the fixed part (headline, p(malignant)) keeps its room; the rest scrolls
        layout.addWidget(self.scroll_area, 1)
        self.heatmap_button = QPushButton("Heat map")
        self.heatmap_button.setCheckable(True)
        self.heatmap_button.toggled.connect(self.heatmap_toggled)
        self.heatmap_button.toggled.connect(self._show_legend)
        self.heatmap_button.hide()
        self.legend = HeatLegend(th)  # beside the toggle: on screen whenever the map is
        self.outline_button = QPushButton("Outline")  # the lesion outline on the frame: on until switched off
        self.outline_button.setCheckable(True)
        self.outline_button.setChecked(True)
        self.outline_button.toggled.connect(self.outline_toggled)
        self.outline_button.hide()
        self.toggles = QHBoxLayout()  # Outline and Heat map side by side; the legend beside them when it has room
        self.toggles.setSpacing(th.gap)
        self.toggles.addWidget(self.outline_button)
        self.toggles.addWidget(self.heatmap_button)
        self.toggles.addWidget(self.legend, 1)
        self.legend_row = QHBoxLayout()  # ... else (both toggles shown) on a line of its own below them
        layout.addLayout(self.toggles)
        layout.addLayout(self.legend_row)
        self._conclusive(False)
        self._show_lesion(None, None)
        self.set_live_mode(False)

    def set_labels(self, labels: tuple[str, ...], thresholds: dict[str, float]) -> None:
        """The model is ready: its labels and the malignant threshold applied (the mode's, or the site's)."""
        self.labels = labels
        if self.classification is None:  # a result on show keeps its own mode line and bars
            self.bars[MALIGNANT].set_value(0.0, thresholds.get(MALIGNANT))
            self._set_threshold_text(thresholds)

    def _set_threshold_text(self, thresholds: dict[str, float]) -> None:
        t = thresholds.get(MALIGNANT)
        self.threshold.setText("" if t is None else f"Suspicious at p(malignant) ≥ {percent_pair(t, t)[1]} (white line)")

    def set_live_mode(self, on: bool) -> None:
        self.gauge_caption.setVisible(on)
        self.gauge.setVisible(on)
        self.caption.setVisible(not on)  # the gauge's caption says it is live and not stored
        self.detail.setVisible(not on)  # room for the gauge on the 7" screen
        self.p_text.setVisible(not on and self._numbers)  # live: the gauge shows p(malignant)
        if on:
            self.gauge.set_value(None, None)

    def set_gauge(self, value: float | None, threshold: float | None) -> None:
        self.gauge.set_value(value, threshold)

    def show_result(
        self, classification: Classification, stored: ResultRecord | None = None, live: bool = False, heatmap_available: bool = False
    ) -> None:
        self.classification = classification
        text = describe(classification, stored, live)
        self.caption.setText(text.caption)
        self.headline.setText(text.headline)
        self.headline.setStyleSheet(f"color: {text.colour}; font-size: {self._headline_px}px;")
        self.detail.setText(text.detail)
        d = classification.assessment
        conclusive = not classification.inconclusive and d is not None  # an unfit frame's numbers mean nothing
        self._conclusive(conclusive)
        self._numbers = conclusive
        self.p_text.setVisible(conclusive and not self.gauge.isVisibleTo(self))  # live: the gauge shows p(malignant)
        if conclusive and d is not None:
            self.p_text.setText(text.p_malignant)
            self.threshold.setText(text.threshold)
            self.figures.setText(text.figures)
            self.rate.setText(text.rate)
            self.bars[LESION].set_value(d.p_lesion, d.lesion_threshold)
            self.bars[MALIGNANT].set_value(d.p_malignant, d.malignant_threshold)
        self.close_up.setText(text.close_up)
        self.close_up.setVisible(bool(text.close_up))
        suspicious = d is not None and conclusive and d.category is Category.SUSPICIOUS
        heatmap_available = heatmap_available and suspicious
        self.heatmap_button.setVisible(heatmap_available)
        if not heatmap_available:
            self.heatmap_button.setChecked(False)
        self.heat_note.setVisible(conclusive and not suspicious and not live)
        self._show_legend(self.heatmap_button.isChecked())
        self._show_lesion(lesion_of(classification, stored) if conclusive and not live else None, d.category if d else None)

    def _show_lesion(self, lesion: LesionRecord | None, category: Category | None) -> None:
        """The outline's lines and toggle: none without a segmentation model, for an inconclusive result (withheld)
        or a live estimate; "No lesion outlined" when the model found none; under *No lesion seen* the region is
        named as the outline model's (:meth:`LesionRecord.headline`)."""
        self.lesion = lesion
        size, descriptors = lesion_size_text(lesion, category), lesion_descriptor_text(lesion, category)
        self.lesion_size.setText(size)
        self.lesion_size.setVisible(bool(size))
        self.lesion_descriptors.setText(descriptors)
        self.lesion_descriptors.setVisible(bool(descriptors))
        self.outline_button.setVisible(lesion is not None and lesion.found)
        self._place_legend()

    def _place_legend(self) -> None:
        """Beside the Heat map toggle, or below both toggles when the Outline toggle takes the room."""
        below = not self.outline_button.isHidden()
        (self.toggles if below else self.legend_row).removeWidget(self.legend)
        if below:
            self.legend_row.addWidget(self.legend, 1)
        else:
            self.toggles.addWidget(self.legend, 1)

    def _conclusive(self, on: bool) -> None:
        self._numbers = on
        for widget in (self.p_text, self.threshold, self.figures, self.rate, *self.bars.values()):
            widget.setVisible(on)
        if not on:
            self.heat_note.hide()
            self._show_legend(False)

    def _show_legend(self, on: bool) -> None:
        on = on and not self.heatmap_button.isHidden()
        self.legend.setVisible(on)

    def clear(self, headline: str = "Freeze, then Analyse", detail: str = "") -> None:
        self.classification = None
        self.caption.setText("No result yet")
        self.headline.setText(headline)
        self.headline.setStyleSheet(f"font-size: {self._headline_px}px;")
        self.detail.setText(detail or IDLE_HINT)
        self.close_up.hide()
        self._conclusive(False)
        self.heatmap_button.setChecked(False)
        self.heatmap_button.hide()
        self._show_lesion(None, None)
