"""``python -m ui.screenshots OUT_DIR``: render every screen at 800x480 and 1280x720 with real widgets
(offscreen), a real model bundle and real frames where available, and check each layout.

Model: ``models/sonopi-lite0`` when present, else the tiny test bundle (built with TensorFlow).
Frames: a few BUSI images from ``../shared/datasets`` (linked from a temp folder, never copied into
the repo), else synthetic scanner screens from ``device.demo``. The hub is shown as configured off:
no broker runs here. Delivery states in History come from marking results sent/acknowledged in the
store, exactly as the uplink process does.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before PyQt5 is imported (ruff allows os.environ set-up before imports)

from PyQt5.QtCore import QCoreApplication
from PyQt5.QtWidgets import QApplication, QTableWidget, QWidget

from device.config import DeviceConfig, parse_config
from device.crop import Box
from device.store import ResultStore
from ui.app import build_window, start
from ui.layout_check import layout_problems, table_cells_cut
from ui.main_window import MainWindow

log = logging.getLogger("ui.screenshots")

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = REPO / "models" / "sonopi-lite0"
DATASETS = REPO.parent / "shared" / "datasets"
SIZES = ((800, 480), (1280, 720))
BUSI_PICKS = (("malignant", 4), ("benign", 3), ("normal", 2))
PIN = "2580"


def _running_app() -> QCoreApplication:
    app = QApplication.instance()
    assert app is not None  # the screenshot tools run inside their QApplication (main)
    return app


def spin(seconds: float) -> None:
    app = _running_app()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)


def spin_until(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    app = _running_app()
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.005)


def link_busi_frames(out: Path) -> bool:
    """Link a few BUSI images (not their masks) into ``out``; False when the dataset is absent."""
    busi = DATASETS / "busi"
    if not busi.is_dir():
        return False
    out.mkdir(parents=True, exist_ok=True)
    index = 0
    for category, count in BUSI_PICKS:
        files = sorted(p for p in (busi / category).glob("*.png") if "mask" not in p.name)
        for path in files[:count]:
            index += 1
            (out / f"{index:02d}-{category}.png").symlink_to(path.resolve())
    return index > 0


def write_doppler_frame(folder: Path) -> Path:
    """The folder's first image with a colour-flow (Doppler-like) overlay, last in the folder's order: the
    quality gate calls it inconclusive (colour), so the screenshots show an inconclusive card."""
    import cv2
    import numpy as np

    first = sorted(p for p in folder.iterdir() if p.suffix == ".png")[0]
    grey = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise OSError(f"{first}: cannot read the image")
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    height, width = grey.shape
    centre, axes = (width // 2, height // 2), (width // 5, height // 5)
    flow = np.zeros_like(grey)
    cv2.ellipse(flow, centre, axes, 0, 0, 360, 255, -1)
    upper = flow.copy()
    upper[height // 2 :] = 0
    image[upper > 0] = (40, 40, 220)  # towards the probe: red (BGR)
    image[(flow > 0) & (upper == 0)] = (220, 90, 30)  # away: blue
    path = folder / "zz-doppler.png"
    cv2.imwrite(str(path), image)
    return path


def prepare_frames(out: Path) -> str:
    if link_busi_frames(out):
        return "BUSI images from ../shared/datasets"
    from device.demo import write_demo_frames

    write_demo_frames(out, 6)
    return "synthetic scanner screens (device.demo)"


def prepare_model(work: Path, model: Path | None) -> Path:
    if model is not None:
        return model
    if (SHIPPED_MODEL / "manifest.json").is_file():
        return SHIPPED_MODEL
    from tests.tiny_bundle import build_tiny_bundle

    log.warning("models/sonopi-lite0 not found: using the tiny test bundle (its outputs mean nothing)")
    out = work / "tiny-bundle"
    if not (out / "manifest.json").is_file():
        build_tiny_bundle(out)
    return out


def screenshot_config(work: Path, model: Path, frames: Path, **extra_ui) -> DeviceConfig:
    return parse_config(
        {
            "device": {"id": "ward3-pi-01", "site": "city-hospital", "data_dir": str(work / "data")},
            "model": {"path": str(model), "threads": 2},
            "source": {"spec": f"folder:{frames}", "reopen_interval_s": 0.5},
            "uplink": {"enabled": False},
            "ui": {"pin": PIN, "source_roots": [str(frames.parent)], **extra_ui},
        }
    )


@dataclass
class Scene:
    name: str
    window: MainWindow


class Director:
    """Drives one window through every screen, yielding a Scene at each state worth a picture."""

    def __init__(self, window: MainWindow) -> None:
        self.w = window

    def press(self, keypad, digits: str) -> None:
        for digit in digits:
            keypad.keys[digit].click()

    def analyse(self) -> None:
        live = self.w.live
        spin_until(lambda: live.view.frame is not None and live.analyse.isEnabled(), what="a frame and the model")
        shown: list[object] = []
        live.result_shown.connect(shown.append)
        live.analyse.click()
        spin_until(lambda: bool(shown), 60, "a result")
        live.result_shown.disconnect(shown.append)

    def next_image(self) -> None:
        live = self.w.live
        live.set_frozen(False)
        before = live.view.frame.origin if live.view.frame else None
        live.next_image.click()
        spin_until(lambda: live.view.frame is not None and live.view.frame.origin != before, what="the next image")

    def scenes(self) -> Iterator[Scene]:
        w = self.w
        spin_until(lambda: w.live.view.frame is not None, what="the first frame")
        spin_until(lambda: w.services.analysis.ready or w.services.analysis.error is not None, 120, "the model")
        spin(0.3)
        if w.first_run.isVisible():
            yield Scene("first-run", w)
            w.first_run.accept.click()
        spin(0.2)
        yield Scene("live", w)

        w.go("Exam")
        form = w.exam.form
        form.field_buttons["patient"].click()
        self.press(w.id_entry.keypad, "K10452")
        spin(0.1)
        yield Scene("exam-id-keyboard", w)
        w.id_entry.keypad.keys["OK"].click()
        form.field_buttons["age"].click()
        self.press(w.entry.keypad, "54")
        w.entry.keypad.keys["OK"].click()
        form.side_buttons["L"].click()
        form.clock_buttons[10].click()
        spin(0.1)
        yield Scene("exam-form", w)
        form.start.click()
        spin(0.1)
        yield Scene("exam-readback", w)
        w.confirm.accept_button.click()
        spin_until(lambda: w.session.exam is not None, what="the exam")

        live = w.live
        live.freeze.click()
        assert live.view.frame is not None  # shown since the first scene (spin_until "the first frame")
        frame = live.view.frame.image
        height, width = frame.shape[:2]
        live.view.set_roi(Box(width // 5, height // 6, width * 3 // 5, height * 2 // 3))
        spin(0.1)
        yield Scene("live-roi", w)
        self.analyse()
        if live.card.heatmap_button.isVisible():
            live.card.heatmap_button.click()
        spin(0.1)
        yield Scene("live-result", w)
        if live.card.lesion is not None and live.card.lesion.found:  # a bundle with a segmentation model (--model)
            if live.card.heatmap_button.isChecked():
                live.card.heatmap_button.click()  # the outline alone, as the clinician sees it with the map off
            spin(0.1)
            yield Scene("live-outline", w)

        self.next_image()
        live.view.set_roi(None)
        self.analyse()
        self.next_image()
        self.analyse()
        w.go("Exam")
        spin(0.1)
        yield Scene("exam-summary", w)

        live.set_frozen(False)
        w.go("Live")
        spin_until(live.live_toggle.isEnabled, what="the live score toggle")
        live.live_toggle.click()
        spin_until(lambda: live.last_live is not None, 30, "a live estimate")
        live.next_image.click()
        spin(0.6)
        yield Scene("live-analysis", w)
        live.live_toggle.click()

        self.step_to("doppler")
        self.analyse()
        spin(0.1)
        yield Scene("live-inconclusive", w)

        records = w.store.history(newest_first=False)
        with ResultStore(w.config.store_path) as uplink:  # what the uplink process does
            uplink.mark_sent([r.result_id for r in records[:2]])
            uplink.mark_acked([records[0].result_id])
        w.go("History")
        w.poll()
        spin(0.1)
        yield Scene("history", w)

        w.go("Exam")
        w.exam.summary.finish.click()
        spin(0.1)
        yield Scene("exam-finish", w)
        w.confirm.accept_button.click()
        spin_until(lambda: w.session.exam is None, what="the exam to finish")
        spin(0.1)
        yield Scene("exam-finished", w)
        w.scanned("]C1A20001\r")  # what the wristband scanner sends (its key burst, recognised by ui.scanner)
        form.side_buttons["R"].click()
        spin(0.1)
        yield Scene("exam-scanned", w)
        form.start.click()
        w.confirm.accept_button.click()
        spin_until(lambda: w.session.exam is not None, what="the second exam")

        w.go("Settings")
        self.press(w.pin_entry.keypad, PIN[:2])
        yield Scene("settings-pin", w)
        self.press(w.pin_entry.keypad, PIN[2:])
        w.pin_entry.keypad.keys["OK"].click()
        spin_until(lambda: w.stack.currentWidget() is w.settings, what="settings")
        page = w.settings.source
        spin_until(lambda: len(page.choice_buttons) >= 1, what="source candidates")
        spin(0.1)
        yield Scene("settings-source", w)
        for section in ("Hub", "Model", "Device"):
            w.settings.show_section(section)
            spin(0.1)
            yield Scene(f"settings-{section.lower()}", w)
        w.lock()  # what Settings › Lock and the idle lock do: the open exam (20001) is finished
        spin(0.1)
        yield Scene("lock", w)
        self.press(w.lock_screen.keypad, PIN)
        w.lock_screen.keypad.keys["OK"].click()
        w.go("Exam")
        spin(0.1)
        yield Scene("exam-after-lock", w)
        w.go("Live")

    def step_to(self, name_part: str, limit: int = 20) -> None:
        """Next ▶ until the image whose file name contains ``name_part`` is on screen."""
        live = self.w.live
        for _ in range(limit):
            if live.view.frame is not None and name_part in live.view.frame.origin:
                return
            self.next_image()
        raise TimeoutError(f"no image named *{name_part}* in the source after {limit} taps on Next")


def fault_scenes(window: MainWindow) -> Iterator[Scene]:
    spin_until(lambda: "model" in window.banners.banners and "source" in window.banners.banners, 60, "fault banners")
    window.first_run.close_overlay()
    spin(0.2)
    yield Scene("faults", window)


def save_scene(window: QWidget, path: Path) -> list[str]:
    """Grab ``window`` into ``path`` and return its layout problems, each prefixed with the file name."""
    window.grab().save(str(path))
    tables = [t for t in window.findChildren(QTableWidget) if t.isVisible()]
    found = [f"{path.name}: {p}" for p in [*layout_problems(window), *(c for t in tables for c in table_cells_cut(t))]]
    log.info("wrote %s%s", path, f" ({len(found)} layout problems)" if found else "")
    return found


def open_window(config: DeviceConfig, size: tuple[int, int]) -> MainWindow:
    window = build_window(config, size)
    window.setFixedSize(*size)
    window.show()
    start(window)
    return window


@contextmanager
def shown_window(config: DeviceConfig, size: tuple[int, int]) -> Iterator[MainWindow]:
    """The app window at ``size`` (open_window); shut down, deleted and its events processed on leaving."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = open_window(config, size)
    try:
        yield window
    finally:
        window.shutdown()
        window.deleteLater()
        app.processEvents()


@contextmanager
def ready_window(config: DeviceConfig, size: tuple[int, int], timeout_s: float = 60) -> Iterator[MainWindow]:
    """shown_window, once its model is loaded and the first-run notice accepted: where a flow's scenes start."""
    with shown_window(config, size) as window:
        spin_until(lambda: window.services.analysis.ready, timeout_s, "the model")
        if window.first_run.isVisible():
            window.first_run.accept.click()
        yield window


def render_teach(out: Path, work: Path, size: tuple[int, int]) -> list[str]:
    """Settings › Model › Teach this scanner (ui/teach_screenshots.py): BUSI normals stored as finished exams,
    marked, taught with the shipped bundle."""
    from ui.teach_screenshots import store_normal_exams, teach_scenes

    tag = f"{size[0]}x{size[1]}"
    frames = work / "usb" / "exam-images"
    prepare_frames(frames)
    config = screenshot_config(work, SHIPPED_MODEL, frames)
    exams = store_normal_exams(config, DATASETS / "busi")
    problems: list[str] = []
    with ready_window(config, size) as window:
        window.go("Settings")
        for key in PIN + "K":
            window.pin_entry.keypad.keys["OK" if key == "K" else key].click()
        spin_until(lambda: window.stack.currentWidget() is window.settings, what="settings")
        for name in teach_scenes(window, exams, spin, spin_until):
            problems.extend(save_scene(window, out / f"{tag}-{name}.png"))
    return problems


def render(out: Path, model: Path | None = None) -> list[str]:
    """Write every scene at both sizes to ``out``; returns the layout problems found."""
    QApplication.instance() or QApplication(sys.argv[:1])
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sonopi-shots-") as tmp:
        work = Path(tmp)
        frames_from = prepare_frames(work / "usb" / "exam-images")
        write_doppler_frame(work / "usb" / "exam-images")  # last in the folder: the inconclusive scene
        bundle = prepare_model(work, model)
        log.info("frames: %s; model: %s", frames_from, bundle)
        broken = work / "rejected-model"
        shutil.copytree(bundle, broken)
        (broken / "model.tflite").write_bytes(b"not a model")
        for size in SIZES:
            tag = f"{size[0]}x{size[1]}"
            shutil.rmtree(work / "data", ignore_errors=True)
            runs = (
                (screenshot_config(work, bundle, work / "usb" / "exam-images"), Director),
                (screenshot_config(work, broken, work / "usb" / "unplugged"), None),
            )
            for config, director in runs:
                with shown_window(config, size) as window:
                    scenes = director(window).scenes() if director else fault_scenes(window)
                    for scene in scenes:
                        problems.extend(save_scene(scene.window, out / f"{tag}-{scene.name}.png"))
            if model is None and (SHIPPED_MODEL / "manifest.json").is_file() and (DATASETS / "busi").is_dir():
                with tempfile.TemporaryDirectory(prefix="sonopi-teach-shots-") as teach_work:
                    problems.extend(render_teach(out, Path(teach_work), size))
            from ui.correction_screenshots import render as render_corrections  # the Correct… flow

            problems.extend(render_corrections(out, size))
            from ui.lesion_screenshots import render as render_lesions  # two views of one lesion, the "other" note

            problems.extend(render_lesions(out, size))
            from ui.tap_screenshots import render as render_taps  # tap a lesion: the seeded region, its result

            problems.extend(render_taps(out, size, model))
    return problems


def render_sizes_main(render_size: Callable[[Path, tuple[int, int]], list[str]], argv: list[str] | None = None) -> int:
    """The ``main`` of a flow's screenshot script (``python -m ui.<flow>_screenshots [OUT_DIR]``): ``render_size``
    at every size into OUT_DIR (default docs/screenshots); each layout problem is logged and makes the exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    QApplication.instance() or QApplication(sys.argv[:1])
    problems = [p for size in SIZES for p in render_size(out, size)]
    for problem in problems:
        log.warning("layout: %s", problem)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshots"))
    parser.add_argument("--model", type=Path, help="model bundle (default: models/sonopi-lite0, else the tiny test bundle)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    problems = render(args.out, args.model)
    for problem in problems:
        log.warning("layout: %s", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
