"""History and the exam summary list each frame's lesion size (real widgets on a real store, offscreen): mm with a
known spacing, "N px" (the uncalibrated area, never mm) without, "no outline" when the model found none, nothing for an inconclusive
frame or one analysed without a segmentation model. An outline under *No lesion seen* (the two models disagree) is
listed as a region to look at again, never as a lesion's size, as the card says it. At 800x480 and 1280x720 the rows fit (the layout checker).
Screenshots under build/card-screens/."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("PyQt5")

from PyQt5.QtWidgets import QApplication

from device.lesion_record import LesionRecord
from device.results import Exam
from device.store import ResultStore
from tests.device.link.test_contract_v2 import v2_record
from tests.device.test_store_lesion import OUTLINE, UNCALIBRATED
from tests.ui.test_ui_result_card import SHOTS
from ui.exam import ExamSummaryView
from ui.history import HistoryScreen
from ui.layout_check import layout_problems, table_cells_cut
from ui.theme import Theme

SIZES = {"mm": "3.0 × 1.5 mm", "px": "450 px", "none": "no outline", "under-no-lesion": "outlined: recheck"}


def _stored(store: ResultStore) -> dict[str, object]:
    exam = store.add_exam(Exam("E1", "P-1", side="L"))
    lesions = {"mm": LesionRecord.from_json(OUTLINE), "px": LesionRecord.from_json(UNCALIBRATED), "none": LesionRecord(found=False), "no-model": None}
    records = {
        name: store.add(replace(v2_record("site-a", "dev-1", i + 1), seq=None, exam_id=exam.exam_id, patient_ref="P-1", side="L", lesion=lesion))
        for i, (name, lesion) in enumerate(lesions.items())
    }
    under = replace(
        v2_record("site-a", "dev-1", 6), seq=None, exam_id=exam.exam_id, patient_ref="P-1", side="L", lesion=LesionRecord.from_json(OUTLINE)
    )
    assert under.category == "no_lesion"  # the classifier saw no lesion, the outline model outlined a region
    records["under-no-lesion"] = store.add(under)
    records["withheld"] = store.add(
        replace(
            v2_record("site-a", "dev-1", 9, inconclusive=True),
            seq=None,
            exam_id=exam.exam_id,
            patient_ref="P-1",
            side="L",
            lesion=LesionRecord(found=False, withheld="inconclusive"),
        )
    )
    return records


def _large_uncalibrated(store: ResultStore) -> None:
    """Rows as a capture card's frames give them: no pixel spacing and outlines of real size (a 1080p frame's mass:
    1,000 × 600 px), each result a lesion of its own in the exam, so the Lesion column is filled, with the widest
    delivery state ("Received by hub") and a patient reference as the demo's."""
    exam = store.add_exam(Exam("E2", "K10452", side="L"))
    lesion = LesionRecord.from_json({**UNCALIBRATED, "box": [100, 200, 1000, 600], "area_px": 480000.0})
    for seq in range(20, 24):
        record = store.add(replace(v2_record("site-a", "dev-1", seq), seq=None, exam_id=exam.exam_id, patient_ref="K10452", side="L", lesion=lesion))
        if seq > 20:
            store.new_lesion(record.result_id)
        if seq == 20:
            store.mark_sent([record.result_id])
            store.mark_acked([record.result_id])


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_history_rows_of_large_uncalibrated_outlines_fit(qtbot, tmp_path: Path, size: tuple[int, int]) -> None:
    th = Theme.for_size(*size)
    QApplication.instance().setStyleSheet(th.stylesheet())
    with ResultStore(tmp_path / "results.sqlite") as store:
        _large_uncalibrated(store)
        screen = HistoryScreen(th, store)
        qtbot.addWidget(screen)
        screen.resize(*size)
        screen.show()
        screen.refresh()
        SHOTS.mkdir(parents=True, exist_ok=True)
        screen.grab().save(str(SHOTS / f"{size[0]}x{size[1]}-history-large-outline.png"))
        assert table_cells_cut(screen.table) == []
        lesions = [t for t in (screen.table.item(r, 3).text() for r in range(screen.table.rowCount())) if not t.startswith("No lesion seen")]
        assert lesions and all(t.split("\n")[1:] == ["480000 px"] for t in lesions), lesions


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_history_lists_the_size_per_frame(qtbot, tmp_path: Path, size: tuple[int, int]) -> None:
    th = Theme.for_size(*size)
    QApplication.instance().setStyleSheet(th.stylesheet())
    with ResultStore(tmp_path / "results.sqlite") as store:
        records = _stored(store)
        screen = HistoryScreen(th, store)
        qtbot.addWidget(screen)
        screen.resize(*size)
        screen.show()
        screen.refresh()
        rows = {screen.table.item(r, 3).data(256): r for r in range(screen.table.rowCount())}  # Qt.UserRole
        texts = {name: screen.table.item(rows[r.result_id], 3).text() for name, r in records.items()}
        for name, size_text in SIZES.items():
            assert texts[name].split("\n")[1:] == [size_text], texts[name]
        assert "\n" not in texts["no-model"] and "\n" not in texts["withheld"], texts
        assert not any("mm" in texts[n] for n in ("px", "none", "no-model", "withheld"))
        assert texts["under-no-lesion"].startswith("No lesion seen"), texts["under-no-lesion"]
        SHOTS.mkdir(parents=True, exist_ok=True)
        screen.grab().save(str(SHOTS / f"{size[0]}x{size[1]}-history-outline.png"))
        assert layout_problems(screen) == []
        assert table_cells_cut(screen.table) == []


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_the_exam_summary_lists_the_size_per_frame(qtbot, tmp_path: Path, size: tuple[int, int]) -> None:
    th = Theme.for_size(*size)
    QApplication.instance().setStyleSheet(th.stylesheet())
    with ResultStore(tmp_path / "results.sqlite") as store:
        records = _stored(store)
        view = ExamSummaryView(th)
        qtbot.addWidget(view)
        view.resize(*size)
        view.show()
        frames = store.exam_results("E1")
        view.show_exam(store.get_exam("E1"), frames, store.placements(frames), store.lesions("E1"))
        by_id = {r.result_id: row for row, r in enumerate(view.records)}
        texts = {name: view.table.item(by_id[r.result_id], 2).text() for name, r in records.items()}
        for name, size_text in SIZES.items():
            assert texts[name].split("\n")[1:] == [size_text], texts[name]
        assert "\n" not in texts["no-model"] and "\n" not in texts["withheld"], texts
        SHOTS.mkdir(parents=True, exist_ok=True)
        view.grab().save(str(SHOTS / f"{size[0]}x{size[1]}-exam-summary-outline.png"))
        assert layout_problems(view) == []
        assert table_cells_cut(view.table) == []
