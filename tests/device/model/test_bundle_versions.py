"""Bundle format 2 beside format 1: what changed is versioned, old bundles keep working, and a built
bundle is changed only through ``edit_bundle``.

Proves that a format-1 manifest (no ``input.resampling``) loads with the OpenCV resampling it was
validated on, that format-2-only keys in a format-1 manifest and unknown resamplings are refused by
name, that the reference frame's fields are validated, and that ``edit_bundle`` refuses a signed
bundle, a path outside the bundle, a replaced model and a manifest naming another model.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from device.errors import BundleError
from device.model.bundle import FORMAT_VERSION, ReferenceSpec, Resampling, edit_bundle, load_bundle
from device.model.signing import generate_keypair, load_private_key, sign_bundle


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _as_format_1(bundle: Path) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = 1
    data["input"].pop("resampling")
    data.pop("reference", None)
    path.write_text(json.dumps(data))


def _edit(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_new_bundles_are_format_3_with_exact_resampling(tiny_bundle_dir: Path) -> None:
    m = load_bundle(tiny_bundle_dir).manifest
    assert FORMAT_VERSION == 3 and m.format_version == 3 and m.input.resampling == Resampling.EXACT


def test_a_format_1_bundle_loads_with_the_resampling_it_was_validated_on(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _as_format_1(bundle)
    m = load_bundle(bundle).manifest
    assert m.format_version == 1 and m.input.resampling == Resampling.OPENCV


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format_version=1), r"'input\.resampling' needs format_version 2"),
        (lambda d: d["input"].update(resampling="bicubic"), r"'input\.resampling' must be one of"),
        (lambda d: d.update(format_version=True), "unknown manifest format_version True"),
        (lambda d: d.update(reference={"frame": "x.png"}), "'reference' must be an object with exactly"),
        (
            lambda d: d.update(reference={"frame": "../x.png", "frame_sha256": "0" * 64, "input_sha256": "0" * 64, "scores": [0, 0, 0]}),
            r"'reference\.frame' must be a relative path",
        ),
        (
            lambda d: d.update(reference={"frame": "r.png", "frame_sha256": "XY", "input_sha256": "0" * 64, "scores": [0, 0, 0]}),
            r"'reference\.frame_sha256'",
        ),
        (
            lambda d: d.update(reference={"frame": "r.png", "frame_sha256": "0" * 64, "input_sha256": "0" * 64, "scores": [0, 0]}),
            r"'reference\.scores' must be 3 finite numbers",
        ),
    ],
)
def test_bad_format_2_fields_are_named(tiny_bundle_dir: Path, tmp_path: Path, change, message: str) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _edit(bundle, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_editing_a_format_1_bundle_writes_the_current_format_and_keeps_its_resampling(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    _as_format_1(bundle)
    m = load_bundle(bundle).manifest
    edited = edit_bundle(bundle, manifest=dataclasses.replace(m, version="1.0+note"))
    assert edited.manifest.format_version == FORMAT_VERSION and edited.manifest.input.resampling == Resampling.OPENCV
    assert edited.manifest.version == "1.0+note"


def test_edit_adds_files_and_a_reference(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    m = load_bundle(bundle).manifest
    ref = ReferenceSpec(frame="reference/frame.png", frame_sha256="a" * 64, input_sha256="b" * 64, scores=(0.5, -1.0, 2.0))
    edited = edit_bundle(bundle, manifest=dataclasses.replace(m, reference=ref), files={"reference/frame.png": b"png"})
    assert edited.manifest.reference == ref
    assert (bundle / "reference" / "frame.png").read_bytes() == b"png"


def test_a_signed_bundle_is_not_edited(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    private, _ = generate_keypair(tmp_path / "keys")
    sign_bundle(bundle, load_private_key(private))
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="is signed"):
        edit_bundle(bundle, files={"report/note.txt": b"x"})
    assert (bundle / "manifest.json").read_bytes() == before and not (bundle / "report" / "note.txt").exists()


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "model.tflite", "signature.json"])
def test_edit_refuses_paths_outside_and_the_bundles_own_files(tiny_bundle_dir: Path, tmp_path: Path, name: str) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    with pytest.raises(BundleError):
        edit_bundle(bundle, files={name: b"x"})
    assert not (tmp_path / "outside.txt").exists()
    load_bundle(bundle)


def test_edit_refuses_a_manifest_of_another_model(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle_dir, tmp_path / "b")
    m = load_bundle(bundle).manifest
    with pytest.raises(BundleError, match="another model"):
        edit_bundle(bundle, manifest=dataclasses.replace(m, model_sha256="c" * 64))
