"""Re-score a built bundle's held-out test split with its own int8 model.

A bundle's ``report/split.csv`` names every image it was trained, validated and tested on. Given the
same dataset folders, this finds the test images again, decodes them exactly as the build (and
``python -m device classify``) does, runs the bundle's ``model.tflite`` and applies its temperature —
so an analysis added after a build (e.g. :mod:`model_build.reader`) scores the model that ships.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.model.bundle import ModelBundle
from device.model.runtime import bundle_probabilities
from model_build.data import DatasetError, Sample, decode_sample, scan_source
from model_build.split import relative_name

log = logging.getLogger(__name__)

SPLIT_FILE = Path("report") / "split.csv"


class RescoreError(ValueError):
    """The bundle's test split cannot be found again in the given data."""


@dataclass(frozen=True)
class ScoredSplit:
    samples: list[Sample]
    groups: np.ndarray  # [N] the split's group ids
    probs: np.ndarray  # [N, K] calibrated probabilities from the bundle's int8 model
    skipped_sources: dict[str, int]  # test images of sources not given with --data


def read_split_rows(bundle: ModelBundle, split: str = "test") -> list[dict[str, str]]:
    path = bundle.path / SPLIT_FILE
    if not path.is_file():
        raise RescoreError(f"model bundle {bundle.path}: no {SPLIT_FILE} — cannot tell which images were held out")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"source", "file", "label", "group", "split"} - set(rows[0] if rows else {})
    if missing:
        raise RescoreError(f"{path}: missing column(s) {sorted(missing)}")
    return [r for r in rows if r["split"] == split]


def find_samples(rows: list[dict[str, str]], roots: Sequence[str | os.PathLike[str]]) -> tuple[list[Sample], list[str], dict[str, int]]:
    """Match split rows to the given datasets' samples by (source, file). Returns samples, their groups and
    the count of rows whose source was not given. A row of a given source that is not found is an error."""
    by_key: dict[tuple[str, str], Sample] = {}
    for root in roots:
        samples, _ = scan_source(root, lesion_views=True)  # a build's split may list views cut by masks
        by_key.update({(s.source, relative_name(s)): s for s in samples})
    given = {source for source, _ in by_key}
    found: list[Sample] = []
    groups: list[str] = []
    skipped: dict[str, int] = {}
    for row in rows:
        if row["source"] not in given:
            skipped[row["source"]] = skipped.get(row["source"], 0) + 1
            continue
        sample = by_key.get((row["source"], row["file"]))
        if sample is None:
            raise RescoreError(
                f"test image {row['source']}/{row['file']} from the split is not in the given data: the dataset changed since the build"
            )
        if sample.label != row["label"]:
            raise RescoreError(
                f"test image {row['source']}/{row['file']}: label {sample.label!r} in the data, "
                f"{row['label']!r} in the split — the dataset changed since the build"
            )
        found.append(sample)
        groups.append(row["group"])
    return found, groups, skipped


def score_test_split(bundle: ModelBundle, roots: Sequence[str | os.PathLike[str]], keep: Callable[[Sample], bool] = lambda s: True) -> ScoredSplit:
    """Calibrated int8 probabilities for the bundle's test images (those ``keep`` accepts) found in ``roots``."""
    try:
        samples, groups, skipped = find_samples(read_split_rows(bundle), roots)
    except DatasetError as exc:
        raise RescoreError(str(exc)) from exc
    chosen = [i for i, s in enumerate(samples) if keep(s)]
    samples, groups = [samples[i] for i in chosen], [groups[i] for i in chosen]
    if not samples:
        raise RescoreError(f"none of the bundle's test images were found in the given data ({', '.join(map(str, roots))})")
    m = bundle.manifest
    pixels = np.stack([decode_sample(s, m.input) for s in samples])
    probs = bundle_probabilities(bundle, pixels)  # the device's runner and rule, a site head included
    log.info("re-scored %d test image(s) with %s %s", len(samples), m.name, m.version)
    return ScoredSplit(samples, np.array(groups), probs, skipped)
