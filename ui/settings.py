"""Settings (behind the PIN): source selection and test, hub connection test, model information from
the manifest (metrics, intended use), device identity, lock now."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QFont, QFontMetrics
from PyQt5.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QScroller,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from device.config import DeviceConfig
from device.decision import MALIGNANT, Mode
from device.model.bundle import Manifest, ModeSpec
from device.site_choice import ModelChoice
from ui import theme
from ui.background import Background
from ui.hub import mqtt_connect_test
from ui.sources import SourceChoice, candidate_sources, probe_source
from ui.theme import Theme

SECTIONS = ("Source", "Hub", "Model", "Device")


def scrolling(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(widget)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    QScroller.grabGesture(area.viewport(), QScroller.ScrollerGestureType.LeftMouseButtonGesture)
    return area


def wrapped(text: str = "", role: str | None = None) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
    if role:
        label.setProperty("role", role)
    return label


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(format_value(v) for v in value) + "]"  # e.g. a confidence interval
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)[:200]
    return str(value)


def _threshold_text(label: str, applied: float, validated: float | None) -> str:
    if validated is None or abs(applied - validated) < 1e-12:
        return f"{label} {applied * 100:.0f}%"
    return f"{label} {applied * 100:.1f}% (site setting; the model was validated with {validated * 100:.1f}%)"


def _mode_text(name: str, chosen: ModeSpec | None, validation: str | None) -> str:
    title = name.replace("_", " ").capitalize()
    if chosen is None or not chosen.figures:
        return f"{title} (not validated)"
    figures = ", ".join(
        f"{key.replace('_', ' ')} {f.value * 100:.0f}% [{f.ci95[0] * 100:.0f}–{f.ci95[1] * 100:.0f}%]" for key, f in chosen.figures.items()
    )
    return f"{title}: {figures}" + (f" ({validation})" if validation else "")


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested metrics as 'key.sub: value' lines (the manifest's metrics are free-form)."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and len(rows) < 60:
            rows.extend(flatten(value, name + "."))
        else:
            rows.append((name, format_value(value)))
    return rows[:60]


def model_text(
    manifest: Manifest | None,
    error: str | None,
    applied: dict[str, float] | None = None,
    mode: Mode | str | None = None,
    signature_checked: bool | None = None,
) -> str:
    """The Settings › Model page. ``applied``: the thresholds in use; ``mode``: the operating mode they belong to.
    A threshold is called a site setting only when it is below the one the mode was validated with."""
    if manifest is None:
        return f"<b>No model loaded.</b><br>{error or 'Loading…'}"
    spec = manifest.decision_spec()
    mode_name = str(mode or spec.default_mode)
    chosen = spec.modes.get(mode_name)
    validated = {**manifest.thresholds, **({MALIGNANT: chosen.malignant_threshold} if chosen else {})}
    applied = applied or validated
    thresholds = ", ".join(_threshold_text(k, v, validated.get(k)) for k, v in applied.items()) or "none (most probable)"
    lines = [
        f"<b>{manifest.name}</b> version {manifest.version} (created {manifest.created})",
        f"<b>Intended use:</b> {manifest.intended_use}",
        f"<b>Categories:</b> {', '.join(manifest.labels)}",
        f"<b>Operating mode:</b> {_mode_text(mode_name, chosen, spec.validation)}",
        f"<b>Operating thresholds:</b> {thresholds}",
        f"<b>Low-confidence limit:</b> {manifest.quality.min_confidence:.2f}",
        f"<b>Heat map:</b> {'available' if manifest.cam is not None else 'not provided by this model'}",
        f"<b>Model file sha256:</b> {manifest.model_sha256[:16]}…",
    ]
    if signature_checked is not None:
        lines.insert(
            1,
            "<b>Signature:</b> verified against [model] public_key"
            if signature_checked
            else f"<b style='color:{theme.DANGER}'>Signature: NOT CHECKED</b> — [model] public_key is not set, so "
            "nothing proves this model is the one the release shipped",
        )
    if manifest.metrics:
        lines.append("<b>Metrics (from the model's evaluation, as the manifest states them):</b>")
        lines.extend(f"&nbsp;&nbsp;{k}: {v}" for k, v in flatten(manifest.metrics))
    if manifest.training_data:
        lines.append("<b>Training data:</b>")
        lines.extend(f"&nbsp;&nbsp;{k}: {v}" for k, v in flatten(manifest.training_data))
    return "<br>".join(lines)


def elide(font: QFont, text: str, width: int) -> str:
    """Shorten long paths in the middle so both the start and the folder name stay readable."""
    return QFontMetrics(font).elidedText(text, Qt.TextElideMode.ElideMiddle, width)


def button_font(widget: QWidget) -> QFont:
    probe = QPushButton(widget)
    probe.ensurePolished()
    font = probe.font()
    probe.deleteLater()
    return font


class SourcePage(QWidget):
    source_chosen = pyqtSignal(str)

    def __init__(self, th: Theme, config: DeviceConfig, background: Background) -> None:
        super().__init__()
        self._config = config
        self._background = background
        self.current_spec = config.source.spec
        self.selected: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(th.gap)
        self.current = wrapped("", "muted")
        layout.addWidget(self.current)
        self._list_widget = QWidget()
        self._list = QVBoxLayout(self._list_widget)
        self._list.setSpacing(th.gap)
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.addStretch(1)
        self._group = QButtonGroup(self)
        layout.addWidget(scrolling(self._list_widget), 1)
        self.result = wrapped("", "muted")
        layout.addWidget(self.result)
        row = QHBoxLayout()
        self.rescan = QPushButton("Look again")
        self.rescan.clicked.connect(self.refresh)
        self.test = QPushButton("Test")
        self.test.clicked.connect(self._test)
        self.use = QPushButton("Use this source")
        self.use.setProperty("role", "primary")
        self.use.clicked.connect(self._use)
        for button in (self.rescan, self.test, self.use):
            row.addWidget(button, 1)
        layout.addLayout(row)
        self.choice_buttons: dict[str, QPushButton] = {}
        self._scan = 0

    def refresh(self) -> None:
        self._show_current()
        self.result.setText("Looking for capture cards and USB sticks…")
        roots = tuple(self._config.ui.source_roots)
        self._scan += 1
        scan = self._scan
        self._background.run(lambda: candidate_sources(self.current_spec, roots), lambda choices: self._show_choices(choices, scan), "source-scan")

    def _show_choices(self, choices: list[SourceChoice] | Exception, scan: int) -> None:
        if scan != self._scan:
            return  # a newer scan is on its way: never rebuild the list under the clinician's finger
        for button in self.choice_buttons.values():
            self._group.removeButton(button)
            button.deleteLater()
        self.choice_buttons = {}
        if isinstance(choices, Exception):
            self.result.setText(f"Could not list sources: {choices}")
            return
        width = max(200, self._list_widget.width() - 40)
        for choice in choices:
            button = QPushButton(elide(button_font(self), choice.title, width))
            button.setToolTip(choice.spec)
            button.setCheckable(True)
            button.setStyleSheet("text-align: left;")
            button.clicked.connect(lambda _=False, s=choice.spec: self._select(s))
            self._group.addButton(button)
            self._list.insertWidget(self._list.count() - 1, button)
            self.choice_buttons[choice.spec] = button
        self._select(self.selected if self.selected in self.choice_buttons else self.current_spec)
        self.result.setText(f"{len(choices)} source(s) found. Choose one, Test it, then Use it.")

    def _show_current(self) -> None:
        width = max(200, self.width() - 20)
        self.current.setText(elide(self.current.font(), f"Current source: {self.current_spec}", width))

    def _select(self, spec: str) -> None:
        self.selected = spec
        if spec in self.choice_buttons:
            self.choice_buttons[spec].setChecked(True)

    def _test(self) -> None:
        if not self.selected:
            return
        spec = self.selected
        self.result.setText(f"Testing {spec}…")
        self._background.run(lambda: probe_source(spec, self._config.source), self._tested, "source-test")

    def _tested(self, outcome: str | Exception) -> None:
        self.result.setText(f"Failed: {outcome}" if isinstance(outcome, Exception) else outcome)

    def _use(self) -> None:
        if self.selected:
            self.current_spec = self.selected
            self._show_current()
            self.result.setText("Source changed. Back to Live to see it.")
            self.source_chosen.emit(self.selected)


class HubPage(QWidget):
    def __init__(self, th: Theme, config: DeviceConfig, background: Background) -> None:
        super().__init__()
        self._config = config
        self._background = background
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        uplink = config.uplink
        self.info = wrapped(
            f"Broker: <b>{uplink.broker}</b> · TLS {'on' if uplink.tls else 'off'} · uplink {'enabled' if uplink.enabled else 'disabled'}"
        )
        self.backlog = wrapped("", "muted")
        self.result = wrapped("Tap Test to try a connection to the hub's broker.")
        self.test = QPushButton("Test hub connection")
        self.test.setProperty("role", "primary")
        self.test.clicked.connect(self._test)
        for widget in (self.info, self.backlog, self.result):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addWidget(self.test)

    def set_backlog(self, pending: int, oldest: str | None) -> None:
        since = f", oldest from {oldest[:16].replace('T', ' ')} UTC" if oldest else ""
        self.backlog.setText(f"{pending} result(s) waiting to be received by the hub{since}.")

    def _test(self) -> None:
        self.result.setText(f"Connecting to {self._config.uplink.broker}…")
        self.test.setEnabled(False)
        self._background.run(lambda: mqtt_connect_test(self._config.uplink), self._tested, "hub-test")

    def _tested(self, outcome: tuple[bool, str] | Exception) -> None:
        self.test.setEnabled(True)
        if isinstance(outcome, Exception):
            self.result.setText(f"<b>Failed:</b> {outcome}")
        else:
            ok, detail = outcome
            self.result.setText(f"<b>{'Connected' if ok else 'Failed'}:</b> {detail}")


class SettingsScreen(QWidget):
    lock_requested = pyqtSignal()
    teach_requested = pyqtSignal()  # Settings › Model › Teach this scanner (ui/teach.py)

    def __init__(self, th: Theme, config: DeviceConfig, background: Background, screen_size: str) -> None:
        super().__init__()
        self._config = config
        outer = QHBoxLayout(self)
        outer.setContentsMargins(th.gap, th.gap, th.gap, th.gap)
        outer.setSpacing(th.gap * 2)
        nav = QVBoxLayout()
        nav.setSpacing(th.gap)
        self.section_buttons: dict[str, QPushButton] = {}
        group = QButtonGroup(self)
        self.pages = QStackedWidget()
        self.source = SourcePage(th, config, background)
        self.hub = HubPage(th, config, background)
        self.model = wrapped(model_text(None, None))
        self.model.setTextFormat(Qt.TextFormat.RichText)
        self.model.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.device = wrapped("")
        self.device.setTextFormat(Qt.TextFormat.RichText)
        self.device.setAlignment(Qt.AlignmentFlag.AlignTop)
        model_page = QWidget()
        model_column = QVBoxLayout(model_page)
        model_column.setContentsMargins(0, 0, 0, 0)
        model_column.addWidget(scrolling(self.model), 1)
        self.site_choice = wrapped("")  # the site bundle chosen on the device (device/site_choice.py), or why not
        self.site_choice.setTextFormat(Qt.TextFormat.RichText)
        self.site_choice.setVisible(False)
        model_column.addWidget(self.site_choice)
        self.teach = QPushButton("Teach this scanner…")
        self.teach.clicked.connect(self.teach_requested)
        model_column.addWidget(self.teach)
        pages = {"Source": self.source, "Hub": self.hub, "Model": model_page, "Device": scrolling(self.device)}
        for name in SECTIONS:
            button = QPushButton(name)
            button.setCheckable(True)
            button.clicked.connect(lambda _=False, n=name: self.show_section(n))
            group.addButton(button)
            nav.addWidget(button)
            self.section_buttons[name] = button
            self.pages.addWidget(pages[name])
        self._pages = pages
        nav.addStretch(1)
        self.lock = QPushButton("Lock")
        self.lock.clicked.connect(self.lock_requested)
        nav.addWidget(self.lock)
        nav_widget = QWidget()
        nav_widget.setLayout(nav)
        nav_widget.setFixedWidth(th.control * 3)
        outer.addWidget(nav_widget)
        outer.addWidget(self.pages, 1)
        self.set_device_info(screen_size)
        self.show_section("Source", refresh=False)

    def show_section(self, name: str, refresh: bool = True) -> None:
        self.section_buttons[name].setChecked(True)
        self.pages.setCurrentWidget(self._pages[name])
        if name == "Source" and refresh:
            self.source.refresh()

    def show_page(self, page: QWidget) -> None:
        """A page reached from a section (Settings › Model › Teach this scanner); its section stays lit."""
        if self.pages.indexOf(page) < 0:
            self.pages.addWidget(page)
        self.pages.setCurrentWidget(page)

    def set_model(
        self,
        manifest: Manifest | None,
        error: str | None,
        thresholds: dict[str, float] | None = None,
        mode: Mode | str | None = None,
        signature_checked: bool | None = None,
    ) -> None:
        self.model.setText(model_text(manifest, error, thresholds, mode, signature_checked))

    def set_site_choice(self, choice: ModelChoice | None) -> None:
        """Below the model: the site bundle in use, or — in warning colour — why the recorded one was not used."""
        if choice is None or (choice.site is None and choice.warning is None):
            self.site_choice.setVisible(False)
            return
        if choice.warning is not None:
            self.site_choice.setText(f"<b style='color:{theme.WARN}'>Site bundle not used:</b> {escape(choice.warning)}")
        elif choice.site is not None:  # (neither a site nor a warning returned above)
            self.site_choice.setText(
                f"<b>Site bundle in use</b> (chosen {escape(choice.site.chosen_at)}, kept in "
                f"{escape(str(choice.record))}), made from {escape(choice.site.base.text())}"
            )
        self.site_choice.setVisible(True)

    def set_device_info(self, screen_size: str) -> None:
        from device import __version__

        device = self._config.device
        self.device.setText(
            "<br>".join(
                [
                    f"<b>Device id:</b> {device.id}",
                    f"<b>Site:</b> {device.site}",
                    f"<b>Software:</b> sonopi {__version__}",
                    f"<b>Results database:</b> {self._config.store_path}",
                    f"<b>Screen:</b> {screen_size}",
                    f"<b>Idle lock:</b> after {self._config.ui.idle_lock_s} s",
                ]
            )
        )
