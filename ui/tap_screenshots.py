"""``python -m ui.tap_screenshots [OUT_DIR] [--model BUNDLE]``: tapping a lesion (docs/ui.md "Tap a lesion") at
800x480 and 1280x720, real widgets offscreen, real frames (BUSI from ``../shared/datasets`` when present, else
synthetic screens): the square region a tap on the moving image seeds (nothing stored), the stored result of a
tap inside it on the frozen frame, with the outline of the lesion under the region, and — when the frame gives it —
a tap on quiet tissue beside the lesion whose result is the whole scan's (docs/ui.md "A region never lowers the
result"). The bundle: ``--model``, else the shipped bundle with its trained outline model; a bundle without one
(the tiny test bundle, or one shipped with ``SEGMENTATION=``) gets the tiny test segmentation model packed in
(tests/device/tiny_segmentation.py: it outlines what is brighter than mid-grey — the outline shows where it is drawn,
not what a trained model finds). Every scene is
checked with ui/layout_check.py. Writes ``<size>-tap-*.png``; exit 1 on a layout problem."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PyQt5.QtCore import QEvent, QPointF, Qt
from PyQt5.QtGui import QMouseEvent
from PyQt5.QtWidgets import QApplication, QWidget

from device.model.bundle import load_bundle
from ui.main_window import MainWindow

log = logging.getLogger("ui.tap_screenshots")


def tap_lesion(window: MainWindow) -> None:
    """A finger's tap on the middle of the scan region (where the lesion is on most frames)."""
    view = window.live.view
    region = view.seed_region()
    assert region is not None  # a frame is on screen (the scenes wait for one)
    tap(view, view.to_view(region).center())


def tap(widget: QWidget, point: QPointF) -> None:
    """A finger down and up at ``point`` (widget pixels), delivered as the touchscreen's mouse events are."""
    left, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    for kind, buttons in ((QEvent.Type.MouseButtonPress, left), (QEvent.Type.MouseButtonRelease, Qt.MouseButton.NoButton)):
        QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(round(point.x()), round(point.y())), left, buttons, none))


def tap_scenes(window: MainWindow) -> Iterator[str]:
    from ui import screenshots as shots

    live = window.live
    shots.spin_until(lambda: live.view.frame is not None and live.analyse.isEnabled(), 60, "a frame and the model")
    tap_lesion(window)  # on the moving image: the region only
    shots.spin(0.2)
    assert live.view.roi is not None and window.store.history() == []
    yield "tap-seeded"
    shown: list[object] = []
    live.result_shown.connect(shown.append)
    live.freeze.click()
    tap_lesion(window)  # inside the region, frozen: analysed and stored
    shots.spin_until(lambda: bool(shown), 60, "the tapped result")
    if live.card.heatmap_button.isChecked():
        live.card.heatmap_button.click()
    shots.spin(0.2)
    yield "tap-result"
    live.clear_roi.click()
    tap_quiet_tissue(window)  # a new region away from the lesion, frozen: analysed, and checked against the scan
    shots.spin_until(lambda: len(shown) == 2, 60, "the second tapped result")
    check = live.card.classification.close_up if live.card.classification is not None else None
    if check is not None and check.raised:
        shots.spin(0.2)
        yield "tap-whole-scan"
    else:
        log.warning("the tap on quiet tissue read as concerning as its scan on this frame: no tap-whole-scan scene")


def tap_quiet_tissue(window: MainWindow) -> None:
    """A tap near the scan region's lower right corner: tissue beside, not on, the lesion of the tour's first BUSI
    frame (on another frame it may be on the lesion; then there is no scene)."""
    view = window.live.view
    region = view.seed_region()
    assert region is not None
    rect = view.to_view(region)
    tap(view, QPointF(rect.right() - rect.width() * 0.12, rect.bottom() - rect.height() * 0.12))


def open_exam(window: MainWindow, patient: str, side: str) -> None:
    """Through the form, as a clinician does: the ID on the keyboard, the side, Start, *Start exam*; back on Live."""
    from ui import screenshots as shots

    window.go("Exam")
    form = window.exam.form
    form.field_buttons["patient"].click()
    for key in patient:
        window.id_entry.keypad.keys[key].click()
    window.id_entry.keypad.keys["OK"].click()
    form.side_buttons[side].click()
    form.start.click()
    window.confirm.accept_button.click()
    shots.spin_until(lambda: window.session.exam is not None, 10, "the exam")
    window.go("Live")


def _bundle(work: Path, model: Path | None) -> Path:
    from ui import screenshots as shots

    if model is not None:
        return model
    classifier = shots.prepare_model(work, None)
    if load_bundle(classifier).manifest.segmentation is not None:
        return classifier
    from tests.device.tiny_segmentation import build_tiny_segmentation_bundle

    build_tiny_segmentation_bundle(work / "tap-bundle", classifier, work / "tiny-seg")
    return work / "tap-bundle"


def render(out: Path, size: tuple[int, int], model: Path | None = None) -> list[str]:
    from ui import screenshots as shots

    tag = f"{size[0]}x{size[1]}"
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sonopi-tap-shots-") as tmp:
        work = Path(tmp)
        frames = work / "usb" / "exam-images"
        shots.prepare_frames(frames)
        with shots.ready_window(shots.screenshot_config(work, _bundle(work, model), frames), size, 120) as window:
            open_exam(window, "K10452", "L")
            for name in tap_scenes(window):
                problems.extend(shots.save_scene(window, out / f"{tag}-{name}.png"))
    return problems


def main(argv: list[str] | None = None) -> int:
    from ui import screenshots as shots

    args = list(sys.argv[1:] if argv is None else argv)
    model = None
    if "--model" in args:
        at = args.index("--model")
        model = Path(args[at + 1])
        del args[at : at + 2]
    return shots.render_sizes_main(lambda out, size: render(out, size, model), args)


if __name__ == "__main__":
    sys.exit(main())
