"""The result card (real widgets, the real window, the shipped model, the v1 bundle as an old one and a format-3 copy, offscreen): the
headline is the category in clinician wording with p(malignant), the mode and its threshold, and the mode's
validated figures or "not validated"; an inconclusive result shows the reason only (no bars, no numbers, no heat
map); the heat map is offered for suspicious results only, with its fixed-scale legend. At 800x480 and 1280x720,
with fault banners up, no text of the card is cut or drawn over another (issue 14, defect 6). Screenshots are
written to build/card-screens/ for a person to look at."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import QPoint, QRect
from PyQt5.QtWidgets import QLabel, QWidget

from device.decision import Category
from device.demo import write_demo_frames
from device.engine import Classification, heat_scale
from tests.conftest import REPO
from tests.device.model.test_bundle_format3 import format3_copy
from ui import banners
from ui.layout_check import layout_problems
from ui.result_card import HEADLINES, HEAT_ONLY_SUSPICIOUS, ResultCard, percent_pair
from ui.screenshots import open_window, screenshot_config, spin, spin_until

SHOTS = REPO / "build" / "card-screens"
SIZES = [(800, 480), (1280, 720)]
# probabilities (normal, benign, malignant) that give each category in the balanced modes used here
CASES = {
    Category.NO_LESION: (0.93, 0.065, 0.005),
    Category.LOW_SUSPICION: (0.2, 0.795, 0.005),
    Category.SUSPICIOUS: (0.05, 0.55, 0.40),
}


def _rect(widget: QWidget, root: QWidget) -> QRect:
    return QRect(widget.mapTo(root, QPoint(0, 0)), widget.size())


def card_text_problems(card: ResultCard) -> list[str]:
    """Every visible text element of the card: not cut, inside its parent's visible area, and not over another."""
    problems: list[str] = []
    shown = [w for w in card.findChildren(QWidget) if w.isVisible() and w.parentWidget() in (card, card.body)]
    texts = [w for w in shown if not isinstance(w, QLabel) or w.text()]
    for w in texts:
        if isinstance(w, QLabel) and w.wordWrap() and w.height() < w.heightForWidth(w.width()) - 2:
            problems.append(f"{w.text()[:40]!r} cut: {w.height()} px high, needs {w.heightForWidth(w.width())}")
        holder = w.parentWidget()
        if not holder.rect().adjusted(-1, -1, 1, 1).contains(QRect(w.pos(), w.size())):
            problems.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r:.40} outside its area")
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if a.parentWidget() is b.parentWidget():
                overlap = _rect(a, card).intersected(_rect(b, card))
                if overlap.width() > 1 and overlap.height() > 1:
                    problems.append(f"{type(a).__name__} overlaps {type(b).__name__}")
    if not card.rect().contains(_rect(card.p_text, card)) and card.p_text.isVisible():
        problems.append("p(malignant) line outside the card")
    return problems


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, shipped_bundle_dir: Path, classifier_bundle_dir: Path, v1_bundle_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("card-bundles")
    format3 = format3_copy(classifier_bundle_dir, root / "format3").path
    return {"shipped": shipped_bundle_dir, "old": v1_bundle_dir, "format3": format3}


def _window(qtbot, tmp_path: Path, bundle: Path, size: tuple[int, int]):
    frames = tmp_path / "usb" / "frames"
    write_demo_frames(frames, 2)
    window = open_window(screenshot_config(tmp_path, bundle, frames), size)
    qtbot.addWidget(window)
    spin_until(lambda: window.services.analysis.ready, 120, "the model")
    spin_until(lambda: window.live.view.frame is not None, 30, "a frame")
    window.first_run.close_overlay()
    window.go("Live")
    return window


def _variant(base: Classification, classifier, probabilities: tuple[float, float, float] | None, reasons: tuple[str, ...] = ()) -> Classification:
    """``base`` (a real classification) with other probabilities, judged by the classifier's own rule."""
    probs = dict(zip(classifier.manifest.labels, probabilities)) if probabilities else base.probabilities
    assessment = classifier.assess(probs, inconclusive=bool(reasons))
    return dataclasses.replace(
        base,
        probabilities=probs,
        assessment=assessment,
        decision=assessment.label,
        label=None if reasons else assessment.label,
        inconclusive=bool(reasons),
        reasons=reasons,
    )


def _shoot(window, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(SHOTS / f"{window.width()}x{window.height()}-{name}.png"))


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
@pytest.mark.parametrize("which", ["old", "format3"])
def test_the_card_says_the_category_and_fits_with_banners_up(qtbot, tmp_path: Path, bundles, which: str, size: tuple[int, int]) -> None:
    window = _window(qtbot, tmp_path, bundles[which], size)
    card, classifier = window.live.card, window.services.analysis.classifier
    try:
        base = classifier.classify(window.live.view.frame.image, heatmap=True)
        window.banners.show_fault(banners.source_fault("the USB stick was removed"))
        window.banners.show_fault(banners.hub_fault("the hub broker is not reachable"))
        spin(0.2)
        for category, probabilities in CASES.items():
            result = _variant(base, classifier, probabilities)
            assert result.category is category
            suspicious = category is Category.SUSPICIOUS
            card.show_result(result, heatmap_available=suspicious)
            if suspicious:
                card.heatmap_button.click()
            spin(0.1)
            d = result.assessment
            p_text, t_text = percent_pair(d.p_malignant, d.malignant_threshold)
            assert card.headline.text() == HEADLINES[category]
            assert card.p_text.text() == f"p(malignant) {p_text}"
            assert card.threshold.text() == f"Judged in Balanced mode: suspicious at ≥ {t_text}"
            if which == "old":
                assert card.figures.text() == "Balanced mode: not validated"
                assert card.rate.text() == "Malignancy rate in this category: not validated"
            else:
                assert card.figures.text().startswith(
                    "Validated (test fixture figures, not a validation): sensitivity 92% (89–94%), specificity 58% (55–61%)"
                )
                expected = "60% (56–64%), n = 900" if suspicious else "not validated"
                assert card.rate.text() == f"Malignancy rate in this category: {expected}"
            assert card.heatmap_button.isVisible() == suspicious and card.legend.isVisible() == suspicious
            assert card.heat_note.isVisible() == (not suspicious) and card.heat_note.text() == HEAT_ONLY_SUSPICIOUS
            assert "%" not in card.headline.text() and "Malignant" not in card.headline.text()
            assert layout_problems(window) == [], category
            assert card_text_problems(card) == [], category
            _shoot(window, f"{which}-{category.value}-banners")
            if suspicious:
                card.heatmap_button.click()

        live = _variant(base, classifier, CASES[Category.LOW_SUSPICION])  # the live score, as the Live screen shows it
        card.set_live_mode(True)
        card.set_gauge(live.p_malignant, live.assessment.malignant_threshold)
        card.show_result(live, live=True)
        spin(0.1)
        _shoot(window, f"{which}-live-banners")
        assert card.gauge.isVisible() and "not stored" in card.gauge_caption.text() and not card.caption.isVisible()
        assert layout_problems(window) == [] and card_text_problems(card) == []
        card.set_live_mode(False)

        unfit = _variant(base, classifier, CASES[Category.SUSPICIOUS], reasons=("colour",))
        card.show_result(unfit, heatmap_available=True)
        spin(0.1)
        assert card.headline.text() == "Inconclusive — rescan" and "colour" in card.detail.text().lower()
        assert not any(
            w.isVisible()
            for w in (*card.bars.values(), card.p_text, card.threshold, card.figures, card.rate, card.heatmap_button, card.legend, card.heat_note)
        )
        assert not re.search(r"\d+(\.\d+)?%", card.detail.text())  # the reason only: no probabilities
        assert layout_problems(window) == [] and card_text_problems(card) == []
        _shoot(window, f"{which}-inconclusive-banners")
    finally:
        window.shutdown()


def test_a_real_suspicious_result_shows_its_heat_map_with_the_legend(qtbot, tmp_path: Path, bundles) -> None:
    """The real model on a real frame, through the Live screen's own Analyse path when it judges it suspicious."""
    window = _window(qtbot, tmp_path, bundles["shipped"], (800, 480))
    classifier = window.services.analysis.classifier
    try:
        result = classifier.classify(window.live.view.frame.image, heatmap=True)
        if result.category is not Category.SUSPICIOUS:
            pytest.skip(f"the demo frame is {result.category}, not suspicious, with this model")
        assert result.heatmap is not None
        assert int(result.heatmap.max()) <= round(255 * float(heat_scale(result.p_malignant))) + 1  # the fixed scale
        window.live.view.set_heatmap(result.crop, result.heatmap)
        window.live.card.show_result(result, heatmap_available=True)
        window.live.card.heatmap_button.click()
        spin(0.2)
        assert window.live.view.heatmap_visible and window.live.card.legend.isVisible()
        assert card_text_problems(window.live.card) == []
        _shoot(window, "shipped-real-suspicious-heatmap")
    finally:
        window.shutdown()
