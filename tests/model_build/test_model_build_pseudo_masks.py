"""``python -m model_build pseudo-masks`` turns a teacher segmentation model's confident outlines into masks for a
source that has none, as a source folder ``segment`` reads: with the tiny hand-weighted model (tests/device/
tiny_segmentation.py, which outlines what is brighter than mid-grey) on a synthetic class-folder source, the bright
lesions get image-sized masks that match them, a faint one (outlined, but below the confidence) and a lesion-free
image get none, normal scans get none, and ``scan_segmentation_source`` finds exactly those masks; images are
linked, not copied; bad calls name their problem and write nothing."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from model_build.segmentation_data import scan_segmentation_source
from tests.conftest import REPO
from tests.device.tiny_segmentation import build_tiny_segmentation, lesion_frame

H, W = 120, 160
BRIGHT = {"benign (1).png": ((60, 50), (30, 18)), "benign (2).png": ((100, 70), (22, 26))}


def _source(root: Path) -> Path:
    for name in ("benign", "normal"):
        (root / name).mkdir(parents=True)
    for i, (name, (centre, axes)) in enumerate(BRIGHT.items()):
        cv2.imwrite(str(root / "benign" / name), lesion_frame(H, W, centre, axes, seed=i))
    faint = lesion_frame(H, W, (80, 60), (30, 20), seed=5, lesion=132)  # just above mid-grey: outlined, weakly
    cv2.imwrite(str(root / "benign" / "benign (3).png"), faint)
    cv2.imwrite(str(root / "benign" / "benign (4).png"), lesion_frame(H, W, (80, 60), (1, 1), seed=6, lesion=50))  # nothing
    cv2.imwrite(str(root / "normal" / "normal (1).png"), lesion_frame(H, W, (80, 60), (25, 15), seed=7))
    return root


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_build", "pseudo-masks", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_confident_outlines_become_the_sources_masks(tmp_path: Path) -> None:
    teacher = build_tiny_segmentation(tmp_path / "teacher")
    source = _source(tmp_path / "busi")
    proc = _run("--data", str(source), "--segmentation", str(teacher), "--out", str(tmp_path / "pseudo"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tmp_path / "pseudo" / "busi"
    assert f"{folder}: 2 of 4 lesion images masked" in proc.stdout and "not outlined 1, below the confidence 1" in proc.stdout, proc.stdout
    assert (folder / "images").is_symlink() and (folder / "images").resolve() == source.resolve()

    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = {Path(r["filename"]).name: r for r in csv.DictReader(fh)}
    assert set(rows) == {*BRIGHT, "benign (3).png", "benign (4).png", "normal (1).png"}
    assert {name for name, r in rows.items() if r["mask"]} == set(BRIGHT)
    for name, (centre, axes) in BRIGHT.items():
        mask = cv2.imread(str(folder / "masks" / rows[name]["mask"]), cv2.IMREAD_GRAYSCALE)
        truth = np.zeros((H, W), np.uint8)
        cv2.ellipse(truth, centre, axes, 0, 0, 360, 1, -1)
        assert mask.shape == (H, W) and set(np.unique(mask)) == {0, 255}
        got = mask > 0
        dice = 2 * (got & (truth > 0)).sum() / (got.sum() + truth.sum())
        assert dice > 0.85, (name, dice)

    samples, missing = scan_segmentation_source(folder, lesion_free=False)
    masked = {s.sample.path.name for s in samples if s.mask is not None}
    assert masked == set(BRIGHT) and missing == 2
    assert {s.sample.path.name for s in samples if s.mask is None} == {"normal (1).png"}
    assert all(s.sample.source == "busi" for s in samples)


def test_bad_calls_name_the_problem_and_write_nothing(tmp_path: Path) -> None:
    teacher = build_tiny_segmentation(tmp_path / "teacher")
    source = _source(tmp_path / "busi")
    (tmp_path / "pseudo" / "busi").mkdir(parents=True)
    proc = _run("--data", str(source), "--segmentation", str(teacher), "--out", str(tmp_path / "pseudo"))
    assert proc.returncode == 2 and f"{tmp_path / 'pseudo' / 'busi'}: exists already" in proc.stderr
    assert list((tmp_path / "pseudo" / "busi").iterdir()) == []

    proc = _run("--data", str(tmp_path / "nowhere"), "--segmentation", str(teacher), "--out", str(tmp_path / "other"))
    assert proc.returncode == 2 and f"{tmp_path / 'nowhere'}: not a directory" in proc.stderr
    proc = _run("--data", str(source), "--segmentation", str(tmp_path / "no-teacher"), "--out", str(tmp_path / "other"))
    assert proc.returncode == 2 and "no-teacher" in proc.stderr and not (tmp_path / "other").exists()
    proc = _run("--data", str(source), "--segmentation", str(teacher), "--out", str(tmp_path / "other"), "--min-confidence", "1.5")
    assert proc.returncode == 2 and "--min-confidence 1.5" in proc.stderr and not (tmp_path / "other").exists()
