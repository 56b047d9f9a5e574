"""History (real widget on a real store, offscreen): each row shows the category in the card's words and
p(malignant); a result stored before the category rule says so instead of inventing a category; a result the hub
rejected for good reads "Rejected: <reason>" in the danger colour. Screenshots under build/card-screens/."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("PyQt5")

from PyQt5.QtWidgets import QApplication

from device.store import ResultStore
from tests.device.link.test_contract_v2 import v2_record
from tests.device.link.test_uplink import make_record
from tests.ui.test_ui_result_card import SHOTS
from ui import theme
from ui.history import HistoryScreen
from ui.theme import Theme


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_history_shows_categories_and_parked_results(qtbot, tmp_path: Path, size: tuple[int, int]) -> None:
    th = Theme.for_size(*size)
    QApplication.instance().setStyleSheet(th.stylesheet())
    with ResultStore(tmp_path / "results.sqlite") as store:
        old = store.add(replace(make_record("site-a", "dev-1", 3), seq=None))  # stored before the category rule
        stored = {seq: store.add(replace(v2_record("site-a", "dev-1", seq), seq=None)) for seq in (1, 2, 3)}
        unfit = store.add(replace(v2_record("site-a", "dev-1", 4, inconclusive=True), seq=None))
        store.mark_rejected([(stored[2].result_id, "topic_mismatch", "result device_id: not the topic's")])
        screen = HistoryScreen(th, store)
        qtbot.addWidget(screen)
        screen.resize(*size)
        screen.show()
        screen.refresh()
        rows = {screen.table.item(r, 3).data(256): r for r in range(screen.table.rowCount())}  # Qt.UserRole

        def cell(record, column: int) -> str:
            return screen.table.item(rows[record.result_id], column).text()

        assert cell(stored[1], 3) == "Low suspicion" and cell(stored[1], 4) == "4.0%"
        assert cell(stored[3], 3) == "No lesion seen" and cell(stored[3], 4) == "2.0%"
        assert cell(stored[2], 3) == "Suspicious — refer" and cell(stored[2], 4) == "20.0%"
        assert cell(unfit, 3) == "Inconclusive" and cell(unfit, 4) == "—"
        assert cell(old, 3) == "Malignant · old rule"
        assert cell(stored[2], 5) == "Rejected:\ntopic mismatch"
        colour = screen.table.item(rows[stored[2].result_id], 5).foreground().color().name()
        assert colour == theme.DANGER.lower()
        assert cell(stored[1], 5) == "On device"
        SHOTS.mkdir(parents=True, exist_ok=True)
        screen.grab().save(str(SHOTS / f"{size[0]}x{size[1]}-history.png"))
