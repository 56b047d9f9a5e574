"""The model bundle format: write/load round trip, sha256 verification, manifest validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device.engine import Classifier
from device.errors import BundleError
from device.model.bundle import FORMAT_VERSION, Manifest, load_bundle


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_manifest(bundle: Path, **changes) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_round_trip(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    again = Manifest.from_dict(bundle.manifest.to_dict())
    assert again == bundle.manifest
    assert bundle.manifest.labels == ("normal", "benign", "malignant")
    assert bundle.manifest.format_version == FORMAT_VERSION


def test_flipped_byte_in_model_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    data = bytearray((bundle / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_wrong_sha_in_manifest_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _edit_manifest(bundle, model_sha256="ab" * 32)
    with pytest.raises(BundleError, match="does not belong"):
        load_bundle(bundle)


def test_unknown_format_version_is_refused(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _edit_manifest(bundle, format_version=99)
    with pytest.raises(BundleError, match="unknown manifest format_version 99"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["only"]}, "labels"),
        ({"labels": ["a", "a", "b"]}, "unique"),
        ({"temperature": 0}, "temperature"),
        ({"thresholds": {"cancer": 0.3}}, "unknown label"),
        ({"thresholds": {"malignant": 1.5}}, r"thresholds\.malignant"),
        ({"surprise": 1}, "unknown key"),
        ({"input": {"height": 32, "width": 32, "dtype": "float64"}}, "input.dtype"),
        ({"input": {"height": 32, "width": 32, "colour": "grey3"}}, "unknown key"),
    ],
)
def test_invalid_manifest_names_the_problem(tiny_bundle_dir: Path, tmp_path: Path, change: dict, message: str) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _edit_manifest(bundle, **change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_files_and_bad_json(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "nothing")
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)
    (bundle / "model.tflite").unlink()
    with pytest.raises(BundleError, match="model.tflite is missing"):
        load_bundle(bundle)


def test_corrupted_model_with_matching_sha_is_refused_at_load(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """A truncated model whose manifest was re-hashed (e.g. a broken export) fails when the interpreter loads it."""
    from device.model.bundle import sha256_file

    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    model = bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[:200])
    _edit_manifest(bundle, model_sha256=sha256_file(model))
    with pytest.raises(BundleError, match="not a valid TFLite model"):
        Classifier(load_bundle(bundle), threads=1)


def test_manifest_tensor_names_are_checked_against_the_model(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    data = json.loads((bundle / "manifest.json").read_text())
    data["outputs"]["scores"] = "no_such_tensor"
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="no output tensor named 'no_such_tensor'"):
        Classifier(load_bundle(bundle), threads=1)
