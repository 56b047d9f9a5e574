"""Two segmentation runs of the same held-out source compared paired (``python -m model_build segment-compare``):
a candidate better on every lesion by a known amount comes out with that difference and a CI around it, missed
lesions and false outlines are counted as drawn; runs of other images, a malformed or missing scores file are
refused naming the file and the problem. For real: a tiny ``segment --external-test`` run writes one row of
scores per held-out image, ``segment-rescore`` redoes exactly those rows from the model and the data, refuses
data whose held-out images are not the run's (its split.csv), and a run compared with itself differs by 0; the
same for the run's own test patients (``--part test``: two runs with one split, e.g. a model retrained on the same
data), and a run made before it wrote test scores is told how to get them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_build.segmentation_compare import SCORES_FILE, SegmentationCompareError, compare_segmentations, scores_file, write_scores
from model_build.segmentation_eval import Scores
from tests.conftest import REPO


def _run(root: Path, dice: list[float], drawn: list[int], lesion: list[bool]) -> Path:
    n = len(dice)
    nan = float("nan")
    d = np.array([v if les else nan for v, les in zip(dice, lesion)])
    scores = Scores(d, d, np.full(n, 3.0), np.full(n, 6.0), np.array(drawn), np.array(lesion))
    files = [f"images/case{i:03d}.png" for i in range(n)]
    write_scores(root / SCORES_FILE, ["breast-lesions-usg"] * n, files, [f"p{i // 2}" for i in range(n)], scores)
    return root


def test_a_candidate_better_on_every_lesion_is_measured_paired(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lesion = [True] * 40 + [False] * 10
    base = list(rng.uniform(0.2, 0.8, 50))
    baseline = _run(tmp_path / "a", base, [0] * 4 + [100] * 36 + [0] * 8 + [50] * 2, lesion)
    candidate = _run(tmp_path / "b", [v + 0.1 for v in base], [0] * 2 + [100] * 38 + [0] * 6 + [50] * 4, lesion)
    cmp = compare_segmentations(baseline, candidate, n_boot=200)
    assert cmp.lesions == 40 and cmp.lesion_free == 10 and cmp.groups == 25
    assert cmp.figures["dice_mean"].difference == pytest.approx(0.1)
    lo, hi = cmp.figures["dice_mean"].difference_ci
    assert lo == pytest.approx(0.1) and hi == pytest.approx(0.1)  # the same gain on every lesion: no spread at all
    assert cmp.figures["missed"].baseline == pytest.approx(4 / 40) and cmp.figures["missed"].candidate == pytest.approx(2 / 40)
    assert cmp.figures["false_outline_rate"].baseline == pytest.approx(2 / 10) and cmp.figures["false_outline_rate"].difference == pytest.approx(0.2)
    text = "\n".join(cmp.lines())
    assert "+0.100 [+0.100, +0.100]" in text and "40 lesion images, 10 lesion-free, 25 patient groups" in text


def test_runs_of_other_images_or_bad_files_are_refused_naming_them(tmp_path: Path) -> None:
    baseline = _run(tmp_path / "a", [0.5] * 4, [10] * 4, [True] * 4)
    fewer = _run(tmp_path / "b", [0.5] * 3, [10] * 3, [True] * 3)
    with pytest.raises(SegmentationCompareError, match="held out other images"):
        compare_segmentations(baseline, fewer)
    relabelled = _run(tmp_path / "c", [0.5] * 4, [10] * 4, [True, True, True, False])
    with pytest.raises(SegmentationCompareError, match="lesion mask in one run"):
        compare_segmentations(baseline, relabelled)
    with pytest.raises(SegmentationCompareError, match="no held-out scores"):
        compare_segmentations(baseline, tmp_path / "nothing")
    path = tmp_path / "c" / SCORES_FILE
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], rows[1].replace(",10", ",ten")] + rows[2:]) + "\n")
    with pytest.raises(SegmentationCompareError, match=r"external_scores.csv: row 2: .*ten"):
        compare_segmentations(baseline, tmp_path / "c")
    path.write_text(rows[0].replace(",dice", "") + "\n")
    with pytest.raises(SegmentationCompareError, match="missing column"):
        compare_segmentations(baseline, tmp_path / "c")


# --- a tiny real run -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_fold(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    pytest.importorskip("imagehash")
    from model_build.__main__ import main

    out = tmp_path_factory.mktemp("segment-fold") / "fold"
    argv = ["segment", "--data", str(datasets / "bus-bra"), "--data", str(datasets / "breast-lesions-usg"), "--out", str(out)]
    argv += ["--resolution", "64", "--limit", "8", "--epochs", "1", "--batch-size", "8", "--representative-steps", "8"]
    argv += ["--bootstrap", "20", "--external-test", "source=breast-lesions-usg"]
    assert main(argv) == 0
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "model_build", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.data
@pytest.mark.slow
def test_a_held_out_run_writes_scores_that_rescore_reproduces(tiny_fold: Path, datasets: Path) -> None:
    import json

    path = tiny_fold / SCORES_FILE
    written = list(csv.DictReader(open(path, newline="")))
    metrics = json.loads((tiny_fold / "report/metrics.json").read_text())
    assert len(written) == metrics["external_test"]["n"] and {r["source"] for r in written} == {"breast-lesions-usg"}
    split = {
        (r["source"], r["file"]): r["group"] for r in csv.DictReader(open(tiny_fold / "report/split.csv", newline="")) if r["split"] == "external"
    }
    assert {(r["source"], r["file"]): r["group"] for r in written} == split  # the split's own names and groups
    lesion_dice = [float(r["dice"]) for r in written if r["lesion"] == "1"]
    assert np.mean(lesion_dice) == pytest.approx(metrics["external_test"]["int8"]["all"]["dice_mean"]["value"], abs=1e-6)

    original = path.read_text()
    path.unlink()
    done = _cli(
        "segment-rescore", "--segmentation", str(tiny_fold), "--data", str(datasets / "bus-bra"), "--data", str(datasets / "breast-lesions-usg")
    )
    assert done.returncode == 0, done.stderr
    assert path.read_text() == original
    reported = metrics["external_test"]["int8"]["all"]["dice_mean"]["value"]
    assert f"(the run's report: {reported:.4f})" in done.stdout

    path.unlink()
    wrong = _cli("segment-rescore", "--segmentation", str(tiny_fold), "--data", str(datasets / "bus-bra"))
    assert wrong.returncode == 2 and "source=breast-lesions-usg: no image matches" in wrong.stderr and not path.exists()
    split_csv = tiny_fold / "report/split.csv"
    split_text = split_csv.read_text()
    last_external = [line for line in split_text.splitlines() if line.endswith(",external")][-1]
    split_csv.write_text(split_text.replace(last_external + "\n", ""))  # a run that held out one image fewer
    other = _cli(
        "segment-rescore", "--segmentation", str(tiny_fold), "--data", str(datasets / "bus-bra"), "--data", str(datasets / "breast-lesions-usg")
    )
    assert other.returncode == 2 and "give the --data it was built on" in other.stderr and not path.exists()
    split_csv.write_text(split_text)
    path.write_text(original)

    same = _cli("segment-compare", "--baseline", str(tiny_fold), "--candidate", str(tiny_fold), "--bootstrap", "20")
    assert same.returncode == 0, same.stderr
    assert "+0.000 [+0.000, +0.000]" in same.stdout


@pytest.mark.data
@pytest.mark.slow
def test_the_test_patients_scores_are_written_rescored_and_compared(tiny_fold: Path, datasets: Path) -> None:
    import json

    path = tiny_fold / scores_file("test")
    written = list(csv.DictReader(open(path, newline="")))
    metrics = json.loads((tiny_fold / "report/metrics.json").read_text())
    split = {(r["source"], r["file"]): r["group"] for r in csv.DictReader(open(tiny_fold / "report/split.csv", newline="")) if r["split"] == "test"}
    assert len(written) == metrics["test"]["n"] and {(r["source"], r["file"]): r["group"] for r in written} == split
    lesion_dice = [float(r["dice"]) for r in written if r["lesion"] == "1"]
    assert np.mean(lesion_dice) == pytest.approx(metrics["test"]["int8"]["all"]["dice_mean"]["value"], abs=1e-6)

    original = path.read_text()
    path.unlink()
    data = ("--data", str(datasets / "bus-bra"), "--data", str(datasets / "breast-lesions-usg"))
    missing = _cli("segment-compare", "--part", "test", "--baseline", str(tiny_fold), "--candidate", str(tiny_fold))
    assert missing.returncode == 2 and "test_scores.csv: no test scores" in missing.stderr and "segment-rescore --part test" in missing.stderr
    done = _cli("segment-rescore", "--part", "test", "--segmentation", str(tiny_fold), *data)
    assert done.returncode == 0, done.stderr
    assert path.read_text() == original
    same = _cli("segment-compare", "--part", "test", "--baseline", str(tiny_fold), "--candidate", str(tiny_fold), "--bootstrap", "20")
    assert same.returncode == 0, same.stderr
    assert "+0.000 [+0.000, +0.000]" in same.stdout


def test_an_unknown_part_is_refused_naming_it() -> None:
    with pytest.raises(SegmentationCompareError, match="part 'train': choose one of external, test"):
        scores_file("train")
