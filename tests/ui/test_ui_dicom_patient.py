"""A DICOM source's own PatientID (issue 14): read from the file's header (device/dicom_patient.py), shown beside the
exam's patient on Live, pre-filling an empty exam form (the readback still asks), and a frame whose file names
another patient than the open exam's is refused — Analyse off, the card says why, nothing stored — while a file
of the exam's own patient is analysed and stored as usual. Real DICOM files, real widgets offscreen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")
pydicom = pytest.importorskip("pydicom")

from device.dicom_patient import FilePatient, dicom_patient, mismatch
from tests.dicom_factory import write_dicom
from tests.ui.test_ui_exam_defects import open_window, stored
from tests.ui.test_ui_workflow import BRIGHT_BOX
from tests.ui_support import analyse, readback_text, start_exam, tap


def write_patient_dicom(path: Path, patient_id: str | None) -> Path:
    """A scanner frame (dark, one bright textured box) as an uncompressed DICOM file carrying ``patient_id``."""
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(25, 8, (1, 480, 640)), 0, 255).astype(np.uint8)
    b = BRIGHT_BOX
    image[0, b.y : b.y + b.height, b.x : b.x + b.width] = np.clip(rng.normal(200, 15, (b.height, b.width)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(path, image)
    dataset = pydicom.dcmread(path)
    if patient_id is None:
        del dataset.PatientID
    else:
        dataset.PatientID = patient_id
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_the_header_is_read_and_compared(tmp_path: Path) -> None:
    named = write_patient_dicom(tmp_path / "a.dcm", " k10452 ")
    anonymous = write_patient_dicom(tmp_path / "b.dcm", None)
    assert dicom_patient(f"{named}#frame=0") == FilePatient(named, "K10452")
    assert dicom_patient(str(anonymous)).patient_id is None
    assert mismatch(dicom_patient(str(named)), "k10452") is None
    assert mismatch(dicom_patient(str(anonymous)), "20001") is None  # nothing in the file says otherwise
    assert "a.dcm belongs to patient K10452" in mismatch(dicom_patient(str(named)), "20001")


@pytest.fixture()
def dicom_window(qtbot, tmp_path: Path, tiny_bundle_dir: Path):
    frames = tmp_path / "usb" / "dicom"
    write_patient_dicom(frames / "scan-1.dcm", "K10452")
    window = open_window(qtbot, tmp_path, tiny_bundle_dir, frames)
    qtbot.waitUntil(lambda: window.live.file_patient is not None, timeout=10_000)
    yield window
    window.shutdown()


def test_the_files_patient_prefills_the_form_and_is_read_back(qtbot, dicom_window) -> None:
    window = dicom_window
    assert "patient K10452" in window.live.file_label.text() and window.live.file_label.isVisible()
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    assert form.values["patient"] == "K10452" and window.session.exam is None
    tap(qtbot, form.side_buttons["L"])
    tap(qtbot, form.start)
    assert readback_text(window) == "K10452" and "DICOM file" in window.confirm.message.text()
    tap(qtbot, window.confirm.accept_button)
    qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
    assert "this exam's" in window.live.file_label.text() and window.live.analyse.isEnabled()
    outcome = analyse(qtbot, window)
    assert outcome.record.patient_ref == "K10452"


def test_a_file_of_another_patient_is_refused(qtbot, dicom_window) -> None:
    window = dicom_window
    start_exam(qtbot, window, "20001", "R")  # the clinician corrects the pre-filled ID to another patient's
    live = window.live
    assert "K10452 — not this exam's patient" in live.file_label.text()
    assert not live.analyse.isEnabled(), "Analyse offered for another patient's file"
    assert live.card.headline.text() == "Other patient's file"
    assert "belongs to patient K10452" in live.card.detail.text() and "20001" in live.card.detail.text()
    tap(qtbot, live.freeze)
    live.request_analysis()  # the screen's own entry point refuses too
    assert live.card.headline.text() == "Not analysed" and "K10452" in live.card.detail.text()
    assert stored(window) == []
