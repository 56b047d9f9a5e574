"""A close-up (a clinician's drawn ROI or a tapped lesion's square) never makes a result less concerning than its
whole scan: with a real TFLite classifier (tests/tiny_bundle.py: bright reads malignant, dark normal), a dark region
tapped on a bright, suspicious scan is reported suspicious, from the scan, with both views' readings kept; a
suspicious close-up on a quiet scan is the close-up's own result; the rule's cases (tie, inconclusive either side);
the check goes through the Analyzer into the store and back, is refused when it disagrees with the result it is
stored with, and a damaged stored check names the result."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.analysis import Analyzer
from device.close_up import CloseUpCheck, CloseUpCheckError, Reading, View, scan_decides
from device.config import parse_config
from device.crop import Box
from device.decision import Category, Decision, Mode
from device.engine import Classifier
from device.results import Exam, ExamDesk
from device.sources.base import Frame
from device.store import ResultStore, StoreError
from tests.device.test_store import make_record

PATCH = Box(100, 60, 80, 80)


def _frame(background: float, patch: float, seed: int = 0) -> np.ndarray:
    """A speckled frame of ``background`` brightness with a square ``PATCH`` of ``patch`` brightness."""
    rng = np.random.default_rng(seed)
    image = np.full((200, 300), background, np.float32)
    image[PATCH.y : PATCH.y + PATCH.height, PATCH.x : PATCH.x + PATCH.width] = patch
    return np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture()
def classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, threads=1)


def test_a_quiet_close_up_on_a_suspicious_scan_is_reported_suspicious_from_the_scan(classifier: Classifier) -> None:
    frame = _frame(background=230, patch=40)
    alone = classifier.classify(frame, auto_crop=False, roi=PATCH)  # the close-up as the old code reported it
    scan = classifier.classify(frame, auto_crop=False)
    assert alone.category is Category.NO_LESION and scan.category is Category.SUSPICIOUS  # the premise
    result = classifier.classify(frame, auto_crop=False, close_up=PATCH, heatmap=True)
    assert result.category is Category.SUSPICIOUS and result.label == "malignant"
    assert result.heatmap is not None and result.heatmap.shape == (200, 300)  # the scan's map, not the close-up's
    assert result.close_up == CloseUpCheck(View.SCAN, Reading.of(alone.assessment), Reading.of(scan.assessment))
    assert result.close_up.raised
    # what the result says is the scan's, all of it: probabilities, crop; the clinician's ROI is kept as asked
    assert result.probabilities == scan.probabilities and result.p_malignant == scan.p_malignant
    assert result.crop == scan.crop == Box(0, 0, 300, 200) and result.roi == PATCH


def test_a_suspicious_close_up_on_a_quiet_scan_is_the_close_ups_result(classifier: Classifier) -> None:
    frame = _frame(background=40, patch=230)
    alone = classifier.classify(frame, auto_crop=False, roi=PATCH)
    result = classifier.classify(frame, auto_crop=False, close_up=PATCH, heatmap=True)
    assert result.category is Category.SUSPICIOUS and result.close_up is not None
    assert result.close_up.decided_by is View.CLOSE_UP and result.close_up.scan.category is Category.NO_LESION
    assert result.probabilities == alone.probabilities and result.crop == alone.crop == PATCH
    assert result.heatmap is not None and result.heatmap.shape == (PATCH.height, PATCH.width)  # the close-up's map


def _decision(category: Category, p: float = 0.2) -> Decision:
    label = {Category.SUSPICIOUS: "malignant", Category.LOW_SUSPICION: "benign"}.get(category, "normal")
    return Decision(category, label, p, 0.9, Mode.BALANCED, 0.1, 0.5)


@pytest.mark.parametrize(
    ("close_up", "scan", "scan_wins"),
    [
        (Category.NO_LESION, Category.SUSPICIOUS, True),
        (Category.LOW_SUSPICION, Category.SUSPICIOUS, True),
        (Category.NO_LESION, Category.LOW_SUSPICION, True),
        (Category.SUSPICIOUS, Category.SUSPICIOUS, False),  # a tie: the view the clinician asked about
        (Category.LOW_SUSPICION, Category.LOW_SUSPICION, False),
        (Category.SUSPICIOUS, Category.NO_LESION, False),
        (Category.INCONCLUSIVE, Category.SUSPICIOUS, True),  # an unfit close-up does not hide a suspicious scan
        (Category.INCONCLUSIVE, Category.LOW_SUSPICION, False),  # ... else it stays inconclusive: redraw
        (Category.NO_LESION, Category.INCONCLUSIVE, False),  # an unfit scan says nothing against the close-up
    ],
)
def test_the_rule(close_up: Category, scan: Category, scan_wins: bool) -> None:
    assert scan_decides(_decision(close_up), _decision(scan)) is scan_wins


def test_the_check_reads_back_and_names_what_is_wrong() -> None:
    check = CloseUpCheck(View.SCAN, Reading(Category.NO_LESION, 0.01), Reading(Category.SUSPICIOUS, 0.4))
    assert CloseUpCheck.from_text(check.to_text()) == check and check.decided == check.scan
    bad = [
        ({**check.to_json(), "decided_by": "roi"}, "close_up.decided_by: 'roi'"),
        ({**check.to_json(), "scan": {"category": "suspicious", "p_malignant": 1.5}}, r"close_up.scan.p_malignant: 1.5"),
        ({**check.to_json(), "scan": {"category": "maybe", "p_malignant": 0.4}}, r"close_up.scan.category: 'maybe'"),
        ({"decided_by": "scan"}, "expected an object with 'decided_by', 'close_up' and 'scan'"),
    ]
    for data, message in bad:
        with pytest.raises(CloseUpCheckError, match=message):
            CloseUpCheck.from_json(data)


def test_the_analyzer_stores_the_check_with_the_scans_result(tmp_path: Path, classifier: Classifier) -> None:
    config = parse_config({"device": {"id": "pi-1", "site": "s"}, "source": {"auto_crop": False}, "store": {"path": str(tmp_path / "r.sqlite")}})
    desk = ExamDesk()
    with ResultStore(tmp_path / "r.sqlite") as store:
        analyzer = Analyzer(config, classifier, store, desk)
        desk.open(Exam("exam-1", "P-1"))
        captured = desk.capture(Frame(_frame(background=230, patch=40), "tap.png", 0))
        record, result = analyzer.analyse(captured, roi=PATCH)
        assert record.category == "suspicious" and record.close_up == result.close_up and record.close_up.raised
        assert record.roi == PATCH.as_tuple() and record.crop == (0, 0, 300, 200)
        back = store.get(record.result_id)
        assert back.close_up == record.close_up and back.summary()["close_up"]["decided_by"] == "scan"
        plain, _ = analyzer.analyse(desk.capture(Frame(_frame(background=230, patch=40), "whole.png", 0)))
        assert plain.close_up is None and store.get(plain.result_id).close_up is None


def test_a_check_that_disagrees_with_its_result_is_refused(tmp_path: Path) -> None:
    check = CloseUpCheck(View.SCAN, Reading(Category.NO_LESION, 0.01), Reading(Category.SUSPICIOUS, 0.4))
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(CloseUpCheckError, match="decided by the scan view .suspicious.* but the result says no_lesion"):
            store.add(make_record(0, category="no_lesion", p_malignant=0.01, close_up=check))
        assert store.history() == []  # nothing half-stored
        stored = store.add(make_record(1, category="suspicious", p_malignant=0.4, close_up=check))
        with pytest.raises(sqlite3.IntegrityError, match="never overwritten"):
            store._db.execute("UPDATE results SET close_up = NULL WHERE result_id = ?", (stored.result_id,))


def test_a_damaged_stored_check_names_the_result(tmp_path: Path) -> None:
    check = CloseUpCheck(View.CLOSE_UP, Reading(Category.SUSPICIOUS, 0.4), Reading(Category.NO_LESION, 0.01))
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        stored = store.add(replace(make_record(0, category="suspicious", p_malignant=0.4), close_up=check))
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER results_close_up_never_overwritten")
    db.execute("UPDATE results SET close_up = ?", (json.dumps({**check.to_json(), "decided_by": "elsewhere"}),))
    db.commit()
    db.close()
    with ResultStore(path) as store, pytest.raises(StoreError, match=f"result {stored.result_id}: stored close_up.decided_by: 'elsewhere'"):
        store.get(stored.result_id)
