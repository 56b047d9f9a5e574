"""Two segmentation runs compared on the same held-out images, paired.

A leave-one-source-out segmentation fold (``model_build segment --external-test source=NAME``) writes each held-out
image's scores to ``report/external_scores.csv`` (:func:`write_scores`): the int8 model's Dice, IoU, boundary error
and drawn area, beside the image's source, file and patient / near-duplicate group. Two runs holding out the same
source (another recipe, pseudo masks, more epochs) score the same images, so their difference is measured paired:
one bootstrap resamples the groups and recomputes both runs' figures on each resample (docs/lesion-outline.md).
Unpaired CIs of two runs on the same images overlap even where one run is better on nearly every image.

* :func:`compare_segmentations`: mean Dice over lesion images, lesions with no outline drawn, false outlines on
  lesion-free images — each run's, and the difference candidate − baseline with its 95 % CI.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_build.evaluate import grouped_bootstrap
from model_build.fold_compare import Paired
from model_build.segmentation_eval import Scores

SCORES_FILE = Path("report") / "external_scores.csv"
COLUMNS = ("source", "file", "group", "lesion", "dice", "iou", "boundary_image_px", "drawn_px")


class SegmentationCompareError(ValueError):
    """The two runs cannot be compared: a scores file is missing or malformed, or they scored other images."""


@dataclass(frozen=True)
class ImageScores:
    """One run's held-out images, keyed by (source, file), with their scores."""

    run: Path
    keys: list[tuple[str, str]]
    groups: np.ndarray
    lesion: np.ndarray  # bool
    dice: np.ndarray  # NaN on lesion-free images
    drawn_px: np.ndarray  # 0 = no outline drawn


@dataclass(frozen=True)
class SegmentationComparison:
    baseline: Path
    candidate: Path
    lesions: int
    lesion_free: int
    groups: int
    dice_mean: Paired
    missed: Paired  # lesion images with no outline drawn
    false_outlines: Paired  # lesion-free images with an outline drawn

    def lines(self) -> list[str]:
        return [
            f"baseline  {self.baseline}",
            f"candidate {self.candidate}",
            f"held out: {self.lesions} lesion images, {self.lesion_free} lesion-free, {self.groups} patient groups",
            "baseline → candidate (candidate − baseline [95 % CI], paired)",
            f"  Dice mean over lesions      {self.dice_mean.text()}",
            f"  lesions with no outline     {self.missed.text()}",
            f"  false outlines, lesion-free {self.false_outlines.text()}",
        ]


def write_scores(path: Path, sources: Sequence[str], files: Sequence[str], groups: Sequence[str], scores: Scores) -> None:
    """One row per held-out image: where it is from and the int8 model's scores on it (NaN where they do not apply)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i, (source, file, group) in enumerate(zip(sources, files, groups, strict=True)):
            writer.writerow(
                [
                    source,
                    file,
                    group,
                    int(scores.lesion[i]),
                    f"{scores.dice[i]:.6f}",
                    f"{scores.iou[i]:.6f}",
                    f"{scores.boundary_image_px[i]:.3f}",
                    int(scores.drawn_px[i]),
                ]
            )


def read_scores(run: Path) -> ImageScores:
    """A run's ``report/external_scores.csv``; errors name the file, the row and the column."""
    path = run / SCORES_FILE
    if not path.is_file():
        raise SegmentationCompareError(f"{path}: no held-out scores (a `segment --external-test` run writes them)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SegmentationCompareError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    keys, groups, lesion, dice, drawn = [], [], [], [], []
    for n, row in enumerate(rows, start=2):
        try:
            keys.append((row["source"], row["file"]))
            groups.append(row["group"])
            lesion.append(row["lesion"] == "1")
            dice.append(float(row["dice"]))
            drawn.append(int(row["drawn_px"]))
        except ValueError as exc:
            raise SegmentationCompareError(f"{path}: row {n}: {exc}") from None
    if len(set(keys)) != len(keys):
        raise SegmentationCompareError(f"{path}: an image is listed twice")
    return ImageScores(run, keys, np.array(groups), np.array(lesion, bool), np.array(dice), np.array(drawn))


def _aligned(baseline: ImageScores, candidate: ImageScores) -> np.ndarray:
    """The candidate's rows in the baseline's order; both runs must have scored the same images alike."""
    where = {key: i for i, key in enumerate(candidate.keys)}
    only_baseline = [k for k in baseline.keys if k not in where]
    if only_baseline or len(where) != len(baseline.keys):
        some = ", ".join("/".join(k) for k in only_baseline[:3]) or "images of its own"
        raise SegmentationCompareError(
            f"{baseline.run} and {candidate.run} held out other images (e.g. {some}): compare runs of the same held-out source"
        )
    order = np.array([where[k] for k in baseline.keys])
    if not np.array_equal(candidate.lesion[order], baseline.lesion):
        raise SegmentationCompareError(f"{baseline.run} and {candidate.run}: the same image has a lesion mask in one run and none in the other")
    return order


def _figures(s: ImageScores) -> Callable[[np.ndarray], dict[str, float]]:
    def figures(idx: np.ndarray) -> dict[str, float]:
        les, free = idx[s.lesion[idx]], idx[~s.lesion[idx]]
        nan = float("nan")
        return {
            "dice_mean": float(np.mean(s.dice[les])) if len(les) else nan,
            "missed": float(np.mean(s.drawn_px[les] == 0)) if len(les) else nan,
            "false_outlines": float(np.mean(s.drawn_px[free] > 0)) if len(free) else nan,
        }

    return figures


def compare_segmentations(baseline_run: Path, candidate_run: Path, n_boot: int = 1000, seed: int = 0) -> SegmentationComparison:
    """Candidate − baseline on the held-out images both scored, paired over patient / near-duplicate groups."""
    baseline, candidate = read_scores(baseline_run), read_scores(candidate_run)
    order = _aligned(baseline, candidate)
    candidate = ImageScores(candidate.run, baseline.keys, baseline.groups, baseline.lesion, candidate.dice[order], candidate.drawn_px[order])
    of_baseline, of_candidate = _figures(baseline), _figures(candidate)

    def difference(idx: np.ndarray) -> dict[str, float]:
        a, b = of_baseline(idx), of_candidate(idx)
        return {key: b[key] - a[key] for key in a}

    everything = np.arange(len(baseline.keys))
    a, b = of_baseline(everything), of_candidate(everything)
    ci = grouped_bootstrap(baseline.groups, difference, n_boot, seed)
    paired = {key: Paired(a[key], b[key], b[key] - a[key], ci.get(key, (float("nan"), float("nan")))) for key in a}
    return SegmentationComparison(
        baseline_run,
        candidate_run,
        lesions=int(baseline.lesion.sum()),
        lesion_free=int((~baseline.lesion).sum()),
        groups=len(np.unique(baseline.groups)),
        dice_mean=paired["dice_mean"],
        missed=paired["missed"],
        false_outlines=paired["false_outlines"],
    )
