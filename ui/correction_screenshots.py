"""``python -m ui.correction_screenshots [OUT_DIR]``: the Correct… flow (ui/correction.py) at 800x480 and 1280x720, with
real widgets (offscreen) and the shipped bundle: History with a row selected, each step of a void and of a move (the
exam list, the side of an exam without one, the reasons, the confirmation), History after both, and the open exam's
summary with a voided frame. Results are stored as the app stores them, with thumbnails of the screenshot frames
(BUSI images from ``../shared/datasets`` when present, else synthetic screens); every scene is checked with
ui/layout_check.py. Writes ``<size>-correct-*.png``; exit 1 on a layout problem."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from device.analysis import encode_jpeg
from device.clock import utc_now_iso
from device.config import DeviceConfig
from device.imageio import decode_image_file
from device.link.corrections import CorrectionReason
from device.results import Exam, ResultRecord, new_result_id
from device.store import ResultStore
from ui.main_window import MainWindow

log = logging.getLogger("ui.correction_screenshots")

OUTPUTS = (  # (p(normal), p(benign), p(malignant)), the category and the label: plausible device outputs
    ((0.05, 0.12, 0.83), "suspicious", "malignant"),
    ((0.10, 0.70, 0.20), "low_suspicion", "benign"),
    ((0.08, 0.22, 0.70), "suspicious", "malignant"),
)


def store_exams(config: DeviceConfig, frames: Path) -> dict[str, Exam]:
    """Three finished exams (K10452 left, K20001 right, K30077 both sides) and an open one (K41100 left), each with
    results as the app stores them."""
    images = sorted(p for p in frames.iterdir() if p.suffix == ".png")
    exams = {
        "wrong": Exam(new_result_id(), "K10452", "L"),
        "right": Exam(new_result_id(), "K20001", "R"),
        "both": Exam(new_result_id(), "K30077", None),
        "open": Exam(new_result_id(), "K41100", "L"),
    }
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(config.store_path) as store:
        for n, exam in enumerate(exams.values()):
            store.add_exam(exam)
            for i in range(2):
                (pn, pb, pm), category, label = OUTPUTS[(n + i) % len(OUTPUTS)]
                frame = decode_image_file(images[(2 * n + i) % len(images)])
                store.add(
                    ResultRecord(
                        result_id=new_result_id(),
                        created_at=utc_now_iso(),
                        device_id=config.device.id,
                        site=config.device.site,
                        model_name="sonopi-lite0",
                        model_version="2026.11.22",
                        model_sha256="0" * 64,
                        probabilities={"normal": pn, "benign": pb, "malignant": pm},
                        label=label,
                        inconclusive=False,
                        category=category,
                        p_malignant=pm,
                        mode="balanced",
                        thresholds={"malignant": 0.5},
                        exam_id=exam.exam_id,
                        patient_ref=exam.patient_ref,
                        side=exam.side or "LR"[i],
                        thumbnail=encode_jpeg(frame, config.store.thumbnail_px),
                    )
                )
    return exams


def _select(window: MainWindow, table, result_id: str, records) -> None:
    row = [r.result_id for r in records].index(result_id)
    table.selectRow(row)
    table.scrollToItem(table.item(row, 1))


def correction_scenes(window: MainWindow, exams: dict[str, Exam], spin) -> Iterator[str]:
    """Drive History, the flow and the exam summary; yields each scene's name once it is on screen."""
    flow = window.correction
    store = window.store
    wrong = store.history(exam_id=exams["wrong"].exam_id, newest_first=False)
    poor = store.history(exam_id=exams["right"].exam_id, newest_first=False)[0]
    window.go("History")
    spin(0.2)
    _select(window, window.history.table, poor.result_id, window.history.records)
    spin(0.1)
    yield "correct-history-select"
    window.history.correct_button.click()
    spin(0.1)
    yield "correct-what"
    flow.void_button.click()
    spin(0.1)
    yield "correct-void-reason"
    flow.reason_buttons[CorrectionReason.POOR_IMAGE].click()
    spin(0.1)
    yield "correct-void-confirm"
    flow.accept_button.click()
    window.history.refresh()
    _select(window, window.history.table, wrong[1].result_id, window.history.records)
    window.history.correct_button.click()
    flow.move_button.click()
    spin(0.1)
    yield "correct-move-exam"
    flow.exam_buttons[exams["both"].exam_id].click()
    spin(0.1)
    yield "correct-move-side"
    flow.side_buttons["R"].click()
    spin(0.1)
    yield "correct-move-reason"
    flow.reason_buttons[CorrectionReason.WRONG_PATIENT].click()
    spin(0.1)
    yield "correct-move-confirm"
    flow.accept_button.click()
    window.history.refresh()
    spin(0.2)
    yield "correct-history-after"
    window.session.begin(exams["open"])
    opened = store.history(exam_id=exams["open"].exam_id, newest_first=False)
    window.go("Exam")
    window.exam.summary.table.selectRow(0)
    window.exam.summary.correct.click()
    flow.void_button.click()
    flow.reason_buttons[CorrectionReason.TEST_SCAN].click()
    flow.accept_button.click()
    window.exam.summary.table.selectRow(1)
    spin(0.2)
    placement = store.placement(opened[0].result_id)
    assert placement is not None and placement.voided
    yield "correct-exam-summary"


def render(out: Path, size: tuple[int, int]) -> list[str]:

    from ui import screenshots as shots

    tag = f"{size[0]}x{size[1]}"
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sonopi-correct-shots-") as tmp:
        work = Path(tmp)
        frames = work / "usb" / "exam-images"
        shots.prepare_frames(frames)
        config = shots.screenshot_config(work, shots.prepare_model(work, None), frames)
        exams = store_exams(config, frames)
        with shots.ready_window(config, size) as window:
            for name in correction_scenes(window, exams, shots.spin):
                problems.extend(shots.save_scene(window, out / f"{tag}-{name}.png"))
    return problems


def main(argv: list[str] | None = None) -> int:
    from ui import screenshots as shots

    return shots.render_sizes_main(render, argv)


if __name__ == "__main__":
    sys.exit(main())
