"""The typed build report (model_build/report.py): the shipped bundle's report/metrics.json reads and is written back
byte for byte, the shipped MODEL_CARD.md is reproduced from it, a section added later goes where the dict-based code
put it, unknown keys survive, and a malformed report is refused with the file and the key named."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from device.model.bundle import load_bundle
from model_build.calibrate import OperatingPoint
from model_build.card import model_card_text
from model_build.export import Parity
from model_build.report import REPORT_FILE, BuildReport, ParityGate, ReportError, read_report

ROOT = Path(__file__).resolve().parents[2]
# the classifier bundles' build reports (models/segmentation-lite0's is the segmentation build's, another format)
SHIPPED_REPORTS = sorted(p for p in ROOT.glob("models/*/report/metrics.json") if (p.parents[1] / "manifest.json").is_file())


def _shipped(shipped_bundle_dir: Path) -> dict:
    return json.loads((shipped_bundle_dir / REPORT_FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", SHIPPED_REPORTS, ids=[p.parents[1].name for p in SHIPPED_REPORTS])
def test_a_shipped_report_is_written_back_byte_for_byte(path: Path) -> None:
    raw = path.read_bytes()
    report = read_report(path.parents[1])
    assert report.to_bytes() == raw


def test_the_shipped_report_is_typed(v1_bundle_dir: Path) -> None:
    report = read_report(v1_bundle_dir)
    raw = _shipped(v1_bundle_dir)
    assert isinstance(report.operating_point, OperatingPoint)
    assert report.operating_point.threshold == raw["operating_point"]["threshold"]
    assert isinstance(report.parity_int8_vs_float_test, Parity)
    assert report.parity_int8_vs_float_test.top1_agreement == raw["parity_int8_vs_float_test"]["top1_agreement"]
    assert report.parity_gate == ParityGate(**raw["parity_gate"])
    assert report.labels == tuple(raw["labels"])
    assert report.headline() == raw["evaluations"]["test_int8"]["all"]["headline"]
    assert report.external_test is None and "external_test" not in report.to_json()  # absent in this older report


def test_the_shipped_card_is_reproduced_from_the_typed_report(shipped_bundle_dir: Path) -> None:
    bundle = load_bundle(shipped_bundle_dir)
    card = model_card_text(bundle.manifest, read_report(shipped_bundle_dir))
    assert card == (shipped_bundle_dir / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_a_section_set_after_reading_goes_last_and_one_present_stays_in_place(v1_bundle_dir: Path) -> None:
    raw = _shipped(v1_bundle_dir)
    report = BuildReport.from_json(copy.deepcopy(raw))
    report.leave_one_source_out = {"modes": {}}
    report.reader_baseline = {"skipped": "test"}
    out = report.to_json()
    assert list(out) == [*raw, "leave_one_source_out"]
    assert out["reader_baseline"] == {"skipped": "test"}
    expected = dict(raw)
    expected.update(reader_baseline={"skipped": "test"}, leave_one_source_out={"modes": {}})
    assert out == expected  # what `metrics[key] = section` on the dict did


def test_unknown_keys_are_kept_in_place(shipped_bundle_dir: Path) -> None:
    raw = _shipped(shipped_bundle_dir)
    data = {"from_a_newer_build": [1, 2], **raw}
    report = BuildReport.from_json(data)
    assert report.extra == {"from_a_newer_build": [1, 2]}
    assert list(report.to_json()) == list(data) and report.to_json() == data


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda d: d.pop("temperature"), "'temperature': missing"),
        (lambda d: d["parity_int8_vs_float_test"].pop("top1_agreement"), "'parity_int8_vs_float_test.top1_agreement': missing"),
        (lambda d: d["parity_gate"].update(passed="yes"), "'parity_gate.passed': expected true or false"),
        (lambda d: d["operating_point"].update(threshold="0.03"), "'operating_point.threshold': expected a number"),
        (lambda d: d["evaluations"].pop("test_int8"), "'evaluations.test_int8': missing"),
        (lambda d: d["evaluations"]["test_int8"]["all"].pop("headline"), "'evaluations.test_int8.all.headline': missing"),
        (lambda d: d["evaluations"]["test_float"].update({"source:busi": []}), "'evaluations.test_float.source:busi': expected an object"),
        (lambda d: d["split"]["train"].update({"busi/benign": 2.5}), "'split.train.busi/benign': expected an integer"),
        (lambda d: d["config"].pop("arch"), "'config.arch': missing"),
        (lambda d: d["history"].update(epoch=3), "'history.epoch': expected a list"),
        (lambda d: d.update(labels=["benign", 3]), "'labels[1]': expected a string"),
        (lambda d: d.update(reader_baseline=[]), "'reader_baseline': expected an object"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_key(shipped_bundle_dir: Path, edit, named: str) -> None:
    data = _shipped(shipped_bundle_dir)
    edit(data)
    with pytest.raises(ReportError, match="metrics.json: key " + named.replace("[", r"\[").replace("]", r"\]")):
        BuildReport.from_json(data, "x/report/metrics.json")


def test_a_missing_or_broken_report_file_is_named(tmp_path: Path, shipped_bundle_dir: Path) -> None:
    with pytest.raises(ReportError, match=f"{tmp_path}/report/metrics.json: no build report"):
        read_report(tmp_path)
    (tmp_path / "report").mkdir()
    (tmp_path / REPORT_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="metrics.json: not JSON"):
        read_report(tmp_path)
    (tmp_path / REPORT_FILE).write_text("[]", encoding="utf-8")
    with pytest.raises(ReportError, match="the report: expected an object, got list"):
        read_report(tmp_path)


def test_a_store_in_bundle_refuses_a_bundle_without_a_report(tmp_path: Path, shipped_bundle_dir: Path) -> None:
    """The dict code read a missing report as {} and then failed with a KeyError (not caught by the CLI)."""
    from model_build.revalidate import store_in_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_dir, bundle, ignore=shutil.ignore_patterns("signature.json"))
    (bundle / REPORT_FILE).unlink()
    with pytest.raises(ReportError, match="no build report"):
        store_in_bundle(bundle, {"from": "opencv", "to": "exact"})
