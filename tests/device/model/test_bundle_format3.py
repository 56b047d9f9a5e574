"""Manifest format 3: the optional ``decision`` block (operating modes, thresholds, validated figures) loads from a
copy of the shipped bundle edited with ``edit_bundle``; every malformed part is refused with an error naming the
key; formats 1 and 2 still load, with the implicit single balanced mode; the v1 bundle (format 2) classifies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device.decision import IMPLICIT_LESION_THRESHOLD, Mode
from device.errors import BundleError
from device.model.bundle import FORMAT_VERSION, READABLE_FORMAT_VERSIONS, DecisionSpec, Manifest, ModelBundle, edit_bundle, load_bundle

TEST_FIGURES = "test fixture figures, not a validation"  # the values below are made up for the tests


def fig(value: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"value": value, "ci95": [low, high], "n": n}


def decision_block(**changes: Any) -> dict[str, Any]:
    """A complete decision block (its figures are test fixtures)."""
    block = {
        "p_malignant": "softmax",
        "lesion_threshold": 0.35,
        "default_mode": "balanced",
        "validation": TEST_FIGURES,
        "modes": {
            "high_sensitivity": {
                "malignant_threshold": 0.01,
                "figures": {
                    "sensitivity": fig(0.97, 0.95, 0.99, 750),
                    "specificity": fig(0.30, 0.27, 0.33, 900),
                    "normals_called_malignant": fig(0.40, 0.33, 0.47, 133),
                },
                "categories": {
                    "no_lesion": {"malignancy_rate": fig(0.01, 0.0, 0.03, 120)},
                    "low_suspicion": {"malignancy_rate": fig(0.02, 0.01, 0.04, 300)},
                    "suspicious": {"malignancy_rate": fig(0.45, 0.41, 0.49, 1200)},
                },
            },
            "balanced": {
                "malignant_threshold": 0.05,
                "figures": {"sensitivity": fig(0.92, 0.89, 0.94, 750), "specificity": fig(0.58, 0.55, 0.61, 900)},
                "categories": {"suspicious": {"malignancy_rate": fig(0.60, 0.56, 0.64, 900)}},
            },
            "high_specificity": {"malignant_threshold": 0.2},
        },
    }
    block.update(changes)
    return block


def format3_copy(src: Path, dst: Path, decision: dict[str, Any] | None = None) -> ModelBundle:
    """A copy of ``src`` (without a signature) with ``decision`` written through ``edit_bundle`` (format 3)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("signature.json"))
    manifest = load_bundle(dst).manifest
    data = manifest.to_dict()
    data.update(format_version=3, decision=decision if decision is not None else decision_block())
    return edit_bundle(dst, manifest=Manifest.from_dict(data, source="test"))


def _with_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_format_3_with_a_decision_block_loads(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = format3_copy(classifier_bundle_dir, tmp_path / "b")
    m = load_bundle(bundle.path).manifest
    assert FORMAT_VERSION == 3 and 3 in READABLE_FORMAT_VERSIONS and m.format_version == 3
    spec = m.decision_spec()
    assert spec is m.decision and spec.lesion_threshold == 0.35 and spec.default_mode == "balanced"
    assert list(spec.modes) == ["high_sensitivity", "balanced", "high_specificity"]
    assert spec.mode(Mode.HIGH_SENSITIVITY).figure("sensitivity").ci95 == (0.95, 0.99)
    assert spec.mode("balanced").category_figure("suspicious").n == 900
    assert spec.mode("high_specificity").figures is None  # not validated: nothing invented
    assert json.loads((bundle.path / "manifest.json").read_text())["decision"] == decision_block()  # round trip


def test_a_bundle_may_carry_a_subset_of_modes(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    only = decision_block(default_mode="high_sensitivity")
    only["modes"] = {"high_sensitivity": only["modes"]["high_sensitivity"]}
    spec = format3_copy(classifier_bundle_dir, tmp_path / "b", only).manifest.decision_spec()
    assert list(spec.modes) == ["high_sensitivity"]
    with pytest.raises(BundleError, match="has no operating mode 'balanced'"):
        spec.mode("balanced")


def _bad(path: tuple[str, ...], value: Any) -> Callable[[dict], None]:
    def change(data: dict) -> None:
        target = data["decision"]
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_bad(("p_malignant",), "sigmoid"), r"'decision\.p_malignant' must be one of \('softmax',\)"),
        (_bad(("lesion_threshold",), 1.0), r"'decision\.lesion_threshold' must be a number in \(0, 1\)"),
        (_bad(("lesion_threshold",), "0.3"), r"'decision\.lesion_threshold' must be a number"),
        (_bad(("default_mode",), "fast"), r"'decision\.default_mode' 'fast' is not one of the bundle's modes"),
        (_bad(("modes", "turbo"), {"malignant_threshold": 0.1}), r"unknown mode\(s\) in 'decision\.modes': turbo"),
        (_bad(("modes",), {}), r"'decision\.modes' must be a non-empty object"),
        (_bad(("modes", "balanced", "malignant_threshold"), 0.0), r"'decision\.modes\.balanced\.malignant_threshold' must be a number in \(0, 1\)"),
        (_bad(("modes", "balanced", "malignant_threshold"), KeyError), r"'decision\.modes\.balanced' needs 'malignant_threshold'"),
        (
            _bad(("modes", "balanced", "malignant_threshold"), 0.5),
            r"thresholds must be ordered high_sensitivity <= balanced <= high_specificity: balanced 0\.5 is above high_specificity 0\.2",
        ),
        (
            _bad(("modes", "balanced", "figures", "accuracy"), fig(0.8, 0.7, 0.9, 10)),
            r"unknown key\(s\) in 'decision\.modes\.balanced\.figures': accuracy",
        ),
        (
            _bad(("modes", "balanced", "figures", "sensitivity", "ci95"), [0.9]),
            r"'decision\.modes\.balanced\.figures\.sensitivity\.ci95' must be \[low, high\]",
        ),
        (
            _bad(("modes", "balanced", "figures", "sensitivity", "ci95"), [0.95, 0.9]),
            r"'decision\.modes\.balanced\.figures\.sensitivity\.ci95' must be \[low, high\] with 0 <= low <= high <= 1",
        ),
        (
            _bad(("modes", "balanced", "figures", "sensitivity", "n"), 0),
            r"'decision\.modes\.balanced\.figures\.sensitivity\.n' must be a positive integer",
        ),
        (
            _bad(("modes", "balanced", "figures", "sensitivity", "value"), 1.5),
            r"'decision\.modes\.balanced\.figures\.sensitivity\.value' must be a number in \[0, 1\]",
        ),
        (
            _bad(("modes", "balanced", "figures", "sensitivity"), {"value": 0.9}),
            r"'decision\.modes\.balanced\.figures\.sensitivity' must be an object with exactly value, ci95 and n",
        ),
        (
            _bad(("modes", "balanced", "categories", "benign"), {"malignancy_rate": fig(0.1, 0.0, 0.2, 5)}),
            r"unknown key\(s\) in 'decision\.modes\.balanced\.categories': benign",
        ),
        (
            _bad(("modes", "balanced", "categories", "suspicious", "ppv"), fig(0.1, 0.0, 0.2, 5)),
            r"unknown key\(s\) in 'decision\.modes\.balanced\.categories\.suspicious': ppv",
        ),
        (_bad(("modes", "balanced", "colour"), "red"), r"unknown key\(s\) in 'decision\.modes\.balanced': colour"),
        (_bad(("extra",), 1), r"unknown key\(s\) in 'decision': extra"),
        (_bad(("validation",), 3), r"'decision\.validation' must be a string"),
    ],
)
def test_a_bad_decision_block_is_refused_naming_the_key(classifier_bundle_dir: Path, tmp_path: Path, change, message: str) -> None:
    bundle = format3_copy(classifier_bundle_dir, tmp_path / "b").path
    _with_manifest(bundle, change)
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(bundle)
    assert "manifest.json" in str(err.value)  # names the file too


def test_a_decision_block_needs_format_3(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = format3_copy(classifier_bundle_dir, tmp_path / "b").path
    _with_manifest(bundle, lambda d: d.update(format_version=2))
    with pytest.raises(BundleError, match="'decision' needs format_version 3 \\(this manifest says 2\\)"):
        load_bundle(bundle)


def test_a_decision_block_needs_the_normal_and_malignant_labels(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = format3_copy(classifier_bundle_dir, tmp_path / "b").path
    _with_manifest(bundle, lambda d: d.update(labels=["normal", "benign", "cancer"], thresholds={}))
    with pytest.raises(BundleError, match="'decision' needs the labels 'malignant' and 'normal' \\(missing malignant\\)"):
        load_bundle(bundle)


def test_format_2_and_1_still_load_with_the_implicit_balanced_mode(v1_bundle_dir: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    v1 = load_bundle(v1_bundle_dir).manifest
    assert v1.format_version == 2 and v1.decision is None
    implicit = v1.decision_spec()
    assert isinstance(implicit, DecisionSpec) and list(implicit.modes) == ["balanced"] and implicit.default_mode == "balanced"
    assert implicit.mode("balanced").malignant_threshold == v1.thresholds["malignant"]
    assert implicit.lesion_threshold == IMPLICIT_LESION_THRESHOLD == 0.5
    assert implicit.mode("balanced").figures is None and implicit.validation is None  # shown as "not validated"
    old = tmp_path / "v1"
    shutil.copytree(tiny_bundle_dir, old)

    def as_format_1(data: dict) -> None:
        data["format_version"] = 1
        del data["input"]["resampling"]

    _with_manifest(old, as_format_1)
    m = load_bundle(old).manifest
    assert m.format_version == 1 and m.decision_spec().mode("balanced").malignant_threshold == m.thresholds["malignant"]


def test_format_3_without_a_decision_block_behaves_as_an_old_bundle(v1_bundle_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "b"
    shutil.copytree(v1_bundle_dir, dst, ignore=shutil.ignore_patterns("signature.json"))
    edited = edit_bundle(dst, manifest=load_bundle(dst).manifest)
    assert edited.manifest.format_version == 3 and edited.manifest.decision is None
    assert list(edited.manifest.decision_spec().modes) == ["balanced"]


def test_to_dict_leaves_out_an_absent_block(v1_bundle_dir: Path) -> None:
    assert "decision" not in load_bundle(v1_bundle_dir).manifest.to_dict()
