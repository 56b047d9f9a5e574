"""``python -m model_build outline-score`` scores what the device draws: a filled contour has the area and Dice its
shape says; on real test lesions of the shipped bundle each image's Dice is the one computed, independently, from the
``lesion.contour`` that ``python -m device classify --json`` prints for that file (run as its own process); a frame
the device withholds the outline on (a blank, inconclusive one) scores 0 and counts in the mean but not in the
conclusive one; a missing split file or part stops the command with exit 2 naming it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model_build.outline_score import _score_one, filled, listed_images, summarise
from model_build.segmentation_eval import dice

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SPLIT = ROOT / "models" / "segmentation-lite0" / "report" / "split.csv"


def test_a_filled_square_contour_is_its_square() -> None:
    mask = filled([(10, 10), (19, 10), (19, 19), (10, 19)], (40, 40))
    assert mask.sum() == 100 and mask[10:20, 10:20].all()
    truth = np.zeros((40, 40), bool)
    truth[10:20, 15:25] = True  # half of it overlaps
    assert dice(mask, truth) == pytest.approx(0.5)
    assert filled([(1, 1), (5, 5)], (8, 8)).sum() == 0  # two points enclose nothing


def _shipped_test_rows(source: str, n: int) -> list[dict[str, str]]:
    with open(SHIPPED_SPLIT, newline="", encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == "test" and r["source"] == source and r["label"] != "normal"][:n]


def _write_split(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_frame_without_an_outline_scores_zero_and_counts_in_the_mean_but_not_the_conclusive_one(
    datasets: Path, shipped_bundle_dir: Path, tmp_path: Path
) -> None:
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.model.bundle import load_bundle

    (seg, group), *_ = listed_images(_write_split(tmp_path / "split.csv", _shipped_test_rows("bus-bra", 1)), "test", [datasets / "bus-bra"])
    classifier = Classifier(load_bundle(shipped_bundle_dir), threads=1)
    real = decode_image_file(seg.sample.path)
    blank = _score_one(classifier, np.zeros_like(real), seg, group)  # the device withholds the outline: inconclusive
    assert (blank.dice, blank.outlined, blank.inconclusive) == (0.0, False, True)
    outlined = _score_one(classifier, real, seg, group)
    assert outlined.outlined and not outlined.inconclusive and outlined.dice > 0.5
    s = summarise([outlined, blank], n_boot=50)
    assert s["all"]["dice_mean"]["value"] == pytest.approx(outlined.dice / 2)
    assert s["all"]["conclusive_dice_mean"]["value"] == pytest.approx(outlined.dice)
    assert (s["bus-bra"]["lesions"], s["bus-bra"]["outlined"], s["bus-bra"]["inconclusive"]) == (2, 1, 1)


def _device_contour_dice(model: Path, images: list[Path], masks: list[Path]) -> dict[str, float]:
    """Per image, the Dice of the contour the device prints (one `classify --json` process for all), filled with PIL
    (not the module's cv2), against the mask."""
    out = subprocess.run(
        [sys.executable, "-m", "device", "classify", "--model", str(model), "--json", *map(str, images)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    lesions = {Path(r["path"]).name: r["lesion"] for r in map(json.loads, out.stdout.strip().splitlines())}
    scores = {}
    for image, mask_file in zip(images, masks):
        truth, lesion = np.asarray(Image.open(mask_file).convert("L")) > 0, lesions[image.name]
        if not lesion or not lesion["found"]:
            scores[image.name] = 0.0
            continue
        canvas = Image.new("L", (truth.shape[1], truth.shape[0]), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in lesion["contour"]], fill=1, outline=1)
        pred = np.asarray(canvas) > 0
        scores[image.name] = 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())
    return scores


def test_each_images_dice_is_that_of_the_contour_classify_json_prints(datasets: Path, shipped_bundle_dir: Path, tmp_path: Path) -> None:
    rows = _shipped_test_rows("bus-bra", 3)
    split = _write_split(tmp_path / "split.csv", rows)
    out_csv = tmp_path / "scores.csv"
    run = subprocess.run(
        [sys.executable, "-m", "model_build", "outline-score", "--bundle", str(shipped_bundle_dir), "--split", str(split)]
        + ["--data", str(datasets / "bus-bra"), "--out", str(out_csv), "--bootstrap", "20"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert "| all | 3 |" in run.stdout
    with open(out_csv, newline="", encoding="utf-8") as fh:
        scored = {r["file"]: float(r["dice"]) for r in csv.DictReader(fh)}
    assert set(scored) == {r["file"] for r in rows}
    names = sorted(scored)
    masks = [datasets / "bus-bra" / "masks" / f"mask_{Path(name).stem.split('_', 1)[1]}.png" for name in names]
    expected = _device_contour_dice(shipped_bundle_dir, [datasets / "bus-bra" / name for name in names], masks)
    for name in names:
        assert scored[name] == pytest.approx(expected[Path(name).name], abs=0.02), name
    assert max(scored.values()) > 0.5  # real outlines on real lesions, not all zeros


def test_a_missing_split_or_part_stops_naming_it(tmp_path: Path, shipped_bundle_dir: Path) -> None:
    def outline_score(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "model_build", "outline-score", "--bundle", str(shipped_bundle_dir), "--data", str(tmp_path), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)

    missing = outline_score("--split", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "nope.csv" in missing.stderr
    split = tmp_path / "split.csv"
    split.write_text("source,file,label,group,split\nbus-bra,images/x.png,benign,g,train\n", encoding="utf-8")
    no_part = outline_score("--split", str(split), "--part", "external")
    assert no_part.returncode == 2 and "no image in part 'external'" in no_part.stderr and "train" in no_part.stderr
