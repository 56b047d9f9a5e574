"""``python -m ui.teach_screenshots OUT_DIR``: Settings › Model › Teach this scanner at 800x480 and 1280x720 — the
marked exams with the count, the run's progress, the before/after figures, the switch confirmation — with real
widgets (offscreen), the shipped bundle and BUSI normal images stored as finished exams (one per patient; the
images are read from ``../shared/datasets``, never copied into the repo). Also rendered by ``ui.screenshots``.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from device.analysis import encode_jpeg, encode_png
from device.clock import utc_now_iso
from device.config import DeviceConfig
from device.imageio import decode_image_file
from device.results import Exam, ResultRecord, new_result_id
from device.store import ResultStore
from ui.main_window import MainWindow

log = logging.getLogger("ui.teach_screenshots")

EXAMS = 36  # BUSI normal images, one finished exam each
MARKED = 32  # of them marked normal: past the minimum


def store_normal_exams(config: DeviceConfig, busi: Path, count: int = EXAMS) -> list[Exam]:
    """``count`` BUSI normal images as finished exams of the store, as the app stores a result (frame, thumbnail)."""
    files = sorted(p for p in (busi / "normal").glob("*.png") if "mask" not in p.name)[:count]
    exams = []
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(config.store_path) as store:
        for i, path in enumerate(files):
            exam = store.add_exam(Exam(new_result_id(), f"K{10452 + 37 * i}", "LR"[i % 2], None, None, utc_now_iso()))
            frame = decode_image_file(path)
            record = ResultRecord(
                result_id=new_result_id(),
                created_at=utc_now_iso(),
                device_id=config.device.id,
                site=config.device.site,
                model_name="sonopi-lite0",
                model_version="base",
                model_sha256="0" * 64,
                probabilities={"normal": 0.2, "benign": 0.5, "malignant": 0.3},
                label="benign",
                inconclusive=False,
                exam_id=exam.exam_id,
                patient_ref=exam.patient_ref,
                side=exam.side,
                source=str(path),
                thumbnail=encode_jpeg(frame, config.store.thumbnail_px),
            )
            store.add(record, frame_png=encode_png(frame))
            exams.append(exam)
    return exams


def teach_scenes(window: MainWindow, exams: list[Exam], spin, spin_until) -> Iterator[str]:
    """Drive the teach page (Settings must be unlocked): yields each scene's name once it is on screen."""
    window.go("Settings")
    window.settings.show_section("Model")
    spin(0.2)
    yield "teach-entry"  # Settings › Model with its "Teach this scanner…" button
    window.settings.teach.click()
    teach = window.teach
    spin(0.2)
    for exam in [e for i, e in enumerate(exams) if i != len(exams) - 2][-MARKED:]:  # the second newest left unmarked
        teach.rows[exam.exam_id].toggle.click()
        spin_until(lambda e=exam.exam_id: e not in teach._busy, what="a mark")
    bar = teach.list_area.verticalScrollBar()
    assert bar is not None  # a QScrollArea makes its scroll bars
    bar.setValue(0)
    spin(0.2)
    yield "teach-collect"
    teach.teach_now.click()
    spin_until(lambda: teach.run_bar.value() >= 8, what="the teach run's progress")
    yield "teach-running"
    spin_until(lambda: teach.views.currentIndex() == 2, timeout_s=300, what="the teach run")
    spin(0.2)
    yield "teach-result"
    if teach.outcome is not None:
        teach.use.click()
        spin(0.2)
        yield "teach-confirm"
        window.confirm.close_overlay()


def main(argv: list[str] | None = None) -> int:

    from ui import screenshots as shots

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    busi = shots.DATASETS / "busi"
    if not busi.is_dir() or not (shots.SHIPPED_MODEL / "manifest.json").is_file():
        log.error("needs %s and %s", busi, shots.SHIPPED_MODEL)
        return 1

    def render(out: Path, size: tuple[int, int]) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="sonopi-teach-shots-") as tmp:
            return shots.render_teach(out, Path(tmp), size)

    return shots.render_sizes_main(render, argv)


if __name__ == "__main__":
    sys.exit(main())
