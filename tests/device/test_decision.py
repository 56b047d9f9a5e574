"""The decision rule (device/decision.py): the category table at and around its boundaries; properties over any
probabilities (the label never contradicts p_malignant and the threshold; the category never falls as p_malignant
rises); a site threshold may only lower the mode's; ``[model] mode`` is validated at start-up; ``classify --json``
on an old bundle (the v1 release, real TFLite) reports category, p_malignant and the mode, in a format-3 copy's modes too;
a version-1 result store gains the new columns on open and keeps its results."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.config import parse_config
from device.decision import CATEGORY_LABEL, CONCERN, Category, Mode, applied_threshold, decide
from device.demo import write_demo_frames
from device.errors import ConfigError
from device.model.bundle import DecisionSpec, ModeSpec
from device.store import ResultStore
from tests.device.model.test_bundle_format3 import decision_block, format3_copy

LABELS = ("normal", "benign", "malignant")
SPEC = DecisionSpec(modes={"high_sensitivity": ModeSpec(0.01), "balanced": ModeSpec(0.05), "high_specificity": ModeSpec(0.2)}, lesion_threshold=0.35)


def probs(normal: float, malignant: float) -> dict[str, float]:
    return {"normal": normal, "benign": 1.0 - normal - malignant, "malignant": malignant}


@pytest.mark.parametrize(
    ("p", "mode", "category"),
    [
        (probs(0.95, 0.0), "balanced", Category.NO_LESION),
        (probs(0.66, 0.04), "balanced", Category.NO_LESION),  # p_lesion 0.34 < 0.35
        (probs(0.65, 0.04), "balanced", Category.LOW_SUSPICION),  # p_lesion 0.35: at the threshold is a lesion
        (probs(0.10, 0.0499), "balanced", Category.LOW_SUSPICION),
        (probs(0.10, 0.05), "balanced", Category.SUSPICIOUS),  # at the threshold is suspicious
        (probs(0.90, 0.06), "balanced", Category.SUSPICIOUS),  # suspicious wins even with "no lesion" odds
        (probs(0.90, 0.06), "high_specificity", Category.NO_LESION),
        (probs(0.50, 0.15), "high_specificity", Category.LOW_SUSPICION),
        (probs(0.50, 0.20), "high_specificity", Category.SUSPICIOUS),
        (probs(0.97, 0.01), "high_sensitivity", Category.SUSPICIOUS),
        (probs(0.97, 0.0099), "high_sensitivity", Category.NO_LESION),
    ],
)
def test_the_rule_table(p: dict[str, float], mode: str, category: Category) -> None:
    d = decide(p, LABELS, SPEC, mode, None, inconclusive=False)
    assert d.category is category and d.label == CATEGORY_LABEL[category]
    assert d.p_malignant == p["malignant"] and d.p_lesion == pytest.approx(1 - p["normal"])
    assert d.mode is Mode(mode) and d.malignant_threshold == SPEC.mode(mode).malignant_threshold and d.lesion_threshold == 0.35


def test_the_quality_gate_makes_it_inconclusive_and_keeps_the_rules_label() -> None:
    d = decide(probs(0.1, 0.8), LABELS, SPEC, "balanced", None, inconclusive=True)
    assert d.category is Category.INCONCLUSIVE and d.inconclusive and d.label == "malignant"


def test_probabilities_in_label_order_are_accepted() -> None:
    assert decide([0.2, 0.7, 0.1], LABELS, SPEC, "balanced", None, False).category is Category.SUSPICIOUS
    with pytest.raises(ValueError, match="2 probabilities for 3 labels"):
        decide([0.2, 0.8], LABELS, SPEC, "balanced", None, False)


def test_a_site_threshold_may_only_lower_the_modes() -> None:
    assert applied_threshold(SPEC, "balanced", 0.02) == 0.02
    assert applied_threshold(SPEC, "balanced", None) == 0.05
    d = decide(probs(0.5, 0.03), LABELS, SPEC, "balanced", 0.02, False)
    assert d.category is Category.SUSPICIOUS and d.malignant_threshold == 0.02 and d.site_threshold
    with pytest.raises(
        ConfigError,
        match=r"malignant_threshold = 0.1 is above the threshold m was validated with "
        r"\(0.0500\) in balanced mode; a site may only lower it",
    ):
        applied_threshold(SPEC, "balanced", 0.1, "m")


simplex = (
    st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
    .filter(lambda t: sum(t) > 1e-6)
    .map(lambda t: {name: v / sum(t) for name, v in zip(LABELS, t)})
)


@settings(max_examples=300, deadline=None)
@given(p=simplex, mode=st.sampled_from(list(Mode)), site=st.none() | st.floats(1e-4, 0.01))
def test_the_label_never_contradicts_p_malignant_and_the_threshold(p: dict[str, float], mode: Mode, site: float | None) -> None:
    d = decide(p, LABELS, SPEC, mode, site, inconclusive=False)
    assert (d.label == "malignant") == (d.category is Category.SUSPICIOUS) == (d.p_malignant >= d.malignant_threshold)
    if d.label != "malignant":
        assert (d.label == "benign") == (d.p_lesion >= d.lesion_threshold)


@settings(max_examples=300, deadline=None)
@given(normal=st.floats(0, 1), low=st.floats(0, 1), high=st.floats(0, 1), mode=st.sampled_from(list(Mode)))
def test_the_category_never_falls_as_p_malignant_rises(normal: float, low: float, high: float, mode: Mode) -> None:
    low, high = sorted((low * (1 - normal), high * (1 - normal)))  # same p(normal), more malignant
    a = decide(probs(normal, low), LABELS, SPEC, mode, None, False)
    b = decide(probs(normal, high), LABELS, SPEC, mode, None, False)
    assert CONCERN[b.category] >= CONCERN[a.category]


@settings(max_examples=200, deadline=None)
@given(p=simplex)
def test_a_more_sensitive_mode_is_never_less_concerned(p: dict[str, float]) -> None:
    concern = [CONCERN[decide(p, LABELS, SPEC, mode, None, False).category] for mode in Mode]
    assert concern == sorted(concern, reverse=True)  # high_sensitivity >= balanced >= high_specificity


# --- configuration ------------------------------------------------------------------------------------


def test_config_mode_is_validated_against_the_enum() -> None:
    assert parse_config({}).model.mode is None  # the bundle's default mode
    assert parse_config({"model": {"mode": "high_sensitivity"}}).model.mode is Mode.HIGH_SENSITIVITY
    with pytest.raises(
        ConfigError,
        match=r"site.toml: 'model.mode': Input should be 'high_sensitivity', 'balanced' or "
        r"'high_specificity'",
    ):
        parse_config({"model": {"mode": "turbo"}}, "site.toml")


def _config(tmp_path: Path, bundle: Path, extra: str = "") -> Path:
    path = tmp_path / "device.toml"
    path.write_text(f'[device]\ndata_dir = "{tmp_path / "data"}"\n[model]\npath = "{bundle}"\nthreads = 1\n{extra}')
    return path


def _classify(config: Path, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device", "classify", "--config", str(config), "--json", *map(str, paths)], capture_output=True, text=True, timeout=300
    )


def test_a_mode_the_bundle_lacks_is_a_start_up_error_naming_the_key_and_the_bundle(v1_bundle_dir: Path, tmp_path: Path) -> None:
    frames = write_demo_frames(tmp_path / "frames", count=1)
    proc = _classify(_config(tmp_path, v1_bundle_dir, 'mode = "high_specificity"\n'), *frames)
    assert proc.returncode == 2, proc.stderr
    assert "[model] mode = 'high_specificity'" in proc.stderr and str(v1_bundle_dir) in proc.stderr
    assert "has no such operating mode (it has balanced)" in proc.stderr


def test_classify_json_on_an_old_bundle_reports_category_p_malignant_and_mode(v1_bundle_dir: Path, tmp_path: Path) -> None:
    frames = write_demo_frames(tmp_path / "frames", count=4)
    proc = _classify(_config(tmp_path, v1_bundle_dir), *frames)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4
    validated = json.loads((v1_bundle_dir / "manifest.json").read_text())["thresholds"]["malignant"]
    for row in rows:
        assert row["label"] in ("normal", "benign", "malignant") and row["category"] in [c.value for c in Category]
        assert row["p_malignant"] == row["probabilities"]["malignant"]
        assert row["p_lesion"] == pytest.approx(1 - row["probabilities"]["normal"], abs=2e-6)
        mode = row["mode"]
        assert mode["name"] == "balanced" and mode["malignant_threshold"] == validated == row["thresholds"]["malignant"]
        assert mode["lesion_threshold"] == 0.5 and mode["validation"] is None
        assert all(v is None for v in mode["figures"].values()) and all(v is None for v in mode["categories"].values())
        if row["inconclusive"]:
            assert row["category"] == "inconclusive"
        else:
            assert row["label"] == CATEGORY_LABEL[Category(row["category"])]
        assert (row["label"] == "malignant") == (row["p_malignant"] >= validated)


def test_classify_json_in_each_mode_of_a_format_3_bundle(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = format3_copy(classifier_bundle_dir, tmp_path / "b3").path
    frames = write_demo_frames(tmp_path / "frames", count=3)
    seen: dict[str, list[dict]] = {}
    for mode in Mode:
        proc = _classify(_config(tmp_path, bundle, f'mode = "{mode.value}"\n'), *frames)
        assert proc.returncode == 0, proc.stderr
        seen[mode.value] = [json.loads(line) for line in proc.stdout.splitlines()]
    block = decision_block()
    for mode, rows in seen.items():
        for row in rows:
            assert row["mode"]["name"] == mode and row["mode"]["lesion_threshold"] == 0.35
            assert row["mode"]["malignant_threshold"] == block["modes"][mode]["malignant_threshold"]
            assert (row["label"] == "malignant") == (row["p_malignant"] >= row["mode"]["malignant_threshold"])
    assert seen["high_sensitivity"][0]["mode"]["figures"]["sensitivity"] == {"value": 0.97, "ci95": [0.95, 0.99], "n": 750}
    assert seen["high_specificity"][0]["mode"]["figures"] == {"sensitivity": None, "specificity": None, "normals_called_malignant": None}
    for i in range(3):  # the same frame is never less concerning in a more sensitive mode
        concern = [CONCERN.get(Category(seen[m.value][i]["category"]), -1) for m in Mode]
        assert concern == sorted(concern, reverse=True)
    site = _classify(_config(tmp_path, bundle, 'mode = "balanced"\nmalignant_threshold = 0.1\n'), *frames)
    assert site.returncode == 2 and "above the threshold" in site.stderr and "in balanced mode" in site.stderr


# --- the store ----------------------------------------------------------------------------------------


def test_a_version_1_store_gains_the_category_columns_and_keeps_its_results(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with ResultStore(path):
        pass
    db = sqlite3.connect(path)  # make it the version-1 file an older release wrote
    for column in ("category", "p_malignant", "mode"):
        db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.execute(
        "INSERT INTO results (result_id, created_at, device_id, site, model_name, model_version, model_sha256, "
        "label, inconclusive, reasons, probabilities, thresholds) VALUES ('r1', '2026-01-01T00:00:00.000Z', 'd', "
        "'s', 'm', '1', ?, 'benign', 0, '[]', '{\"benign\": 1.0}', '{}')",
        ("0" * 64,),
    )
    db.commit()
    db.close()
    with ResultStore(path) as store:
        old = store.get("r1")
        assert old is not None and old.label == "benign" and old.category is None and old.p_malignant is None
        assert store.get_meta("schema_version") == "5"  # 3: lesion_views, 4: lesion, 5: close_up
