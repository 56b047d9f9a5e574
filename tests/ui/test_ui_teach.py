"""Settings › Model › "Teach this scanner" on real widgets (offscreen), the v1 bundle (models/sonopi-lite0-v1), real TFLite, a real
SQLite store, and a real site: BrEaST-Lesions-USG (a hospital the v1 bundle never saw), half of its patients'
lesion-free views stored as the frames of finished exams (tests/site_cases.py).

Proves: the page lists finished exams only (not the open one); the glove-size toggle marks and unmarks an exam
and never changes a stored result; the count and progress bar follow the documented minimum and *Teach now* is
off until it is reached; *Teach now* runs site-adapt off the GUI thread (the event loop keeps running, the bar
moves) and shows the before/after figures and the frames to review with thumbnails; nothing is switched before
the confirmation. The app runs as deployed: the configuration is root-owned, read-only to the app, in a folder
the app cannot write (deploy/flash.sh), the app as an unprivileged user owning only its data dir. *Use it* writes
the app-owned site-bundle record (device/site_choice.py), never the configuration, and the app reloads the model
(the status bar and Settings › Model show the site version); a real ``python -m device classify --json`` process,
as the app user, then reports the site bundle's identity; *Undo: back to the base model* removes the record, the
app reloads the base and the same command reports the base's identity; with an exam open, neither switches; a
device that requires signed bundles refuses the unsigned site bundle at the load check and nothing is written.
"""

from __future__ import annotations

import importlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import QTimer

from device.analysis import encode_jpeg, encode_png
from device.config import DEFAULT_TOML, load_config
from device.imageio import decode_image_file
from device.model.signing import generate_keypair
from device.results import Exam, ExamEnd, new_result_id, utc_now_iso
from device.site_adapt import MIN_NORMALS
from device.store import ResultStore
from model_build.lesion_views import LESION_FREE
from tests.device.test_site_choice import app_root, classify_model  # noqa: F401 (app_root: a fixture)
from tests.device.test_store import make_record
from tests.site_cases import site_samples, split_patients
from tests.ui.test_ui_workflow import write_frames
from tests.ui_support import start_exam, tap, type_digits
from tests.unprivileged import NOBODY, make_traversable
from ui.app import build_window, start
from ui.teach import MARK_TEXT, MARKED_TEXT

pytestmark = pytest.mark.data
PIN = "2468"


def _config_file(tmp_path: Path, bundle: Path, frames: Path) -> Path:
    text = DEFAULT_TOML.replace('path = "models/sonopi-lite0"', f'path = "{bundle}"', 1)
    text = text.replace('data_dir = "var"', f'data_dir = "{tmp_path / "data"}"', 1)
    text = text.replace('spec = "folder:build/demo-frames"', f'spec = "folder:{frames}"', 1)
    text = text.replace("threads = 2", "threads = 1", 1).replace("enabled = true", "enabled = false", 1)
    text = re.sub(r'(?m)^pin = "[0-9]+"', f'pin = "{PIN}"', text, count=1)
    (tmp_path / "etc").mkdir()
    file = tmp_path / "etc" / "device.toml"
    file.write_text(text)
    assert load_config(file).ui.pin == PIN
    return file


def _store_site_exams(store_path: Path, datasets: Path, cancers: bool = False) -> list[Exam]:
    """Half A's lesion-free views (or, ``cancers``, its malignant lesion images), one finished exam per patient, as
    the app stores them (frame PNG, thumbnail)."""
    samples = site_samples(datasets)
    teach, _ = split_patients(samples)
    normals = [
        s
        for s in samples
        if (s.patient_id or s.path.name) in teach and ((s.view == "full" and s.label == "malignant") if cancers else s.view == LESION_FREE)
    ]
    exams: dict[str, Exam] = {}
    with ResultStore(store_path) as store:
        for sample in normals:
            patient = f"S{sample.patient_id or sample.path.stem}".replace("_", "").upper()[:20]
            if patient not in exams:
                exams[patient] = store.add_exam(Exam(new_result_id(), patient, "L", None, None, utc_now_iso()))
            frame = decode_image_file(sample.path)
            if sample.region is not None:
                x0, y0, x1, y1 = sample.region
                frame = np.ascontiguousarray(frame[y0:y1, x0:x1])
            record = make_record(
                patient=patient, exam_id=exams[patient].exam_id, thumbnail=encode_jpeg(frame, 160), label="malignant", source=str(sample.path)
            )
            store.add(record, frame_png=encode_png(frame))
    return list(exams.values())


PRELOAD = (
    "encodings.cp437",
    "encodings.idna",
    "zipfile",
    "csv",
    "tempfile",
    "shutil",
    "uuid",
    "statistics",
    "html",
    "difflib",
    "dataclasses",
    "concurrent.futures.thread",
    "logging.handlers",
    "unicodedata",
    "bisect",
)


@contextmanager
def as_deployed(tmp_path: Path, config_file: Path) -> Iterator[None]:
    """The app's rights on a flashed device: the configuration root-owned 0640 (readable by the app's group) in a
    root-owned 0755 folder, the data dir the app's own; the test process acts as 'nobody' (effective ids, restored
    after) so the modes hold — root ignores them."""
    data_dir = load_config(config_file).device.data_dir
    make_traversable(tmp_path)
    if os.geteuid() != 0:
        config_file.chmod(0o440)
        config_file.parent.chmod(0o555)
        try:
            yield
        finally:
            config_file.parent.chmod(0o755)
        return
    os.chown(config_file, 0, NOBODY)
    config_file.chmod(0o640)
    config_file.parent.chmod(0o755)
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    for module in PRELOAD:  # the interpreter's own library is under /root, out of the app user's reach here
        importlib.import_module(module)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def classify_json(config_file: Path, image: Path) -> dict:  # the "model" of the output
    """``python -m device classify --json`` (no --model) in its own process, as the app's user
    (tests/device/test_site_choice.py); started as root when the suite runs as root, it drops to 'nobody' itself."""
    if os.getuid() == 0:
        os.seteuid(0)
        os.setegid(0)
    try:
        return classify_model(config_file, image)[0]
    finally:
        if os.getuid() == 0:
            os.setegid(NOBODY)
            os.seteuid(NOBODY)


def _results(store_path: Path) -> list[tuple]:
    with sqlite3.connect(store_path) as db:
        return db.execute("SELECT * FROM results ORDER BY seq").fetchall()


def _confirm(qtbot, window, title: str) -> None:
    assert window.confirm.isVisible() and title in window.confirm.title.text()
    tap(qtbot, window.confirm.accept_button)


@pytest.fixture(params=[False], ids=["normals"])
def app(request, qtbot, app_root: Path, v1_bundle_dir: Path, datasets: Path):
    frames = app_root / "usb"
    write_frames(frames)
    config_file = _config_file(app_root, v1_bundle_dir, frames)
    config = load_config(config_file)
    exams = _store_site_exams(config.store_path, datasets, cancers=request.param)
    with as_deployed(app_root, config_file):
        window = build_window(config, (800, 480), config_path=config_file)
        qtbot.addWidget(window)
        window.show()
        start(window)
        tap(qtbot, window.first_run.accept)
        qtbot.waitUntil(lambda: window.services.analysis.ready, timeout=60_000)
        yield window, config_file, exams
        window.shutdown()


def _open_teach(qtbot, window) -> None:
    tap(qtbot, window.nav["Settings"])
    type_digits(qtbot, window.pin_entry.keypad, PIN)
    tap(qtbot, window.pin_entry.keypad.keys["OK"])
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.settings)
    tap(qtbot, window.settings.section_buttons["Model"])
    tap(qtbot, window.settings.teach)
    assert window.settings.pages.currentWidget() is window.teach


def _mark(qtbot, teach, exam_id: str, marked: bool) -> None:
    toggle = teach.rows[exam_id].toggle
    qtbot.waitUntil(toggle.isVisible, timeout=5_000)
    teach.list_area.ensureWidgetVisible(toggle)  # the clinician scrolls to it
    tap(qtbot, toggle)
    qtbot.waitUntil(lambda: exam_id not in teach._busy and teach.rows[exam_id].toggle.isEnabled(), timeout=10_000)
    assert teach.rows[exam_id].toggle.text() == (MARKED_TEXT if marked else MARK_TEXT)


def test_teach_this_scanner_from_marks_to_the_site_bundle_and_back(qtbot, app, app_root: Path) -> None:
    window, config_file, exams = app
    base_path = load_config(config_file).model.path
    config_text = config_file.read_bytes()
    record = window.config.device.data_dir / "site-bundle.json"
    frame = next((app_root / "usb").iterdir())
    base_identity = classify_json(config_file, frame)
    assert base_identity["version"] == window.services.analysis.manifest.version
    before = _results(window.config.store_path)
    open_exam = start_exam(qtbot, window, "K10452", "R")  # an exam in progress is not offered for marking
    _open_teach(qtbot, window)
    teach = window.teach
    assert set(teach.rows) == {e.exam_id for e in exams} and open_exam.exam_id not in teach.rows
    assert not teach.teach_now.isEnabled() and "<b>0</b> normal frame(s) from <b>0</b> patient(s)" in teach.count.text()
    assert not teach.undo.isEnabled()  # the base model is in use

    for exam in exams:
        _mark(qtbot, teach, exam.exam_id, True)
    marked = teach.folder.progress()
    assert marked.frames >= MIN_NORMALS and marked.patients == len(exams)
    assert teach.bar.value() == MIN_NORMALS and teach.bar.format() == f"{marked.frames} frames — minimum reached"
    _mark(qtbot, teach, exams[0].exam_id, False)
    assert teach.folder.progress().patients == len(exams) - 1
    _mark(qtbot, teach, exams[0].exam_id, True)
    assert teach.folder.progress() == marked and teach.teach_now.isEnabled()

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(teach.job.running))
    timer.start(20)
    tap(qtbot, teach.teach_now)
    assert teach.views.currentIndex() == 1 and not teach.teach_now.isVisible()
    qtbot.waitUntil(lambda: teach.views.currentIndex() == 2, timeout=240_000)
    timer.stop()
    assert sum(ticks) >= 5, "the event loop stood still while the scanner was being taught"
    assert teach.run_bar.value() == teach.run_bar.maximum() == marked.frames
    outcome = teach.outcome
    assert outcome is not None, teach.figures.text()
    text = teach.figures.text()
    assert "Site bundle ready" in text and "→" in text and "before" in text and "after" in text
    assert f"{outcome.adaptation.holdout['normals']}" in text
    review = outcome.adaptation.review
    assert len(teach.review_thumbs) == min(len(review), 8) + len([n for n in outcome.adaptation.scanner.odd[:4] if n not in {r.file for r in review}])
    assert all(not label.pixmap().isNull() for label in teach.review_thumbs)
    if review:
        assert "look like a lesion" in teach.warnings.text()
    assert not record.exists()  # nothing switched before the confirmation

    tap(qtbot, teach.use)  # an exam is open: refused, nothing written
    _confirm(qtbot, window, "Use the site bundle")
    assert "Finish the open exam first" in teach.message.text() and not record.exists()
    window.end_exam(ExamEnd.FINISHED)
    # a device that requires signed bundles: the unsigned site bundle fails the load check, nothing is written
    _, public_key = generate_keypair(window.config.device.data_dir / "keys")
    configured = teach.config
    teach.config = configured.model_copy(update={"model": configured.model.model_copy(update={"public_key": public_key})})
    tap(qtbot, teach.use)
    _confirm(qtbot, window, "Use the site bundle")
    qtbot.waitUntil(lambda: "Not switched" in teach.message.text(), timeout=30_000)
    assert "signature" in teach.message.text().lower() and not record.exists()
    assert window.services.analysis.manifest.head is None
    teach.config = configured
    tap(qtbot, teach.use)
    _confirm(qtbot, window, "Use the site bundle")
    qtbot.waitUntil(lambda: not teach.message.text().startswith("Checking"), timeout=60_000)
    assert "Switched" in teach.message.text(), teach.message.text()  # was: cannot write configuration (Permission denied)
    qtbot.waitUntil(lambda: window.services.analysis.ready and window.services.analysis.manifest.head is not None, timeout=60_000)
    assert record.is_file() and config_file.read_bytes() == config_text  # the configuration is never written
    version = outcome.bundle.manifest.version
    qtbot.waitUntil(lambda: version in window.status.model.plain, timeout=10_000)  # model_ready reached the window
    assert "+site-" in version
    assert version in window.settings.model.text()
    assert _results(window.config.store_path) == before  # the marks never changed a stored result
    site_identity = classify_json(config_file, frame)  # the CLI, too, runs the chosen site bundle
    assert {k: site_identity[k] for k in ("name", "version", "sha256")} == outcome.bundle.identity

    tap(qtbot, teach.undo)
    _confirm(qtbot, window, "Go back to the base model")
    qtbot.waitUntil(lambda: window.services.analysis.ready and window.services.analysis.manifest.head is None, timeout=60_000)
    assert not record.exists() and config_file.read_bytes() == config_text
    assert load_config(config_file).model.path == base_path
    assert classify_json(config_file, frame) == base_identity
    qtbot.waitUntil(lambda: "+site-" not in window.status.model.plain and window.status.model.plain != "No model", timeout=10_000)
    assert "+site-" not in window.settings.model.text() and not teach.undo.isEnabled()
    assert outcome.bundle.path.is_dir()  # the site bundle stays on the device


@pytest.mark.parametrize("app", [True], ids=["cancers"], indirect=True)
def test_cancers_marked_normal_are_refused_and_nothing_changes(qtbot, app) -> None:
    """Half A's malignant lesion images marked normal: a guard refuses — the scanner check, first (the hospital's
    full images come from several scanners; its lesion-free views above pass). The page names the frames by
    patient and time, not by file, and the model in use and the configuration stay as they were."""
    window, config_file, exams = app
    before = load_config(config_file).model.path
    _open_teach(qtbot, window)
    teach = window.teach
    for exam in exams:
        _mark(qtbot, teach, exam.exam_id, True)
    assert teach.folder.progress().enough
    tap(qtbot, teach.teach_now)
    qtbot.waitUntil(lambda: teach.views.currentIndex() == 2, timeout=240_000)
    assert teach.outcome is None and "Not taught:" in teach.figures.text()
    text = teach.figures.text()
    assert "another scanner seems mixed in" in text and ".png" not in text, text
    assert sum(exam.patient_ref in text for exam in exams) >= 3  # the odd frames, named by their patient
    assert "still uses the same model" in teach.message.text()
    assert not teach.use.isVisible() and teach.discard.isVisible()
    assert not any(teach.folder.bundles.iterdir())  # the refused run left no bundle behind
    assert load_config(config_file).model.path == before and window.services.analysis.manifest.head is None
    tap(qtbot, teach.discard)
    assert teach.views.currentIndex() == 0 and teach.folder.progress().frames == len(exams)
