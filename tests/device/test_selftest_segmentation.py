"""``device selftest`` checks the segmentation model too (issue 16): a bundle packed by ``pack-segmentation`` passes
its ``segmentation`` line bit for bit through the real CLI on the machine that recorded it; a tampered reference, or
a changed segmentation input, fails naming what differs (exit 1); a format-4 bundle packed before the reference
existed passes with a "no reference" warning; a bundle without a segmentation model prints no such line; a mask
that differs within the documented tolerances warns, and one beyond them (or an outline that appears, grows or
moves) fails naming it; ``record_reference`` records the segmentation reference beside the classifier's; a site
bundle keeps the segmentation reference and passes it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from device.engine import Classifier
from device.model.bundle import SegmentationReference, load_bundle
from device.selftest import (
    AREA_TOLERANCE,
    MASK_MEAN_TOLERANCE,
    Status,
    check_segmentation,
    compare_segmentation,
    record_reference,
    run_selftest,
)
from tests.bundle_copies import copy_bundle, rewrite_manifest

REPO = Path(__file__).resolve().parents[2]


def _selftest(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\ndata_dir = "{tmp_path / "var"}"\n')
    return subprocess.run(
        [sys.executable, "-m", "device", "--config", str(config), "selftest", "--model", str(bundle)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def _seg_ref(data: dict[str, Any]) -> dict[str, Any]:
    ref: dict[str, Any] = data["segmentation"]["reference"]
    return ref


def _segmentation_line(bundle: Path) -> tuple[Status, str] | None:
    result = check_segmentation(Classifier(load_bundle(bundle)))
    return None if result is None else (result.status, result.detail)


def test_a_packed_bundle_passes_through_the_real_cli(seg_bundle_dir: Path, tmp_path: Path) -> None:
    proc = _selftest(seg_bundle_dir, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "PASS  reference     input tensor and scores bit-identical" in proc.stdout
    assert "PASS  segmentation  input tensor and mask bit-identical to the recorded ones" in proc.stdout
    assert proc.stdout.rstrip().endswith("selftest: PASS")


def test_a_tampered_mask_reference_fails_through_the_real_cli(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    recorded = load_bundle(bundle).manifest.segmentation.reference
    assert recorded is not None
    wrong = min(1.0, recorded.mask_mean + 0.2)
    rewrite_manifest(bundle, lambda d: _seg_ref(d).update(mask_sha256="ab" * 32, mask_mean=wrong))
    proc = _selftest(bundle, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert "FAIL  segmentation  input identical but mask mean" in proc.stdout
    assert f"vs {wrong:.4f}" in proc.stdout
    assert "PASS  reference" in proc.stdout  # the classifier's line is not affected
    assert proc.stdout.rstrip().endswith("selftest: FAIL (segmentation)")


def test_a_tampered_input_checksum_fails_naming_the_input(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: _seg_ref(d).update(input_sha256="0" * 64))
    line = _segmentation_line(bundle)
    assert line is not None and line[0] == Status.FAIL
    assert "the segmentation input tensor differs from the recorded one" in line[1] and "0000000000000000…" in line[1]


def test_a_changed_segmentation_input_fails(seg_bundle_dir: Path, tmp_path: Path) -> None:
    """The device preparing the segmentation input differently (here: stretched instead of letterboxed, as a
    changed preprocessing would) is caught by the input tensor's checksum."""
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: d["segmentation"]["input"].update(resize="stretch"))
    line = _segmentation_line(bundle)
    assert line is not None and line[0] == Status.FAIL and "the segmentation input tensor differs" in line[1]


def test_a_replaced_reference_frame_fails(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: _seg_ref(d).update(frame_sha256="e" * 64))
    line = _segmentation_line(bundle)
    assert line is not None and line[0] == Status.FAIL and "does not match 'segmentation.reference'" in line[1]


def test_a_mask_differing_only_in_its_checksum_is_a_warning(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: _seg_ref(d).update(mask_sha256="cd" * 32))
    line = _segmentation_line(bundle)
    assert line is not None and line[0] == Status.WARN and "mask differs within tolerance" in line[1]


def test_a_format_4_bundle_without_a_reference_passes_with_a_warning(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    rewrite_manifest(bundle, lambda d: (d["segmentation"].pop("reference"), d["segmentation"].pop("descriptors"), d.update(format_version=4)))
    assert load_bundle(bundle).manifest.format_version == 4
    proc = _selftest(bundle, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "WARN  segmentation  model tiny-test-model 0.0.1+seg: the segmentation model has no reference" in proc.stdout
    assert "outline not checked" in proc.stdout
    assert proc.stdout.rstrip().endswith("selftest: PASS")


def test_a_bundle_without_segmentation_has_no_segmentation_line(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle_dir, tmp_path)
    record_reference(bundle)
    names = [r.name for r in run_selftest(lambda: Classifier(load_bundle(bundle)))]
    assert "reference" in names and "segmentation" not in names


def test_record_reference_records_the_segmentation_reference_too(seg_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(seg_bundle_dir, tmp_path)
    packed = load_bundle(bundle).manifest.segmentation.reference
    rewrite_manifest(bundle, lambda d: (d["segmentation"].pop("reference"), d["segmentation"].pop("descriptors"), d.update(format_version=4)))
    recorded = record_reference(bundle)
    assert recorded.manifest.format_version == 5 and recorded.manifest.segmentation.reference == packed
    assert _segmentation_line(bundle) == (Status.PASS, _segmentation_line(seg_bundle_dir)[1])  # type: ignore[index]


# --- the tolerances, on references with an outline (the tiny model outlines nothing on the reference frame) ------

INPUT_PX = 224 * 224
FRAME_SIDE = 480
EXPECTED = SegmentationReference(
    frame="reference/frame.png",
    frame_sha256="1" * 64,
    input_sha256="2" * 64,
    mask_sha256="3" * 64,
    mask_mean=0.12,
    mask_px=5000,
    area_px=9000.0,
    box=(100, 80, 120, 90),
)


def _actual(**changes: Any) -> SegmentationReference:
    return dataclasses.replace(EXPECTED, mask_sha256="4" * 64, **changes)


def test_identical_outputs_pass() -> None:
    result = compare_segmentation(EXPECTED, EXPECTED, INPUT_PX, FRAME_SIDE)
    assert result.status == Status.PASS and "outline 9000 px at [100, 80, 120, 90]" in result.detail


def test_a_bit_identical_mask_with_a_different_outline_fails() -> None:
    """Even by less than the mask tolerances: the same mask must give the same outline."""
    result = compare_segmentation(EXPECTED, dataclasses.replace(EXPECTED, area_px=9001.0), INPUT_PX, FRAME_SIDE)
    assert result.status == Status.FAIL
    assert "mask bit-identical but outline 9001 px at [100, 80, 120, 90] where the recorded reference has outline 9000 px" in result.detail


def test_small_differences_within_tolerance_warn() -> None:
    actual = _actual(mask_mean=EXPECTED.mask_mean + MASK_MEAN_TOLERANCE / 2, mask_px=5100, area_px=9100.0, box=(101, 79, 121, 90))
    result = compare_segmentation(EXPECTED, actual, INPUT_PX, FRAME_SIDE)
    assert result.status == Status.WARN and "+100 px at the threshold" in result.detail


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"mask_mean": 0.12 + 2 * MASK_MEAN_TOLERANCE}, "mask mean 0.1400 vs 0.1200"),
        ({"mask_px": 5000 + 600}, "mask pixels at the threshold 5600 vs 5000 (tolerance 502)"),
        ({"area_px": 9000.0 * (1 + 2 * AREA_TOLERANCE)}, "outline area 9900 vs 9000 px"),
        ({"box": (100, 80, 150, 90)}, "outline box [100, 80, 150, 90] vs [100, 80, 120, 90] (tolerance 10 px per edge)"),
        ({"area_px": None, "box": None}, "no outline where the recorded reference has one"),
    ],
)
def test_differences_beyond_tolerance_fail_naming_them(changes: dict[str, Any], named: str) -> None:
    result = compare_segmentation(EXPECTED, _actual(**changes), INPUT_PX, FRAME_SIDE)
    assert result.status == Status.FAIL and named in result.detail, result.detail


def test_an_outline_where_none_was_recorded_fails() -> None:
    expected = dataclasses.replace(EXPECTED, area_px=None, box=None)
    result = compare_segmentation(expected, _actual(), INPUT_PX, FRAME_SIDE)
    assert result.status == Status.FAIL and "an outline where the recorded reference has none" in result.detail


def test_a_site_bundle_keeps_the_segmentation_reference_and_passes(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    """``write_site_bundle`` drops the classifier's reference (recomputed through the head) but keeps the segmentation
    section; its reference still holds: the head changes neither the crop nor the segmentation model."""
    from device.site_adapt import write_site_bundle
    from tests.device.test_site_adapt_segmentation import _unchanged_head
    from tests.device.tiny_segmentation import build_tiny_segmentation_bundle

    base = build_tiny_segmentation_bundle(tmp_path / "base", classifier_bundle_dir, tmp_path / "segment-out")
    assert base.manifest.segmentation is not None and base.manifest.segmentation.reference is not None
    site = write_site_bundle(base, _unchanged_head(base), tmp_path / "site")
    assert site.manifest.segmentation == base.manifest.segmentation and site.manifest.format_version == 6
    result = check_segmentation(Classifier(site, threads=1))
    assert result is not None and result.status == Status.PASS, result
