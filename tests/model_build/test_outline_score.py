"""``python -m model_build outline-score`` scores what the device draws: a filled contour has the area and Dice its
shape says; on real test lesions of the shipped bundle each image's Dice is the one computed, independently, from the
``lesion.contour`` that ``python -m device classify --json`` prints for that file (run as its own process); a frame
with no outline scores 0; a missing split file or part stops the command with exit 2 naming it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from model_build.outline_score import OutlineRow, dice, filled, summarise

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SPLIT = ROOT / "models" / "segmentation-lite0" / "report" / "split.csv"


def test_a_filled_square_contour_is_its_square() -> None:
    mask = filled([(10, 10), (19, 10), (19, 19), (10, 19)], (40, 40))
    assert mask.sum() == 100 and mask[10:20, 10:20].all()
    truth = np.zeros((40, 40), bool)
    truth[10:20, 15:25] = True  # half of it overlaps
    assert dice(mask, truth) == pytest.approx(0.5)
    assert filled([(1, 1), (5, 5)], (8, 8)).sum() == 0  # two points enclose nothing


def test_no_outline_scores_zero_and_counts_in_the_mean_but_not_the_conclusive_one() -> None:
    rows = [
        OutlineRow("a", "1.png", "g1", 0.9, True, False, "suspicious"),
        OutlineRow("a", "2.png", "g2", 0.0, False, True, "inconclusive"),
    ]
    s = summarise(rows, n_boot=50)
    assert s["all"]["dice_mean"]["value"] == pytest.approx(0.45)
    assert s["all"]["conclusive_dice_mean"]["value"] == pytest.approx(0.9)
    assert (s["a"]["lesions"], s["a"]["outlined"], s["a"]["inconclusive"]) == (2, 1, 1)


def _device_contour_dice(model: Path, image: Path, mask_file: Path) -> float:
    """Dice of the contour the device prints, filled with PIL (not the module's cv2), against the mask."""
    out = subprocess.run(
        [sys.executable, "-m", "device", "classify", "--model", str(model), "--json", str(image)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    lesion = json.loads(out.stdout.strip().splitlines()[-1])["lesion"]
    truth = np.asarray(Image.open(mask_file).convert("L")) > 0
    if not lesion or not lesion["found"]:
        return 0.0
    canvas = Image.new("L", (truth.shape[1], truth.shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in lesion["contour"]], fill=1, outline=1)
    pred = np.asarray(canvas) > 0
    return 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())


def test_each_images_dice_is_that_of_the_contour_classify_json_prints(datasets: Path, shipped_bundle_dir: Path, tmp_path: Path) -> None:
    with open(SHIPPED_SPLIT, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test" and r["source"] == "bus-bra" and r["label"] != "normal"][:3]
    split = tmp_path / "split.csv"
    with open(split, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
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
    for name, value in scored.items():
        mask = datasets / "bus-bra" / "masks" / f"mask_{Path(name).stem.split('_', 1)[1]}.png"
        expected = _device_contour_dice(shipped_bundle_dir, datasets / "bus-bra" / name, mask)
        assert value == pytest.approx(expected, abs=0.02), name
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
