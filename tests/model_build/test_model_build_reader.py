"""The model beside the sonographer's BI-RADS (model_build.reader) and re-scoring a built bundle's
test split (model_build.rescore): parsing, the paired figures, bad inputs, and the shipped bundle."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.model.bundle import load_bundle
from model_build.__main__ import main
from model_build.data import Sample
from model_build.evaluate import binary_auc
from model_build.reader import (
    ReaderInputs,
    compare,
    compare_bundle,
    parse_birads,
    select_with_birads,
    specificity_at_sensitivity,
)
from model_build.rescore import RescoreError


@pytest.mark.parametrize("text, value", [("2", 2.0), ("4", 4.0), ("4a", 4.25), (" 4B ", 4.5), ("4c", 4.75), ("5", 5.0)])
def test_birads_categories_are_read(text: str, value: float) -> None:
    assert parse_birads(text) == value


@pytest.mark.parametrize("text", [None, "", "0", "6", "3a", "4d", "five", "7", "4.5"])
def test_non_readings_are_left_out(text: str | None) -> None:
    # 0 = incomplete, 6 = biopsy-proven cancer (that is the label, not a reading)
    assert parse_birads(text) is None


def test_specificity_at_sensitivity_picks_the_highest_threshold_reaching_it() -> None:
    malignant = np.array([True, True, True, True, False, False, False, False])
    score = np.array([0.9, 0.8, 0.4, 0.2, 0.5, 0.3, 0.1, 0.05])
    assert specificity_at_sensitivity(malignant, score, 0.5) == (0.8, 1.0)  # two of four flagged at >= 0.8
    assert specificity_at_sensitivity(malignant, score, 0.75) == (0.4, 0.75)  # 0.5 is a false positive
    assert specificity_at_sensitivity(malignant, score, 1.0) == (0.2, 0.5)


def _inputs(n_per_class: int = 12) -> ReaderInputs:
    malignant = np.array([True] * n_per_class + [False] * n_per_class)
    model = np.r_[np.linspace(0.55, 1.0, n_per_class), np.linspace(0.0, 0.6, n_per_class)]  # overlaps a little
    birads = np.r_[[5.0] * 4 + [4.0] * 7 + [3.0], [4.0] * 3 + [3.0] * 5 + [2.0] * (n_per_class - 8)]
    return ReaderInputs(malignant, model, birads, np.arange(2 * n_per_class))


def test_paired_comparison_figures() -> None:
    x = _inputs()
    result = compare(x, model_threshold=0.5, n_boot=200)
    f = result["figures"]
    assert f["model_auc"]["value"] == pytest.approx(binary_auc(x.malignant, x.model_score))
    assert f["reader_auc"]["value"] == pytest.approx(binary_auc(x.malignant, x.birads))
    assert f["auc_difference"]["value"] == pytest.approx(f["model_auc"]["value"] - f["reader_auc"]["value"])
    # BI-RADS >= 4 flags 11 of 12 malignant and 3 of 12 benign
    assert f["reader_sensitivity"]["value"] == pytest.approx(11 / 12)
    assert f["reader_specificity"]["value"] == pytest.approx(9 / 12)
    threshold, spec = specificity_at_sensitivity(x.malignant, x.model_score, 11 / 12)
    assert f["model_specificity_at_reader_sensitivity"]["value"] == pytest.approx(spec)
    assert f["model_sensitivity_at_shipped_threshold"]["value"] == 1.0
    for key, entry in f.items():
        if key != "model_threshold_at_reader_sensitivity":
            lo, hi = entry["ci95"]
            assert lo <= entry["value"] <= hi, key
    assert result["n_malignant"] == result["n_benign"] == 12
    assert result["birads_counts"] == {"2": 4, "3": 6, "4": 10, "5": 4}


def test_the_card_names_the_images_compared() -> None:
    from model_build.card import reader_lines

    result = compare(_inputs(), model_threshold=0.5, n_boot=20)
    result["sources"] = ["s"]
    assert reader_lines(result)[0].startswith("On the 24 test images (12 malignant")
    assert reader_lines(result, "held-out images")[0].startswith("On the 24 held-out images (12 malignant")


def test_too_few_images_of_a_class_is_not_compared() -> None:
    x = _inputs(4)
    result = compare(x, model_threshold=None, n_boot=10)
    assert "figures" not in result and "4 malignant and 4 benign" in result["skipped"]


def test_images_without_a_reading_are_counted_and_left_out() -> None:
    samples = [
        Sample(Path(f"{i}.png"), "benign", "s", str(i), (("birads", b),) if b is not None else ()) for i, b in enumerate(["3", "6", None, "4c", "x"])
    ]
    x, left_out, sources = select_with_birads(samples, np.zeros(5, bool), np.linspace(0, 1, 5), np.arange(5))
    assert list(x.birads) == [3.0, 4.75] and list(x.model_score) == [0.0, 0.75]
    assert left_out == {"no_birads_column": 1, "unreadable_or_not_a_reading": 2, "view_cut_from_an_image": 0} and sources == ["s"]


def test_views_cut_from_an_image_are_not_compared_with_its_reading() -> None:
    """A lesion-free or lesion-centred view keeps its image's metadata, BI-RADS included, but the reading describes
    the whole image's lesion: a lesion-free view (label normal) beside a BI-RADS 4 would count against the reader.
    Views are counted and left out; the full image stays."""
    full = Sample(Path("a.png"), "benign", "s", "a", (("birads", "4"),))
    views = [
        Sample(Path("a.png"), label, "s", "a", (("birads", "4"),), view=view, region=(0, 0, 8, 8))
        for label, view in (("normal", "lesion_free"), ("benign", "lesion_centred"))
    ]
    x, left_out, sources = select_with_birads([full, *views], np.zeros(3, bool), np.array([0.1, 0.2, 0.3]), np.zeros(3))
    assert list(x.model_score) == [0.1] and list(x.birads) == [4.0]
    assert left_out == {"no_birads_column": 0, "unreadable_or_not_a_reading": 0, "view_cut_from_an_image": 2} and sources == ["s"]


# --- re-scoring a built bundle: the tiny hand-weighted bundle (p(malignant) rises with brightness) ----------------

MALIGNANT_LEVELS = [250, 235, 220, 205, 190, 120]
BENIGN_LEVELS = [30, 45, 60, 75, 90, 105, 135, 150]


def _dataset_and_bundle(tmp_path: Path, tiny_bundle_dir: Path) -> tuple[Path, Path]:
    data = tmp_path / "readerset"
    (data / "images").mkdir(parents=True)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    (bundle / "report").mkdir()
    rows, split_rows = [], []
    for i, (label, level) in enumerate([("malignant", v) for v in MALIGNANT_LEVELS] + [("benign", v) for v in BENIGN_LEVELS]):
        name = f"img{i:02d}.png"
        Image.fromarray(np.full((40, 40), level, np.uint8)).save(data / "images" / name)
        birads = "4" if level >= 120 else "3"
        rows.append([name, label, f"p{i}", birads])
        split_rows.append(["readerset", f"images/{name}", label, f"readerset:p{i}", "test"])
    rows.append(["extra.png", "benign", "p99", "2"])  # in the data but not in the split: never scored
    Image.fromarray(np.full((40, 40), 10, np.uint8)).save(data / "images" / "extra.png")
    with open(data / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["filename", "label", "patient_id", "birads"], *rows])
    with open(bundle / "report" / "split.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["source", "file", "label", "group", "split"], *split_rows, ["othersource", "a.png", "benign", "o:1", "test"]])
    return data, bundle


def test_a_bundles_test_split_is_rescored_with_its_int8_model(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    data, bundle = _dataset_and_bundle(tmp_path, tiny_bundle_dir)
    result = compare_bundle(bundle, [data], n_boot=100)
    malignant = np.array([True] * len(MALIGNANT_LEVELS) + [False] * len(BENIGN_LEVELS))
    levels = np.array(MALIGNANT_LEVELS + BENIGN_LEVELS, dtype=float)
    assert result["n_images"] == len(levels) and result["sources"] == ["readerset"]
    assert result["figures"]["model_auc"]["value"] == pytest.approx(binary_auc(malignant, levels))  # the tiny model's rule
    assert result["figures"]["reader_auc"]["value"] == pytest.approx(binary_auc(malignant, (levels >= 120).astype(float)))


def test_a_changed_dataset_is_refused(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    data, bundle = _dataset_and_bundle(tmp_path, tiny_bundle_dir)
    (data / "images" / "img03.png").unlink()
    with pytest.raises(RescoreError, match="img03.png"):
        compare_bundle(bundle, [data], n_boot=10)
    text = (data / "labels.csv").read_text().replace("img03.png,malignant", "img03.png,benign")
    (data / "labels.csv").write_text(text)
    Image.fromarray(np.full((40, 40), 205, np.uint8)).save(data / "images" / "img03.png")
    with pytest.raises(RescoreError, match="label 'benign' in the data, 'malignant' in the split"):
        compare_bundle(bundle, [data], n_boot=10)


def test_a_bundle_without_its_split_is_refused_by_the_cli(tmp_path: Path, tiny_bundle_dir: Path, caplog) -> None:
    data, bundle = _dataset_and_bundle(tmp_path, tiny_bundle_dir)
    (bundle / "report" / "split.csv").unlink()
    assert main(["reader", "--bundle", str(bundle), "--data", str(data)]) == 2
    assert "split.csv" in caplog.text and "cannot tell which images were held out" in caplog.text


def test_a_missing_dataset_folder_is_named_by_the_cli(tmp_path: Path, tiny_bundle_dir: Path, caplog) -> None:
    _, bundle = _dataset_and_bundle(tmp_path, tiny_bundle_dir)
    missing = tmp_path / "no-such-dataset"
    assert main(["reader", "--bundle", str(bundle), "--data", str(missing)]) == 2
    assert f"dataset {missing}: not a directory" in caplog.text


# --- the shipped bundle on the real data -----------------------------------------------------------------------------


def test_shipped_bundle_reader_comparison_is_reproduced(shipped_bundle_dir: Path, datasets: Path, tmp_path: Path) -> None:
    """Re-scoring the shipped bundle's BUS-BRA test images gives the AUC the build's own evaluation measured
    (two code paths; the build scores its views apart, as `bus-bra#lesion_free`), and the comparison stored in its
    report and card, over every source with a reading, is the one this code produces now."""
    copy = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_dir, copy)
    stored = json.loads((shipped_bundle_dir / "report" / "metrics.json").read_text())
    bus_bra_only = compare_bundle(copy, [datasets / "busi", datasets / "bus-bra"])
    build_bus_bra = stored["evaluations"]["test_int8"]["source:bus-bra"]
    assert bus_bra_only["figures"]["model_auc"]["value"] == pytest.approx(build_bus_bra["headline"]["malignant_auc"]["value"], abs=1e-9)
    assert bus_bra_only["n_images"] == build_bus_bra["n"] and bus_bra_only["sources"] == ["bus-bra"]
    sources = sorted(load_bundle(shipped_bundle_dir).manifest.training_data["sources"])
    assert main(["reader", "--bundle", str(copy), *(a for s in sources for a in ("--data", str(datasets / s))), "--write"]) == 0
    fresh = json.loads((copy / "report" / "metrics.json").read_text())["reader_baseline"]
    assert stored.get("reader_baseline") == fresh, "the shipped report's BI-RADS comparison is stale"
    card = (copy / "MODEL_CARD.md").read_text()
    assert card == (shipped_bundle_dir / "MODEL_CARD.md").read_text()
    assert "## Compared with the sonographer's BI-RADS" in card and "| malignant AUC |" in card
    load_bundle(copy)  # the model and manifest are untouched


def test_a_signed_bundle_is_not_rewritten(shipped_bundle_dir: Path, tmp_path: Path) -> None:
    """Adding the comparison goes through device.model.bundle.edit_bundle: a signed bundle is refused, its signature
    still verifies, and nothing in it changed (it used to be rewritten, voiding the signature silently)."""
    from device.model.bundle import BundleError
    from device.model.signing import generate_keypair, load_private_key, load_public_key, sign_bundle, verify_bundle
    from model_build.reader import store_in_bundle

    bundle = tmp_path / "signed"
    shutil.copytree(shipped_bundle_dir, bundle)
    private, public = generate_keypair(tmp_path / "keys")
    sign_bundle(bundle, load_private_key(private))
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    with pytest.raises(BundleError, match="is signed"):
        store_in_bundle(bundle, json.loads((bundle / "report" / "metrics.json").read_text())["reader_baseline"])
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    verify_bundle(bundle, load_public_key(public))
