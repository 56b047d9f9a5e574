"""The segmentation model in the bundle (format 4, 5 with its selftest reference, 6 with its descriptors' display
rule): a bundle with one loads and verifies its file; old bundles (formats 1-3, the shipped one) load unchanged with
no segmentation, a format-4 section without a reference and a format-5 one without the display rule still load (and
show no descriptor); the display rule shows exactly the descriptors whose kappa reaches its level; every bad
``segmentation`` section (and ``segmentation.reference``, ``segmentation.descriptors``) is refused naming the key;
``write_bundle`` is the only writer (section and bytes together); ``edit_bundle`` never replaces the segmentation
model and only lets its reference be re-recorded; the signature covers its file;
``model_build pack-segmentation`` packs ``segment``'s output as a real process, records the reference, and leaves
the source bundle untouched; with ``replace`` it swaps a bundle's outline model for a retrained one, keeping the
classifier, dropping the old model's report, and naming the new model in the version."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device.errors import BundleError
from device.model.bundle import (
    DESCRIPTORS_FORMAT_VERSION,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SEGMENTATION_FILE,
    SEGMENTATION_FORMAT_VERSION,
    SEGMENTATION_REFERENCE_FORMAT_VERSION,
    DescriptorDisplay,
    Figure,
    SegmentationSpec,
    edit_bundle,
    load_bundle,
    sha256_file,
    write_bundle,
)
from tests.bundle_copies import copy_bundle, rewrite_manifest
from tests.conftest import V1_BUNDLE
from tests.device.tiny_segmentation import TEST_DISPLAY_RULE


def test_a_packed_bundle_loads_as_format_6_with_its_reference_and_display_rule(seg_bundle_dir: Path) -> None:
    bundle = load_bundle(seg_bundle_dir)
    seg = bundle.manifest.segmentation
    assert seg is not None and bundle.manifest.format_version == DESCRIPTORS_FORMAT_VERSION == 6
    assert seg.descriptors == TEST_DISPLAY_RULE and seg.shown_descriptors() == {"shape"}  # margin's 0.2 < 0.40
    ref, frame = seg.reference, bundle.manifest.reference
    assert ref is not None and frame is not None and (ref.frame, ref.frame_sha256) == (frame.frame, frame.frame_sha256)
    assert 0.0 <= ref.mask_mean <= 1.0 and 0 <= ref.mask_px <= 48 * 48
    assert bundle.segmentation_path == seg_bundle_dir / SEGMENTATION_FILE
    assert seg.model_sha256 == sha256_file(seg_bundle_dir / SEGMENTATION_FILE)
    assert (seg.input.height, seg.input.width, seg.input.resize) == (48, 48, "letterbox")
    assert seg.mask.threshold == 0.5 and seg.mask.min_region_px == 16


def test_a_format_4_section_without_a_reference_still_loads(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: (_seg(d).pop("reference"), _seg(d).pop("descriptors"), d.update(format_version=SEGMENTATION_FORMAT_VERSION)))
    loaded = load_bundle(bundle)
    assert loaded.manifest.format_version == 4 and loaded.manifest.segmentation is not None
    assert loaded.manifest.segmentation.reference is None and loaded.manifest.segmentation.shown_descriptors() == frozenset()


def test_a_format_5_section_without_the_display_rule_loads_and_shows_no_descriptor(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: (_seg(d).pop("descriptors"), d.update(format_version=SEGMENTATION_REFERENCE_FORMAT_VERSION)))
    seg = load_bundle(bundle).manifest.segmentation
    assert seg is not None and seg.reference is not None and seg.descriptors is None
    assert seg.shown_descriptors() == frozenset()  # not measured on this model's outlines: nothing shown


def test_the_display_rule_shows_what_reaches_its_level() -> None:
    def rule(**kappas: float) -> DescriptorDisplay:
        return DescriptorDisplay(0.4, {k: Figure(v, (v - 0.1, v + 0.1), 30) for k, v in kappas.items()}, "test")

    assert rule(shape=0.4, margin=0.39).shown() == {"shape"}
    assert rule(shape=0.316, margin=0.107).shown() == frozenset()  # the trained model's (docs/lesion-outline.md)
    assert rule().shown() == frozenset()  # orientation, never in the lexicon, never shown


def test_old_bundles_load_unchanged_without_segmentation(tiny_bundle_dir: Path) -> None:
    v1 = load_bundle(V1_BUNDLE)
    assert v1.manifest.format_version == 2 and v1.manifest.segmentation is None
    assert v1.segmentation_path is None
    tiny = load_bundle(tiny_bundle_dir)
    assert tiny.manifest.format_version == FORMAT_VERSION == 3 and tiny.manifest.segmentation is None
    assert "segmentation" not in json.loads((tiny_bundle_dir / MANIFEST_FILE).read_text())


def _seg(data: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = data["segmentation"]
    return section


BAD_SECTIONS: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda d: d.update(format_version=3), r"'segmentation' needs format_version 4 \(this manifest says 3\)"),
    (lambda d: d.update(segmentation=[1]), r"'segmentation' must be an object"),
    (lambda d: _seg(d).pop("outputs"), r"'segmentation' needs 'outputs'"),
    (lambda d: _seg(d).update(colour="red"), r"unknown key\(s\) in 'segmentation': colour"),
    (lambda d: _seg(d)["input"].update(height=4), r"'segmentation\.input\.height' must be an integer between 8 and 4096"),
    (lambda d: _seg(d)["input"].update(resize="crop"), r"'segmentation\.input\.resize' must be one of"),
    (lambda d: _seg(d)["input"].update(depth=1), r"unknown key\(s\) in 'segmentation\.input': depth"),
    (lambda d: _seg(d)["outputs"].pop("mask"), r"'segmentation\.outputs'"),
    (lambda d: _seg(d)["outputs"].update(mask=""), r"'segmentation\.outputs\.mask' must name a tensor"),
    (lambda d: _seg(d)["outputs"].update(mask=_seg(d)["outputs"]["lesion_logit"]), r"name the same tensor"),
    (lambda d: _seg(d)["mask"].update(threshold=1.5), r"'segmentation\.mask\.threshold' must be a number in \(0, 1\)"),
    (lambda d: _seg(d)["mask"].update(min_region_px=0), r"'segmentation\.mask\.min_region_px' must be a positive integer"),
    (lambda d: _seg(d)["mask"].update(geometry="x"), r"unknown key\(s\) in 'segmentation\.mask': geometry"),
    (lambda d: _seg(d).update(model="model.tflite"), r"'segmentation\.model' must be a file name"),
    (lambda d: _seg(d).update(model="../seg.tflite"), r"'segmentation\.model' must be a file name"),
    (lambda d: _seg(d).update(model_sha256="abc"), r"'segmentation\.model_sha256' must be a 64-character"),
    (lambda d: _seg(d).update(metrics=[]), r"'segmentation\.metrics' must be an object"),
    (lambda d: d.update(format_version=4), r"'segmentation\.reference' needs format_version 5 \(this manifest says 4\)"),
    (lambda d: _seg(d).update(reference=[1]), r"'segmentation\.reference' must be an object with exactly"),
    (lambda d: _ref(d).pop("mask_sha256"), r"'segmentation\.reference' must be an object with exactly .*mask_sha256"),
    (lambda d: _ref(d).update(extra=1), r"'segmentation\.reference' must be an object with exactly"),
    (lambda d: _ref(d).update(input_sha256="abc"), r"'segmentation\.reference\.input_sha256' must be a 64-character"),
    (lambda d: _ref(d).update(mask_sha256="F" * 64), r"'segmentation\.reference\.mask_sha256' must be a 64-character"),
    (lambda d: _ref(d).update(mask_mean=1.5), r"'segmentation\.reference\.mask_mean' must be a number in \[0, 1\]"),
    (lambda d: _ref(d).update(mask_mean="0.1"), r"'segmentation\.reference\.mask_mean' must be a number"),
    (lambda d: _ref(d).update(mask_px=-1), r"'segmentation\.reference\.mask_px' must be an integer in \[0, 2304\]"),
    (lambda d: _ref(d).update(mask_px=2305), r"'segmentation\.reference\.mask_px' must be an integer"),
    (lambda d: _ref(d).update(mask_px=1.0), r"'segmentation\.reference\.mask_px' must be an integer"),
    (lambda d: _ref(d).update(area_px=10.0, box=None), r"'segmentation\.reference\.area_px' and 'segmentation\.reference\.box'"),
    (lambda d: _ref(d).update(area_px=-1.0, box=[1, 2, 3, 4]), r"'segmentation\.reference\.area_px' must be a positive number"),
    (lambda d: _ref(d).update(area_px=10.0, box=[1, 2, 3]), r"'segmentation\.reference\.box' must be \[x, y, width, height\]"),
    (lambda d: _ref(d).update(area_px=10.0, box=[1, 2, 0, 4]), r"'segmentation\.reference\.box' must have x, y >= 0 and width, height >= 1"),
    (lambda d: _ref(d).update(frame="../frame.png"), r"'segmentation\.reference\.frame' must be a relative path inside the bundle"),
    (lambda d: _ref(d).update(frame_sha256="0" * 6), r"'segmentation\.reference\.frame_sha256' must be a 64-character"),
    (lambda d: d.update(format_version=5), r"'segmentation\.descriptors' needs format_version 6 \(this manifest says 5\)"),
    (lambda d: _seg(d).update(descriptors=[1]), r"'segmentation\.descriptors' must be an object with exactly kappa, measured_on, min_kappa"),
    (lambda d: _desc(d).pop("measured_on"), r"'segmentation\.descriptors' must be an object with exactly"),
    (lambda d: _desc(d).update(min_kappa=0), r"'segmentation\.descriptors\.min_kappa' must be a number in \(0, 1\]"),
    (lambda d: _desc(d).update(min_kappa="0.4"), r"'segmentation\.descriptors\.min_kappa' must be a number"),
    (
        lambda d: _desc(d)["kappa"].update(echo={"value": 0.5, "ci95": [0.4, 0.6], "n": 3}),
        r"unknown key\(s\) in 'segmentation\.descriptors\.kappa': echo",
    ),
    (lambda d: _desc(d)["kappa"]["shape"].update(value=1.5), r"'segmentation\.descriptors\.kappa\.shape\.value' must be a number in \[-1, 1\]"),
    (lambda d: _desc(d)["kappa"]["margin"].update(ci95=[0.3, -1.2]), r"'segmentation\.descriptors\.kappa\.margin\.ci95' must be \[low, high\]"),
    (lambda d: _desc(d)["kappa"]["shape"].update(n=0), r"'segmentation\.descriptors\.kappa\.shape\.n' must be a positive integer"),
    (lambda d: _desc(d)["kappa"]["shape"].pop("n"), r"'segmentation\.descriptors\.kappa\.shape' must be an object with exactly value, ci95 and n"),
    (lambda d: _desc(d).update(measured_on=" "), r"'segmentation\.descriptors\.measured_on' must say what the kappas were measured on"),
]


def _desc(data: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = _seg(data)["descriptors"]
    return rule


def _ref(data: dict[str, Any]) -> dict[str, Any]:
    ref: dict[str, Any] = _seg(data)["reference"]
    return ref


@pytest.mark.parametrize(("change", "message"), BAD_SECTIONS)
def test_a_bad_segmentation_section_is_refused_naming_the_key(seg_bundle_dir: Path, tmp_path: Path, change, message) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_segmentation_json_is_read_with_the_same_rules(seg_bundle_dir: Path) -> None:
    section = json.loads((seg_bundle_dir / MANIFEST_FILE).read_text())["segmentation"]
    assert SegmentationSpec.from_dict(section) == load_bundle(seg_bundle_dir).manifest.segmentation
    bad = copy.deepcopy(section)
    bad["mask"]["threshold"] = 0
    with pytest.raises(BundleError, match=r"segmentation\.json: 'segmentation\.mask\.threshold'"):
        SegmentationSpec.from_dict(bad, source="segmentation.json")


def test_a_corrupted_or_missing_segmentation_model_is_refused(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    data = bytearray((bundle / SEGMENTATION_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / SEGMENTATION_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 of segmentation\.tflite .* corrupted"):
        load_bundle(bundle)
    (bundle / SEGMENTATION_FILE).unlink()
    with pytest.raises(BundleError, match=r"segmentation\.tflite is missing \(named by 'segmentation\.model'\)"):
        load_bundle(bundle)


def test_write_bundle_takes_the_section_and_the_bytes_together(seg_bundle_dir: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    seg = load_bundle(seg_bundle_dir)
    model = seg.model_path.read_bytes()
    seg_bytes = (seg_bundle_dir / SEGMENTATION_FILE).read_bytes()
    with pytest.raises(BundleError, match="go together"):
        write_bundle(tmp_path / "a", model, seg.manifest)  # a section, no model
    with pytest.raises(BundleError, match="go together"):
        write_bundle(tmp_path / "b", model, load_bundle(tiny_bundle_dir).manifest, segmentation=seg_bytes)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written
    stale = dataclasses.replace(seg.manifest, segmentation=dataclasses.replace(seg.manifest.segmentation, model_sha256="0" * 64))
    written = write_bundle(tmp_path / "c", model, stale, segmentation=seg_bytes)  # write_bundle fills in the sha256
    assert written.manifest.segmentation == seg.manifest.segmentation and written.manifest.format_version == 6
    no_rule = dataclasses.replace(seg.manifest, segmentation=dataclasses.replace(seg.manifest.segmentation, descriptors=None))
    assert write_bundle(tmp_path / "e", model, no_rule, segmentation=seg_bytes).manifest.format_version == 5
    no_ref = dataclasses.replace(no_rule, segmentation=dataclasses.replace(no_rule.segmentation, reference=None))
    assert write_bundle(tmp_path / "d", model, no_ref, segmentation=seg_bytes).manifest.format_version == 4
    written_section = json.loads((tmp_path / "d" / MANIFEST_FILE).read_text())["segmentation"]
    assert "reference" not in written_section and "descriptors" not in written_section  # absent, not null


def test_edit_bundle_keeps_the_segmentation_model(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    with pytest.raises(BundleError, match=r"segmentation\.tflite cannot be replaced"):
        edit_bundle(bundle, files={SEGMENTATION_FILE: b"other"})
    m = load_bundle(bundle).manifest
    other = dataclasses.replace(m.segmentation, mask=dataclasses.replace(m.segmentation.mask, threshold=0.3))
    with pytest.raises(BundleError, match="changes 'segmentation'"):
        edit_bundle(bundle, manifest=dataclasses.replace(m, segmentation=other))
    edited = edit_bundle(bundle, manifest=dataclasses.replace(m, version="0.0.2"), files={"MODEL_CARD.md": b"card"})
    assert edited.manifest.format_version == 6 and edited.manifest.segmentation == m.segmentation
    assert m.segmentation.reference is not None  # the reference alone may be re-recorded (device.selftest)
    rerecorded = dataclasses.replace(m.segmentation, reference=dataclasses.replace(m.segmentation.reference, mask_px=7))
    assert edit_bundle(bundle, manifest=dataclasses.replace(m, segmentation=rerecorded)).manifest.segmentation == rerecorded
    without = edit_bundle(bundle, manifest=dataclasses.replace(m, segmentation=dataclasses.replace(m.segmentation, reference=None)))
    assert without.manifest.format_version == 6  # the display rule still needs format 6


def test_the_signature_covers_the_segmentation_model(seg_bundle_dir: Path, tmp_path: Path) -> None:
    from device.model.signing import file_digests, generate_keypair, load_private_key, load_public_key, sign_bundle, verify_bundle

    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    private_path, public_path = generate_keypair(tmp_path / "keys")
    sign_bundle(bundle, load_private_key(private_path))
    assert SEGMENTATION_FILE in file_digests(bundle)
    public = load_public_key(public_path)
    assert verify_bundle(bundle, public).manifest.segmentation is not None
    data = bytearray((bundle / SEGMENTATION_FILE).read_bytes())
    data[100] ^= 0x01
    (bundle / SEGMENTATION_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="segmentation.tflite"):
        verify_bundle(bundle, public)


def test_pack_segmentation_as_a_process(seg_bundle_dir: Path, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    segment_out = seg_bundle_dir.parent / "segment-out"  # what the fixture built with model_build segment's writer
    (segment_out / "report").mkdir(exist_ok=True)
    (segment_out / "report" / "REPORT.md").write_text("# tiny\n")
    before = {p.name: sha256_file(p) for p in tiny_bundle_dir.iterdir() if p.is_file()}
    cmd = [
        sys.executable,
        "-m",
        "model_build",
        "pack-segmentation",
        "--bundle",
        str(tiny_bundle_dir),
        "--segmentation",
        str(segment_out),
        "--out",
        str(tmp_path / "packed"),
        "--version",
        "0.0.1+seg-test",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "format 6" in proc.stdout and "unsigned" in proc.stdout
    packed = load_bundle(tmp_path / "packed")
    assert packed.manifest.version == "0.0.1+seg-test" and packed.manifest.segmentation is not None
    assert packed.manifest.segmentation.reference == load_bundle(seg_bundle_dir).manifest.segmentation.reference  # recorded, reproducibly
    assert (tmp_path / "packed" / "report" / "segmentation" / "REPORT.md").read_text() == "# tiny\n"
    assert packed.manifest.model_sha256 == load_bundle(tiny_bundle_dir).manifest.model_sha256
    assert before == {p.name: sha256_file(p) for p in tiny_bundle_dir.iterdir() if p.is_file()}  # source untouched
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # into a non-empty directory: refused
    assert again.returncode == 2 and "is not an empty directory" in again.stderr
    bad = tmp_path / "bad-seg"
    shutil.copytree(segment_out, bad)
    (bad / "segmentation.tflite").write_bytes(b"not the model")
    refused = subprocess.run([*cmd[:7], str(bad), "--out", str(tmp_path / "packed2")], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "sha256 differs" in refused.stderr and not (tmp_path / "packed2").exists()


def test_pack_segmentation_refuses_a_bundle_with_one_already(seg_bundle_dir: Path, tmp_path: Path) -> None:
    from model_build.segmentation_build import PackError, pack_segmentation

    with pytest.raises(PackError, match=r"has a segmentation model already .*pack onto the classifier bundle alone"):
        pack_segmentation(seg_bundle_dir, seg_bundle_dir.parent / "segment-out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pack_segmentation_replaces_a_bundles_outline_model_and_keeps_its_classifier(seg_bundle_dir: Path, tmp_path: Path) -> None:
    from device.model.bundle import InputSpec
    from model_build.segmentation_build import pack_segmentation
    from tests.device.tiny_segmentation import build_tiny_segmentation

    old_dir = tmp_path / "shipped"
    shutil.copytree(seg_bundle_dir, old_dir)
    (old_dir / "report" / "segmentation").mkdir(parents=True, exist_ok=True)
    (old_dir / "report" / "segmentation" / "OLD.md").write_text("# the old outline model's report\n")
    old = load_bundle(old_dir)
    retrained = tmp_path / "retrained"
    build_tiny_segmentation(retrained, InputSpec(height=96, width=96))  # another model (another input size)
    (retrained / "report").mkdir()
    (retrained / "report" / "REPORT.md").write_text("# retrained\n")
    new_sha = sha256_file(retrained / "segmentation.tflite")
    assert old.manifest.segmentation is not None and new_sha != old.manifest.segmentation.model_sha256

    packed = pack_segmentation(old_dir, retrained, tmp_path / "out", replace=True)
    assert packed.manifest.segmentation is not None and packed.manifest.segmentation.model_sha256 == new_sha
    assert packed.manifest.model_sha256 == old.manifest.model_sha256  # the classifier kept
    classifier_version = old.manifest.version.removesuffix("+seg")
    assert packed.manifest.version == f"{classifier_version}+seg-{new_sha[:8]}"
    assert sorted(p.name for p in (tmp_path / "out" / "report" / "segmentation").iterdir()) == ["REPORT.md"]  # no old report left
    assert packed.manifest.segmentation.reference is not None  # recorded for the new model

    again = pack_segmentation(tmp_path / "out", retrained, tmp_path / "again", replace=True)
    assert again.manifest.version == packed.manifest.version  # replacing once more does not stack suffixes
