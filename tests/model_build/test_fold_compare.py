"""Comparing two recipes' folds of the same held-out source, and ensembling them (model_build/fold_compare.py):
specificity at the balanced sensitivity on a case with a known answer; identical folds differ by exactly zero; a
candidate that ranks better shows a positive AUC difference whose CI excludes zero; a source with real normal scans
gets their top-class-normal and called-malignant shares, paired, with known answers (one with 4 gets none), and
lesions seen as normal are counted paired; an ensemble is the per-image mean and reads back as a study fold
(``modes``); folds of different images, a changed label, a bad probability or a missing column are refused naming the
fold and the row, by the real command too (exit 2, nothing written)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_build.fold_compare import COLUMNS, compare_folds, ensemble_folds, specificity_at_sensitivity
from model_build.operating_modes import PREDICTIONS_FILE, StudyError, read_folds

REPO = Path(__file__).resolve().parents[2]


def _write_fold(root: Path, p_malignant: np.ndarray, labels: list[str], edit: dict[int, dict[str, str]] | None = None) -> Path:
    path = root / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for i, (p, label) in enumerate(zip(p_malignant, labels)):
            row = {
                "source": "held",
                "file": f"images/{i:03d}.png",
                "view": "full",
                "label": label,
                "group": f"held:patient:{i // 2}",  # two images per patient
                "p_normal": "0.000000",
                "p_benign": f"{1 - p:.6f}",
                "p_malignant": f"{p:.6f}",
            }
            row.update((edit or {}).get(i, {}))
            writer.writerow(row)
    return root


@pytest.fixture
def lesions() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(3)
    malignant = np.arange(120) % 3 == 0
    noisy = np.clip(0.5 + 0.25 * (malignant - 0.5) + rng.normal(0, 0.2, 120), 0.001, 0.999)  # an AUC near 0.8
    return noisy, ["malignant" if m else "benign" for m in malignant]


def test_specificity_at_the_balanced_sensitivity_has_the_known_answer() -> None:
    # 10 malignant at 0.1 … 1.0: 0.90 sensitivity keeps 9 of them, so the threshold is the 2nd lowest, 0.2
    p = np.array([*np.linspace(0.1, 1.0, 10), 0.05, 0.15, 0.25, 0.5])
    malignant = np.array([True] * 10 + [False] * 4)
    assert specificity_at_sensitivity(p, malignant) == pytest.approx(2 / 4)  # 0.05 and 0.15 are below 0.2


def test_identical_folds_differ_by_exactly_zero(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    a, b = _write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", p, labels)
    result = compare_folds(a, b, n_boot=200)
    assert (result.lesions, result.malignant, result.sources) == (120, 40, ("held",))
    assert result.auc.difference == 0 and result.auc.difference_ci == (0, 0)
    assert result.specificity_at_sensitivity.difference == 0


def test_a_better_ranking_candidate_shows_a_positive_difference(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    malignant = np.array([label == "malignant" for label in labels])
    sharper = np.clip(p + 0.3 * (malignant - 0.5), 0.001, 0.999)
    result = compare_folds(_write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", sharper, labels), n_boot=200)
    assert result.auc.candidate > result.auc.baseline and result.auc.difference_ci[0] > 0, result.lines()
    assert result.specificity_at_sensitivity.difference > 0
    assert "malignant AUC" in "\n".join(result.lines())


def _with_normals(root: Path, p_malignant: np.ndarray, labels: list[str], normal: list[tuple[float, float]]) -> Path:
    """The lesions plus real normal scans given as (p_normal, p_malignant), one patient each."""
    edit = {
        len(labels) + j: {"p_normal": f"{pn:.6f}", "p_benign": f"{1 - pn - pm:.6f}", "p_malignant": f"{pm:.6f}", "group": f"held:patient:n{j}"}
        for j, (pn, pm) in enumerate(normal)
    }
    return _write_fold(root, np.concatenate([p_malignant, np.zeros(len(normal))]), labels + ["normal"] * len(normal), edit)


def test_real_normal_scans_are_compared_paired(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    malignant = p[np.array([label == "malignant" for label in labels])]
    below = 0.0  # never called malignant either (p(malignant) 0 is under any threshold keeping 0.90 of the cancers)
    called = float(np.min(malignant[malignant >= np.quantile(malignant, 0.5)]))  # at or above the 0.90 threshold
    # baseline: 20 normals, all with a lesion top class, 10 called malignant; candidate: 15 top-normal, 2 called malignant
    base = [(0.2, called)] * 10 + [(0.2, below)] * 10
    cand = [(0.9, below)] * 15 + [(0.2, called)] * 2 + [(0.2, below)] * 3
    result = compare_folds(_with_normals(tmp_path / "a", p, list(labels), base), _with_normals(tmp_path / "b", p, list(labels), cand), n_boot=200)
    assert result.lesions == 120  # the normals are not lesions
    assert result.normal_scans is not None and result.normal_scans.count == 20
    top, called_share = result.normal_scans.top_class_normal, result.normal_scans.called_malignant
    assert (top.baseline, top.candidate, top.difference) == pytest.approx((0.0, 0.75, 0.75))
    assert (called_share.baseline, called_share.candidate) == pytest.approx((0.5, 0.1))
    assert top.difference_ci[0] > 0 and called_share.difference_ci[1] < 0
    assert any("real normal scans (20): top class normal" in line for line in result.lines())
    few = compare_folds(_with_normals(tmp_path / "c", p, list(labels), base[:4]), _with_normals(tmp_path / "d", p, list(labels), cand[:4]), n_boot=20)
    assert few.normal_scans is None


def test_an_ensemble_is_the_mean_and_reads_back_as_a_study_fold(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    q = np.clip(1 - p, 0.001, 0.999)
    written = ensemble_folds([_write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", q, labels)], tmp_path / "ens")
    with open(written, newline="", encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    assert len(rows) == 120
    for i in (0, 7, 119):
        assert float(rows[f"images/{i:03d}.png"]["p_malignant"]) == pytest.approx((p[i] + q[i]) / 2, abs=2e-6)
        assert rows[f"images/{i:03d}.png"]["label"] == labels[i]
    pooled = read_folds([tmp_path / "ens"])
    assert pooled.probs.shape == (120, 3) and np.allclose(pooled.probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({5: {"file": "images/other.png"}}, "do not hold the same held-out images"),
        ({5: {"label": "malignant" if 5 % 3 else "benign"}}, "label/group"),
        ({5: {"p_malignant": "high"}}, "line 7: a probability is not a number"),
        ({5: {"p_malignant": "1.5"}}, "line 7: probabilities"),
    ],
    ids=["other-images", "changed-label", "not-a-number", "out-of-range"],
)
def test_folds_that_cannot_be_paired_are_refused_naming_the_row(tmp_path: Path, lesions, edit, message: str) -> None:
    p, labels = lesions
    a, b = _write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", p, labels, edit)
    with pytest.raises(StudyError, match=message):
        compare_folds(a, b, n_boot=10)
    with pytest.raises(StudyError, match=message):
        ensemble_folds([a, b], tmp_path / "ens")
    assert not (tmp_path / "ens").exists()


def test_a_fold_missing_a_column_or_file_is_refused(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    a = _write_fold(tmp_path / "a", p, labels)
    path = tmp_path / "b" / PREDICTIONS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("source,file,view,label,group,p_normal,p_benign\nheld,x.png,full,benign,g,0.1,0.9\n", encoding="utf-8")
    with pytest.raises(StudyError, match=r"missing column\(s\) \['p_malignant'\]"):
        compare_folds(a, tmp_path / "b")
    with pytest.raises(StudyError, match="no report/external_predictions.csv"):
        compare_folds(a, tmp_path / "nowhere")
    with pytest.raises(StudyError, match="two folds or more"):
        ensemble_folds([a], tmp_path / "ens")


def test_the_commands_print_the_comparison_and_refuse_bad_folds(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    a, b = _write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", p[::-1].copy(), labels)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "model_build", *argv], capture_output=True, text=True, timeout=120, cwd=REPO)

    ok = run("compare", "--baseline", str(a), "--candidate", str(b), "--bootstrap", "50")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "120 lesions (40 malignant)" in ok.stdout and "malignant AUC:" in ok.stdout and "specificity at 0.90" in ok.stdout
    ens = run("ensemble", "--fold", str(a), "--fold", str(b), "--out", str(tmp_path / "ens"))
    assert ens.returncode == 0 and (tmp_path / "ens" / PREDICTIONS_FILE).is_file(), ens.stderr[-2000:]
    bad = run("compare", "--baseline", str(a), "--candidate", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "compare failed" in bad.stderr and "nowhere" in bad.stderr and "Traceback" not in bad.stderr


def test_lesions_seen_as_normal_are_counted_paired(tmp_path: Path, lesions) -> None:
    p, labels = lesions
    seen_normal = {i: {"p_normal": "0.900000", "p_benign": "0.050000", "p_malignant": "0.050000"} for i in range(0, 120, 4)}  # 30 of 120
    result = compare_folds(_write_fold(tmp_path / "a", p, labels), _write_fold(tmp_path / "b", p, labels, seen_normal), n_boot=200)
    top = result.lesions_top_class_normal
    assert (top.baseline, top.candidate, top.difference) == pytest.approx((0.0, 0.25, 0.25))
    assert top.difference_ci[0] > 0
    assert any(line.startswith("lesions whose top class is normal: 0.000 → 0.250") for line in result.lines())
