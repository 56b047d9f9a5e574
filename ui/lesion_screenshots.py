"""``python -m ui.lesion_screenshots [OUT_DIR]``: two views of one lesion, the "other" reason's note and a frame moved
into the open exam, at 800x480 and 1280x720, with real widgets (offscreen), the shipped bundle and real frames (BUSI
from ``../shared/datasets`` when present, else synthetic screens): Live after the second frame (New lesion / Same
lesion, 2nd view), Live once grouped, the exam summary with the lesion beside its frames, the Finish confirmation,
History's Lesion column, the void reasons with Other, the note keyboard, the confirmation with the note, the summary
after that view was voided (the lesion recomputed) and the summary with a frame moved in. Every scene is checked
with ui/layout_check.py. Writes ``<size>-lesion-*.png``; exit 1 on a layout problem."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from device.link.corrections import CorrectionReason, Place, make_correction
from device.results import Exam, new_result_id
from ui.main_window import MainWindow

log = logging.getLogger("ui.lesion_screenshots")


def lesion_scenes(window: MainWindow, analyse: Callable[[], None], spin: Callable[[float], None]) -> Iterator[str]:
    """Drive the app through an exam of K41100 (left, 10 o'clock) with two views of one lesion."""
    store, live = window.store, window.live
    earlier = Exam(new_result_id(), "K10452", "L")  # a finished exam whose frame belongs to K41100
    store.add_exam(earlier)
    window.session.begin(earlier)
    analyse()
    assert live.last_result is not None and live.last_result.record is not None  # analyse() waits for a stored result
    wrong = live.last_result.record
    window.session.finish()
    exam = Exam(new_result_id(), "K41100", "L", 10, 57)
    store.add_exam(exam)
    window.session.begin(exam)
    analyse()
    live.set_frozen(False)
    analyse()
    spin(0.2)
    yield "lesion-live-choice"
    assert live.lesion is not None  # the window has a store, so Live has its lesion choice
    live.lesion.same_button.click()
    spin(0.2)
    yield "lesion-live-same"
    window.go("Exam")
    spin(0.2)
    yield "lesion-exam-summary"
    window.exam.summary.finish.click()
    spin(0.1)
    yield "lesion-exam-finish"
    window.confirm.cancel_button.click()
    window.go("History")
    spin(0.2)
    yield "lesion-history"
    window.go("Exam")
    flow = window.correction
    window.exam.summary.table.selectRow(0)
    window.exam.summary.correct.click()
    flow.void_button.click()
    spin(0.1)
    yield "lesion-correct-void-reasons"
    flow.reason_buttons[CorrectionReason.OTHER].click()
    keyboard = window.note_entry.keypad
    for key in "PROBE SLIPPED":
        keyboard.press(key)
    spin(0.1)
    yield "lesion-correct-note"
    keyboard.press("OK")
    spin(0.1)
    yield "lesion-correct-note-confirm"
    flow.accept_button.click()
    window.exam.refresh()
    spin(0.2)
    yield "lesion-exam-voided-view"
    store.add_correction(
        make_correction(
            result_id=wrong.result_id,
            kind="move",
            reason="wrong_patient",
            device_id=window.config.device.id,
            site=window.config.device.site,
            origin=Place(None, None, None),
            target=Place(exam.exam_id, None, "L"),
        )
    )
    window.exam.refresh()
    spin(0.2)
    yield "lesion-exam-moved-in"


def render(out: Path, size: tuple[int, int]) -> list[str]:

    from ui import screenshots as shots

    tag = f"{size[0]}x{size[1]}"
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sonopi-lesion-shots-") as tmp:
        work = Path(tmp)
        frames = work / "usb" / "exam-images"
        shots.prepare_frames(frames)
        config = shots.screenshot_config(work, shots.prepare_model(work, None), frames)
        with shots.ready_window(config, size) as window:
            director = shots.Director(window)
            for name in lesion_scenes(window, director.analyse, shots.spin):
                problems.extend(shots.save_scene(window, out / f"{tag}-{name}.png"))
    return problems


def main(argv: list[str] | None = None) -> int:
    from ui import screenshots as shots

    return shots.render_sizes_main(render, argv)


if __name__ == "__main__":
    sys.exit(main())
