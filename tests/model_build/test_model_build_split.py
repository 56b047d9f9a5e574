"""Leak-free splits: no patient / near-duplicate group straddles train, validation and test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("imagehash")

from device.model.bundle import InputSpec
from model_build.data import DatasetError, LoadedData, Sample, load_sources
from model_build.split import (
    HoldOutRule,
    SplitAssignment,
    SplitError,
    assign_groups,
    check_no_leak,
    hold_out,
    near_duplicate_groups,
    perceptual_hashes,
    split_groups,
    write_split_csv,
)


def _synthetic(n_groups: int = 40, seed: int = 0) -> LoadedData:
    """Groups of near-identical noise images (+ a little jitter), some sharing a 'patient'."""
    rng = np.random.default_rng(seed)
    samples, pixels = [], []
    for g in range(n_groups):
        base = np.kron(rng.integers(0, 255, (8, 8)), np.ones((8, 8))).astype(np.float32)
        label = ("benign", "malignant", "normal")[g % 3]
        for k in range(1 + g % 3):
            img = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
            samples.append(Sample(Path(f"/d/src/{label}/{g}_{k}.png"), label, "src"))
            pixels.append(img)
    return LoadedData(samples, np.stack(pixels), ("normal", "benign", "malignant"))


def _assert_no_straddle(groups: list[str], assignment: SplitAssignment) -> None:
    by_group: dict[str, set[str]] = {}
    for g, s in zip(groups, assignment.splits):
        by_group.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in by_group.values())


def test_near_duplicates_are_grouped_and_never_straddle() -> None:
    data = _synthetic()
    groups = assign_groups(data)
    assert len(set(groups)) == 40  # every synthetic cluster found, none merged
    assignment = split_groups(data.samples, groups, seed=3)
    check_no_leak(assignment)
    _assert_no_straddle(groups, assignment)
    assert {"train", "val", "test"} == set(assignment.splits)


def test_split_is_seeded_and_stratified() -> None:
    data = _synthetic(60)
    groups = assign_groups(data)
    a = split_groups(data.samples, groups, seed=1)
    b = split_groups(data.samples, groups, seed=1)
    c = split_groups(data.samples, groups, seed=2)
    assert a == b and a != c
    for label in ("benign", "malignant", "normal"):
        in_test = [s for s, smp in zip(a.splits, data.samples) if smp.label == label and s == "test"]
        assert in_test, f"no {label} in test: not stratified"


def test_patient_ids_group_views_together(tmp_path: Path) -> None:
    samples = [Sample(Path(f"/x/{i}.png"), "benign" if i % 4 < 2 else "malignant", "bra", str(i // 2)) for i in range(80)]
    pixels = np.random.default_rng(0).integers(0, 255, (80, 32, 32)).astype(np.uint8)
    data = LoadedData(samples, pixels, ("benign", "malignant"))
    groups = assign_groups(data)
    assert groups[0] == groups[1] == "bra:patient:0"
    assignment = split_groups(samples, groups, seed=0)
    _assert_no_straddle(groups, assignment)
    write_split_csv(tmp_path / "split.csv", samples, assignment)
    assert (tmp_path / "split.csv").read_text().count("\n") == 81


def test_check_no_leak_catches_a_leak() -> None:
    with pytest.raises(SplitError, match="straddles"):
        check_no_leak(SplitAssignment(("g1", "g1", "g2"), ("train", "test", "val")))


@pytest.mark.data
def test_real_busi_split_has_no_cross_split_near_duplicates(datasets: Path) -> None:
    """On real BUSI: every pair of images within the duplicate distance lands in the same split."""
    data = load_sources([datasets / "busi"], InputSpec(height=224, width=224))
    groups = assign_groups(data)
    assignment = split_groups(data.samples, groups, seed=0)
    check_no_leak(assignment)
    hashes = perceptual_hashes(data.pixels)
    ids = near_duplicate_groups(hashes)
    bits = hashes.astype(np.int16)
    distance = bits.shape[1] - (bits @ bits.T + (1 - bits) @ (1 - bits).T)
    a, b = np.nonzero(np.triu(distance <= 10, k=1))
    assert len(a) > 20, "BUSI is known to contain near-duplicate frames"
    splits = np.array(assignment.splits)
    assert np.all(splits[a] == splits[b])
    assert np.all(ids[a] == ids[b])


def _fake_build(root: Path, split_text: str) -> Path:
    """A build's output as the pipeline leaves it: <name>/report/{metrics.json,split.csv} + <name>-float.weights.h5."""
    (root / "old" / "report").mkdir(parents=True)
    (root / "old" / "report" / "split.csv").write_text(split_text)
    history = {"epoch": [1, 2, 3], "val_loss": [0.7, 0.5, 0.6], "best_epoch": 2}
    (root / "old" / "report" / "metrics.json").write_text(json.dumps({"history": history, "config": {"train": {"lr": 2e-4}}}))
    weights = root / "old-float.weights.h5"
    weights.write_bytes(b"weights")
    return weights


def test_init_weights_trained_on_another_split_are_refused(tmp_path: Path) -> None:
    """Weights from a build with a different split may have trained on this build's test images."""
    from model_build.pipeline import weights_origin

    weights = _fake_build(tmp_path, "file,source,label,group,split\na.png,busi,benign,0,train\n")
    here = tmp_path / "split.csv"
    here.write_text("file,source,label,group,split\na.png,busi,benign,0,test\n")
    with pytest.raises(DatasetError, match="different split"):
        weights_origin(weights, here)
    here.write_text("file,source,label,group,split\na.png,busi,benign,0,train\n")
    origin = weights_origin(weights, here)
    assert origin is not None and origin["history"]["best_epoch"] == 2 and origin["build"] == str(tmp_path / "old")


def test_init_weights_without_a_build_are_untraced_or_missing(tmp_path: Path) -> None:
    from model_build.pipeline import weights_origin

    loose = tmp_path / "mine.weights.h5"
    loose.write_bytes(b"weights")
    assert weights_origin(loose, tmp_path / "split.csv") is None
    with pytest.raises(DatasetError, match="no such file"):
        weights_origin(tmp_path / "absent-float.weights.h5", tmp_path / "split.csv")


@pytest.mark.parametrize("text", ["device", "=toshiba", "device=", " = "])
def test_a_malformed_external_test_rule_is_refused(text: str) -> None:
    with pytest.raises(SplitError, match="expected COLUMN=TEXT"):
        HoldOutRule.parse(text)


def test_holding_out_takes_whole_groups_and_matches_case_insensitively() -> None:
    def sample(name: str, device: str | None) -> Sample:
        return Sample(Path(name), "benign", "s", None, (("device", device),) if device else ())

    samples = [sample("a", "Toshiba Aplio 300"), sample("b", "GE Logiq 5"), sample("c", "GE Logiq 7"), sample("d", None)]
    groups = ["p1", "p1", "p2", "p3"]  # patient p1 was scanned on both machines
    kept, held = hold_out(samples, groups, HoldOutRule.parse("Device= toshiba"))
    assert held.tolist() == [0, 1] and kept.tolist() == [2, 3]  # p1's GE image goes out with its Toshiba image
    with pytest.raises(SplitError, match=r"no image matches; values of 'device': \['GE Logiq 5', 'GE Logiq 7', 'Toshiba Aplio 300'\]"):
        hold_out(samples, groups, HoldOutRule.parse("device=philips"))
