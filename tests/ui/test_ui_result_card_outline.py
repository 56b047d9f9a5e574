"""The result card's lesion outline (real window, the shipped model packed with the tiny real segmentation model,
offscreen): the size in mm only with a known spacing, else "uncalibrated: N px"; only the descriptors the display
rule shows, labelled automatic; "No lesion outlined" when none was found; nothing for an inconclusive result or a
bundle without a segmentation model; the Outline toggle (beside the heat map's, the same button) shows and hides
the polygon on the frame, drawn by the Live screen's own Analyse path. At 800x480 and 1280x720 with fault banners
up no text of the card is cut or drawn over another. Screenshots go to build/card-screens/ to be looked at."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device.decision import Category
from device.lesion_shape import describe
from device.outline import LesionResult, Withheld
from device.spacing import PixelSpacing
from tests.device.tiny_segmentation import TEST_DISPLAY_RULE, build_tiny_segmentation_bundle
from tests.ui.test_ui_result_card import CASES, SIZES, _shoot, _variant, _window, card_text_problems
from ui import banners
from ui.layout_check import layout_problems
from ui.screenshots import spin, spin_until


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory: pytest.TempPathFactory, classifier_bundle_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("card-seg")
    build_tiny_segmentation_bundle(root / "bundle", classifier_bundle_dir, root / "segment-out")
    return root / "bundle"


def _ellipse_lesion(shape: tuple[int, int], spacing: PixelSpacing | None) -> LesionResult:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (shape[1] // 2, shape[0] // 2), (shape[1] // 6, shape[0] // 10), 0, 0, 360, 1, -1)
    return LesionResult(describe(mask, spacing), spacing=spacing, shown=TEST_DISPLAY_RULE.shown())  # as the tiny bundle's Segmenter


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_the_card_shows_the_outline_size_and_shown_descriptors(qtbot, tmp_path: Path, seg_bundle: Path, size: tuple[int, int]) -> None:
    window = _window(qtbot, tmp_path, seg_bundle, size)
    card, classifier = window.live.card, window.services.analysis.classifier
    try:
        frame = window.live.view.frame.image
        base = classifier.classify(frame, heatmap=True)
        window.banners.show_fault(banners.source_fault("the USB stick was removed"))
        window.banners.show_fault(banners.hub_fault("the hub broker is not reachable"))
        spin(0.2)
        suspicious = _variant(base, classifier, CASES[Category.SUSPICIOUS])
        mm = _ellipse_lesion(frame.shape[:2], PixelSpacing(0.1, 0.1))
        px = _ellipse_lesion(frame.shape[:2], None)
        o = mm.outline
        for name, lesion, size_text in (
            ("outline-mm", mm, f"Lesion {o.width_mm:.1f} × {o.depth_mm:.1f} mm, {o.area_mm2:.0f} mm²"),
            ("outline-px", px, f"Lesion uncalibrated: {px.outline.area_px:.0f} px"),
            ("no-outline", LesionResult(None), "No lesion outlined"),
        ):
            card.show_result(dataclasses.replace(suspicious, lesion=lesion), heatmap_available=True)
            window.live.view.set_outline(lesion.outline.contour if lesion.found else ())  # as the Live screen's _result
            card.heatmap_button.click()
            spin(0.1)
            assert card.lesion_size.isVisible() and card.lesion_size.text() == size_text, name
            assert "mm" not in card.lesion_size.text() or lesion.spacing is not None
            assert card.outline_button.isVisible() == lesion.found and card.heatmap_button.isVisible()
            if lesion.found:  # the same gloved-size button as the heat map's
                assert card.outline_button.height() == card.heatmap_button.height() >= 48
            if lesion.found:
                assert card.lesion_descriptors.text() == f"Shape (automatic): {lesion.outline.shape.value}"
                assert "Margin" not in card.lesion_descriptors.text() and "Orientation" not in card.lesion_descriptors.text()
            else:
                assert not card.lesion_descriptors.isVisible()
            _shoot(window, f"seg-{name}-banners")
            assert layout_problems(window) == [], (name, layout_problems(window))
            assert card_text_problems(card) == [], name
            card.heatmap_button.click()

        unfit = _variant(base, classifier, CASES[Category.SUSPICIOUS], reasons=("colour",))
        card.show_result(dataclasses.replace(unfit, lesion=LesionResult(None, withheld=Withheld.INCONCLUSIVE)))
        spin(0.1)
        assert not any(w.isVisible() for w in (card.lesion_size, card.lesion_descriptors, card.outline_button))
        no_model = _variant(base, classifier, CASES[Category.LOW_SUSPICION])
        card.show_result(dataclasses.replace(no_model, lesion=None))
        spin(0.1)
        assert not any(w.isVisible() for w in (card.lesion_size, card.lesion_descriptors, card.outline_button))
        assert card_text_problems(card) == []
    finally:
        window.shutdown()


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_an_outline_under_no_lesion_seen_is_not_called_a_lesion(qtbot, tmp_path: Path, seg_bundle: Path, size: tuple[int, int]) -> None:
    """The two models disagree (a tap's square inside a mass read *No lesion seen* with the mass outlined, measured in
    docs/lesion-outline.md): the card must not say "No lesion seen" above "Lesion 14 mm" — it names the region as the
    outline model's and asks for a look, and keeps the outline drawn."""
    window = _window(qtbot, tmp_path, seg_bundle, size)
    card, classifier = window.live.card, window.services.analysis.classifier
    try:
        frame = window.live.view.frame.image
        no_lesion = _variant(classifier.classify(frame), classifier, CASES[Category.NO_LESION])
        assert no_lesion.assessment.category is Category.NO_LESION
        px = _ellipse_lesion(frame.shape[:2], None)
        card.show_result(dataclasses.replace(no_lesion, lesion=px))
        spin(0.1)
        text = card.lesion_size.text()
        assert card.lesion_size.isVisible() and not text.startswith("Lesion")
        assert f"{px.outline.area_px:.0f} px" in text and "no lesion" in text.lower() and "look" in text.lower()
        assert card.outline_button.isVisible()  # the outline stays: it is what may catch a missed lesion
        assert not card.lesion_descriptors.isVisible()  # no lesion descriptors for a region the classifier did not see
        _shoot(window, "seg-no-lesion-outlined")
        assert layout_problems(window) == [] and card_text_problems(card) == []
    finally:
        window.shutdown()


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_analyse_draws_the_outline_and_the_toggle_hides_it(qtbot, tmp_path: Path, seg_bundle: Path, size: tuple[int, int]) -> None:
    window = _window(qtbot, tmp_path, seg_bundle, size)
    live = window.live
    try:
        window.go("Exam")
        form = window.exam.form
        form.field_buttons["patient"].click()
        for digit in "K10452":
            window.id_entry.keypad.keys[digit].click()
        window.id_entry.keypad.keys["OK"].click()
        form.side_buttons["L"].click()
        form.start.click()
        window.confirm.accept_button.click()
        spin_until(lambda: window.session.exam is not None, what="the exam")
        window.go("Live")
        window.banners.show_fault(banners.hub_fault("the hub broker is not reachable"))
        shown: list[object] = []
        live.result_shown.connect(shown.append)
        live.freeze.click()
        spin_until(live.analyse.isEnabled, what="Analyse")
        live.analyse.click()
        spin_until(lambda: bool(shown), 60, "a result")
        outcome = shown[0]
        stored = window.store.get(outcome.record.result_id)
        lesion = live.card.lesion
        assert stored.lesion == lesion  # the card shows what was stored
        if outcome.classification.inconclusive:
            assert lesion is not None and lesion.withheld == "inconclusive" and not live.view.has_outline
            pytest.skip("the demo frame is inconclusive with this model: no outline to toggle")
        assert lesion is not None and live.view.has_outline == lesion.found
        spin(0.1)
        _shoot(window, "seg-analysed-outline")
        assert card_text_problems(live.card) == [] and layout_problems(window) == []
        if lesion.found:
            assert live.card.outline_button.isChecked() and live.view.outline_visible
            live.card.outline_button.click()
            assert not live.view.outline_visible
            live.card.outline_button.click()
            assert live.view.outline_visible
    finally:
        window.shutdown()
