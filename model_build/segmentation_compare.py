"""Two segmentation runs compared on the same held-out images, paired.

A leave-one-source-out segmentation fold (``model_build segment --external-test source=NAME``) writes each held-out
image's scores to ``report/external_scores.csv`` (:func:`write_scores`): the int8 model's Dice, IoU, boundary error
and drawn area, beside the image's source, file and patient / near-duplicate group. Two runs holding out the same
source (another recipe, pseudo masks, more epochs) score the same images, so their difference is measured paired:
one bootstrap resamples the groups and recomputes both runs' figures on each resample (docs/lesion-outline.md).
Unpaired CIs of two runs on the same images overlap even where one run is better on nearly every image.

* :func:`compare_segmentations`: mean Dice over lesion images, lesions with no outline drawn, false outlines on
  lesion-free images (the report's own figures, ``segmentation_eval.figures``) — each run's, and the difference
  candidate − baseline with its 95 % CI.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_build.evaluate import grouped_bootstrap
from model_build.fold_compare import Paired
from model_build.segmentation_eval import Scores, figures


class SegmentationCompareError(ValueError):
    """The two runs cannot be compared: a scores file is missing or malformed, or they scored other images."""


PARTS = ("external", "test")  # the held-out source (``--external-test``) or the run's own test patients
_NO_SCORES = {  # part -> what its missing file held, and what writes it
    "external": ("held-out", "a `segment --external-test` run writes them"),
    "test": ("test", "`segment` writes them; `segment-rescore --part test` for an older run"),
}


def scores_file(part: str = "external") -> Path:
    """Where a run keeps each image's scores on one part: ``report/external_scores.csv`` or ``report/test_scores.csv``."""
    if part not in PARTS:
        raise SegmentationCompareError(f"part {part!r}: choose one of {', '.join(PARTS)}")
    return Path("report") / f"{part}_scores.csv"


SCORES_FILE = scores_file("external")
SCORE_COLUMNS = tuple(Scores.__dataclass_fields__)  # dice, iou, boundary_px, boundary_image_px, drawn_px, lesion
COLUMNS = ("source", "file", "group", *SCORE_COLUMNS)
COMPARED = {"dice_mean": "Dice mean over lesions     ", "missed": "lesions with no outline    ", "false_outline_rate": "false outlines, lesion-free"}


@dataclass(frozen=True)
class ImageScores:
    """One run's held-out images, keyed by (source, file), with their scores."""

    run: Path
    keys: list[tuple[str, str]]
    groups: np.ndarray
    scores: Scores


@dataclass(frozen=True)
class SegmentationComparison:
    baseline: Path
    candidate: Path
    lesions: int
    lesion_free: int
    groups: int
    figures: dict[str, Paired]  # COMPARED's keys: the report's figures (segmentation_eval.figures), paired

    def lines(self) -> list[str]:
        return [
            f"baseline  {self.baseline}",
            f"candidate {self.candidate}",
            f"held out: {self.lesions} lesion images, {self.lesion_free} lesion-free, {self.groups} patient groups",
            "baseline → candidate (candidate − baseline [95 % CI], paired)",
            *(f"  {COMPARED[key]} {paired.text()}" for key, paired in self.figures.items()),
        ]


def write_scores(path: Path, sources: Sequence[str], files: Sequence[str], groups: Sequence[str], scores: Scores) -> None:
    """One row per held-out image: where it is from and the int8 model's scores on it (NaN where they do not apply)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for i, row in enumerate(zip(sources, files, groups, strict=True)):
            writer.writerow([*row, *(_cell(getattr(scores, column)[i]) for column in SCORE_COLUMNS)])


def _cell(value: np.generic) -> str:
    return str(int(value)) if isinstance(value, np.integer | np.bool_) else f"{float(value):.6f}"


def read_scores(run: Path, part: str = "external") -> ImageScores:
    """A run's ``report/<part>_scores.csv``; errors name the file, the row and the column."""
    path = run / scores_file(part)
    if not path.is_file():
        held, made_by = _NO_SCORES[part]
        raise SegmentationCompareError(f"{path}: no {held} scores ({made_by})")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SegmentationCompareError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    keys = [(row["source"], row["file"]) for row in rows]
    if len(set(keys)) != len(keys):
        raise SegmentationCompareError(f"{path}: an image is listed twice")
    columns: dict[str, list[float]] = {c: [] for c in SCORE_COLUMNS}
    for n, row in enumerate(rows, start=2):
        for column in SCORE_COLUMNS:
            try:
                columns[column].append(float(row[column]))
            except ValueError:
                raise SegmentationCompareError(f"{path}: row {n}: {column} {row[column]!r} is not a number") from None
    scores = Scores(**{c: np.array(v) for c, v in columns.items()})
    scores = dataclasses.replace(scores, drawn_px=scores.drawn_px.astype(int), lesion=scores.lesion.astype(bool))
    return ImageScores(run, keys, np.array([row["group"] for row in rows]), scores)


def _aligned(baseline: ImageScores, candidate: ImageScores) -> ImageScores:
    """The candidate's rows in the baseline's order; both runs must have scored the same images alike."""
    where = {key: i for i, key in enumerate(candidate.keys)}
    only_baseline = [k for k in baseline.keys if k not in where]
    if only_baseline or len(where) != len(baseline.keys):
        some = ", ".join("/".join(k) for k in only_baseline[:3]) or "images of its own"
        raise SegmentationCompareError(
            f"{baseline.run} and {candidate.run} held out other images (e.g. {some}): compare runs of the same held-out source"
        )
    scores = candidate.scores.subset(np.array([where[k] for k in baseline.keys]))
    if not np.array_equal(scores.lesion, baseline.scores.lesion):
        raise SegmentationCompareError(f"{baseline.run} and {candidate.run}: the same image has a lesion mask in one run and none in the other")
    return ImageScores(candidate.run, baseline.keys, baseline.groups, scores)


def compare_segmentations(
    baseline_run: Path, candidate_run: Path, n_boot: int = 1000, seed: int = 0, part: str = "external"
) -> SegmentationComparison:
    """Candidate − baseline on the held-out images both scored (``part``: the held-out source, or the test
    patients of two runs with the same split), paired over patient / near-duplicate groups."""
    baseline = read_scores(baseline_run, part)
    candidate = _aligned(baseline, read_scores(candidate_run, part))

    def both(idx: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
        return figures(baseline.scores, idx), figures(candidate.scores, idx)

    def difference(idx: np.ndarray) -> dict[str, float]:
        a, b = both(idx)
        return {key: b[key] - a[key] for key in COMPARED}

    a, b = both(np.arange(len(baseline.keys)))
    ci = grouped_bootstrap(baseline.groups, difference, n_boot, seed)
    nan = (float("nan"), float("nan"))
    lesion = baseline.scores.lesion
    return SegmentationComparison(
        baseline_run,
        candidate_run,
        lesions=int(lesion.sum()),
        lesion_free=int((~lesion).sum()),
        groups=len(np.unique(baseline.groups)),
        figures={key: Paired(a[key], b[key], b[key] - a[key], ci.get(key, nan)) for key in COMPARED},
    )
