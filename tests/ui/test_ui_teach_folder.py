"""The teach folder behind Settings › Model › "Teach this scanner", without Qt.

Proves that marking a finished exam copies its conclusive frames (real PNGs from a real SQLite store) into a folder
``device site-adapt`` reads, with a hashed patient id, leaves the stored results byte for byte as they were, refuses
the open exam and survives a reopen; that unmarking removes the copies; that the counts and the "enough" rule follow
the documented minimum. (Using the site bundle writes no configuration: tests/device/test_site_choice.py.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from device.results import Exam, new_result_id, utc_now_iso
from device.site_adapt import MIN_NORMALS, MIN_PATIENTS, read_site_cases
from device.store import ResultStore
from tests.device.test_store import make_record
from ui.teach_folder import Progress, TeachError, TeachFolder, patient_key


def _exam(store: ResultStore, patient: str, frames: int, inconclusive: int = 0, keep_frames: bool = True) -> Exam:
    exam = store.add_exam(Exam(new_result_id(), patient, "L", None, None, utc_now_iso()))
    for i in range(frames + inconclusive):
        record = make_record(i, patient=patient, exam_id=exam.exam_id, inconclusive=i >= frames, label=None if i >= frames else "benign")
        store.add(record, frame_png=f"png-{record.result_id}".encode() if keep_frames else None)
    return exam


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM results ORDER BY seq").fetchall()


def test_marking_copies_frames_and_never_touches_results(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    with ResultStore(db) as store:
        done = _exam(store, "K10452", frames=3, inconclusive=1)
        gone = _exam(store, "K20000", frames=2, keep_frames=False)
        open_exam = _exam(store, "K30000", frames=1)
        before = _rows(db)
        folder = TeachFolder(tmp_path)
        outcome = folder.mark_exam(store, done.exam_id, open_exam.exam_id)
        assert (outcome.added, outcome.inconclusive, outcome.no_frame) == (3, 1, 0)
        assert folder.mark_exam(store, done.exam_id, None).added == 0  # marking twice adds nothing
        assert folder.mark_exam(store, gone.exam_id, None).no_frame == 2
        with pytest.raises(TeachError, match="still open"):
            folder.mark_exam(store, open_exam.exam_id, open_exam.exam_id)
        assert _rows(db) == before  # no stored result changed, delivery state included
    reopened = TeachFolder(tmp_path)
    cases = read_site_cases(reopened.cases)  # the folder device site-adapt reads
    assert [c.label for c in cases] == ["normal"] * 3
    assert {c.patient for c in cases} == {patient_key("K10452")} and "K10452" not in reopened.labels.read_text()
    assert all(c.path.read_bytes() == f"png-{c.path.stem}".encode() for c in cases)
    assert reopened.progress() == Progress(frames=3, patients=1, exams=1)
    assert reopened.unmark_exam(done.exam_id) == 3
    assert reopened.marks() == [] and not any(reopened.cases.glob("*.png"))


def test_enough_needs_the_documented_frames_and_patients() -> None:
    assert not Progress(MIN_NORMALS - 1, MIN_PATIENTS, 40).enough
    assert not Progress(200, MIN_PATIENTS - 1, 40).enough
    assert Progress(MIN_NORMALS, MIN_PATIENTS, MIN_PATIENTS).enough
    assert f"needed: {MIN_NORMALS} frames from {MIN_PATIENTS} patients" in Progress(0, 0, 0).text()
