"""The lesion outline is stored with its result (schema 4, one JSON column validated when read): the Analyzer stores
what the segmentation model outlined (px without a spacing, mm with one), an inconclusive result's withheld outline,
no lesion without a segmentation model; a schema-3 file opens and gains the column with its results intact; a
stored outline cannot be overwritten; a damaged one is refused naming the result; the record refuses what is no
outline (too many points, mm without a spacing, unknown descriptor values) and agrees with device.lesion_shape's
vocabulary; ``device history`` shows the size."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.analysis import Analyzer
from device.close_up import CloseUpCheck, Reading, View
from device.config import parse_config
from device.decision import Category
from device.engine import Classifier
from device.errors import StoreError
from device.lesion_record import DESCRIPTOR_VALUES, MAX_POINTS, WITHHELD_VALUES, LesionRecord, LesionRecordError
from device.lesion_shape import MAX_CONTOUR_POINTS, Margin, Orientation, Shape
from device.model.bundle import load_bundle
from device.outline import Withheld
from device.results import CapturedFrame, Exam, ExamDesk
from device.sources.base import Frame
from device.spacing import PixelSpacing
from device.store import SCHEMA_VERSION, ResultStore
from tests.device.test_store import make_record
from tests.device.tiny_segmentation import lesion_frame

REPO = Path(__file__).resolve().parents[2]

OUTLINE = {
    "found": True,
    "withheld": None,
    "box": [10, 20, 30, 15],
    "contour": [[10, 20], [40, 20], [40, 35], [10, 35]],
    "area_px": 450.0,
    "width_mm": 3.0,
    "depth_mm": 1.5,
    "area_mm2": 4.5,
    "spacing_mm": [0.1, 0.1],
    "orientation": {"value": "parallel", "shown": False},
    "shape": {"value": "oval", "shown": True},
    "margin": {"value": "circumscribed", "shown": False},
}
UNCALIBRATED = {**OUTLINE, "width_mm": None, "depth_mm": None, "area_mm2": None, "spacing_mm": None}


def test_the_vocabulary_is_lesion_shapes() -> None:
    assert MAX_POINTS == MAX_CONTOUR_POINTS
    assert DESCRIPTOR_VALUES == {
        "orientation": {o.value for o in Orientation},
        "shape": {s.value for s in Shape},
        "margin": {m.value for m in Margin},
    }
    assert WITHHELD_VALUES == {w.value for w in Withheld}


def test_sizes_in_mm_only_with_a_spacing() -> None:
    calibrated, plain = LesionRecord.from_json(OUTLINE), LesionRecord.from_json(UNCALIBRATED)
    assert calibrated.size_text() == "3.0 × 1.5 mm, 4 mm²" and calibrated.to_json() == OUTLINE
    assert plain.size_text() == "uncalibrated: 450 px" and not plain.calibrated
    assert calibrated.shown_descriptors() == {"shape": "oval"}
    assert LesionRecord.from_json({"found": False, "withheld": None}).size_text() is None


def test_descriptors_are_shown_only_for_a_lesion_seen() -> None:
    """One rule for the card and ``classify``: the display rule's descriptors, none under *No lesion seen* (a region
    the classifier saw no lesion in is not a lesion to describe) and none without an outline."""
    outlined = LesionRecord.from_json(OUTLINE)
    assert outlined.descriptors_to_show(no_lesion_seen=False) == {"shape": "oval"}
    assert outlined.descriptors_to_show(no_lesion_seen=True) == {}
    assert LesionRecord.from_json({"found": False, "withheld": None}).descriptors_to_show(no_lesion_seen=False) == {}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"contour": [[i, i % 7] for i in range(MAX_POINTS + 1)]}, "3..64"),
        ({"spacing_mm": None}, "mm sizes need the spacing"),
        ({"width_mm": None}, "mm sizes need the spacing"),
        ({"shape": {"value": "lobulated", "shown": True}}, "lesion.shape.value"),
        ({"margin": {"value": "circumscribed"}}, "lesion.margin"),
        ({"box": [1, 2, 0, 4]}, "lesion.box"),
        ({"area_px": -3}, "lesion.area_px"),
        ({"withheld": "inconclusive"}, "lesion.withheld"),
        ({"found": 1}, "lesion.found"),
        ({"colour": "red"}, "unknown keys ['colour']"),
    ],
)
def test_what_is_no_outline_is_refused_naming_the_field(change: dict, words: str) -> None:
    with pytest.raises(LesionRecordError, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        LesionRecord.from_json({**OUTLINE, **change})


def test_no_lesion_outlined_carries_nothing_else() -> None:
    with pytest.raises(LesionRecordError, match="no lesion outlined, yet"):
        LesionRecord.from_json({"found": False, "box": [1, 2, 3, 4]})


def test_outlines_round_trip_through_the_store(tmp_path: Path) -> None:
    records = [
        make_record(i, lesion=lesion)
        for i, lesion in enumerate(
            (
                LesionRecord.from_json(OUTLINE),
                LesionRecord.from_json(UNCALIBRATED),
                LesionRecord(found=False),
                LesionRecord(found=False, withheld="inconclusive"),
                None,
            )
        )
    ]
    with ResultStore(tmp_path / "r.sqlite") as store:
        stored = [store.add(r) for r in records]
        assert [store.get(r.result_id) for r in stored] == stored
        assert [r.lesion for r in store.history(newest_first=False)] == [r.lesion for r in records]


def test_a_schema_3_store_opens_and_gains_the_lesion_and_close_up_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        old = store.add(make_record(0))
    db = sqlite3.connect(path)  # the schema-3 file today's earlier build wrote: no lesion column, no lesion trigger
    db.execute("DROP TRIGGER results_lesion_never_overwritten")
    db.execute("DROP TRIGGER results_close_up_never_overwritten")
    db.execute("ALTER TABLE results DROP COLUMN lesion")
    db.execute("ALTER TABLE results DROP COLUMN close_up")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with ResultStore(path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "5"
        assert store.get(old.result_id) == old and old.lesion is None
        new = store.add(make_record(1, lesion=LesionRecord.from_json(OUTLINE)))
        assert store.get(new.result_id).lesion == LesionRecord.from_json(OUTLINE)
        with pytest.raises(sqlite3.IntegrityError, match="never overwritten"):
            store._db.execute("UPDATE results SET lesion = NULL WHERE result_id = ?", (new.result_id,))
        # and schema 5's close-up check, with its own trigger
        check = CloseUpCheck(View.CLOSE_UP, Reading(Category.SUSPICIOUS, 0.7), Reading(Category.NO_LESION, 0.01))
        tapped = store.add(make_record(2, category="suspicious", p_malignant=0.7, close_up=check))
        assert store.get(tapped.result_id).close_up == check
        with pytest.raises(sqlite3.IntegrityError, match="never overwritten"):
            store._db.execute("UPDATE results SET close_up = NULL WHERE result_id = ?", (tapped.result_id,))


def test_a_damaged_stored_outline_is_refused_naming_the_result(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        record = store.add(make_record(0, lesion=LesionRecord.from_json(OUTLINE)))
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER results_lesion_never_overwritten")
    db.execute("UPDATE results SET lesion = ?", (json.dumps({**OUTLINE, "contour": [[1, 2]]}),))
    db.commit()
    db.close()
    with ResultStore(path) as store, pytest.raises(StoreError, match=f"result {record.result_id}: stored lesion.contour"):
        store.get(record.result_id)


def test_an_outline_that_would_not_read_back_is_not_stored(tmp_path: Path) -> None:
    bad = LesionRecord(found=True, box=(1, 2, 3, 4), contour=((1, 2),), area_px=4.0)  # one point, no descriptors
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(LesionRecordError, match="lesion to store.contour"):
            store.add(make_record(0, lesion=bad))
        assert store.count() == 0


def _analyzer_config(tmp_path: Path, bundle: Path):
    return parse_config(
        {
            "device": {"data_dir": str(tmp_path / "data")},
            "model": {"path": str(bundle)},
            "source": {"auto_crop": False},
            "store": {"keep_images_days": 0},
        }
    )


def test_the_analyzer_stores_the_outline_with_the_result(seg_bundle_dir: Path, tmp_path: Path) -> None:
    config = _analyzer_config(tmp_path, seg_bundle_dir)
    desk = ExamDesk()
    desk.open(Exam("E1", "P-1"))
    with ResultStore(config.store_path) as store:
        analyzer = Analyzer(config, Classifier(load_bundle(seg_bundle_dir), threads=1), store, desk)
        calibrated = Frame(lesion_frame(300, 500, (250, 150), (70, 40)), "scan.dcm", 0, spacing=PixelSpacing(0.2, 0.25))
        plain = Frame(lesion_frame(300, 500, (250, 150), (70, 40)), "scan.png", 1)
        doppler_image = np.repeat(lesion_frame(300, 400, (200, 150), (60, 40))[:, :, None], 3, axis=2)
        doppler_image[20:120, 20:160] = (200, 30, 30)
        doppler = Frame(doppler_image, "doppler.png", 2)
        stored = []
        for frame in (calibrated, plain, doppler):
            result = analyzer.classify(frame)
            stored.append(analyzer.record(CapturedFrame(frame, "E1"), result))
        again = [store.get(r.result_id) for r in stored]
    assert again == stored
    mm, px, withheld = (r.lesion for r in again)
    assert mm.found and mm.spacing_mm == (0.2, 0.25) and mm.depth_mm == pytest.approx(mm.box[3] * 0.25, abs=0.01)
    assert px.found and px.width_mm is None and px.size_text().startswith("uncalibrated: ")
    assert not withheld.found and withheld.withheld == "inconclusive" and again[2].inconclusive


def test_a_bundle_without_segmentation_stores_no_lesion(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    config = _analyzer_config(tmp_path, tiny_bundle_dir)
    with ResultStore(config.store_path) as store:
        analyzer = Analyzer(config, Classifier(load_bundle(tiny_bundle_dir), threads=1), store)
        record, _ = analyzer.analyse_unattended(Frame(lesion_frame(300, 500, (250, 150), (70, 40)), "a.png", 0))
        assert store.get(record.result_id).lesion is None


def test_device_history_shows_the_size(tmp_path: Path) -> None:
    path = tmp_path / "data" / "results.sqlite"
    with ResultStore(path) as store:
        store.add(make_record(0, lesion=LesionRecord.from_json(OUTLINE)))
        store.add(make_record(1, lesion=LesionRecord.from_json(UNCALIBRATED)))
        store.add(make_record(2, lesion=LesionRecord(found=False)))
        # the classifier saw no lesion, the outline model outlined a region: a region to look at again, not a size
        store.add(replace(make_record(3, lesion=LesionRecord.from_json(OUTLINE)), category="no_lesion", label="normal"))
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n')
    out = subprocess.run([sys.executable, "-m", "device", "--config", str(config), "history"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("3.0 × 1.5 mm, 4 mm²" in line for line in lines), out.stdout
    assert any("uncalibrated: 450 px" in line for line in lines) and any("no lesion outlined" in line for line in lines)
    under = [line for line in lines if "outlined: recheck" in line]
    assert len(under) == 1 and "mm" not in under[0], out.stdout
