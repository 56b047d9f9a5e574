"""Leak-free splits: samples are grouped (by patient when known, else by near-duplicate image), and
whole groups are assigned to train / validation / test, stratified by (source, label), seeded.

Near-duplicates are found with a perceptual hash (pHash) on the model-size grey pixels; images whose
hashes differ in at most ``max_distance`` bits are linked, and linked images form one group
(union-find, so chains are followed). BUSI repeats frames of the same lesion, sometimes across classes.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_build.data import LoadedData, Sample

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_MAX_DISTANCE = 10


class SplitError(ValueError):
    """A split cannot be made as asked (too few groups, overlapping groups...)."""


@dataclass(frozen=True)
class SplitAssignment:
    groups: tuple[str, ...]  # per sample
    splits: tuple[str, ...]  # per sample: "train" | "val" | "test"

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.splits) if s == split], dtype=np.int64)


def perceptual_hashes(pixels: np.ndarray) -> np.ndarray:
    """64-bit pHash per image as a ``N x 64`` bool array."""
    import imagehash
    from PIL import Image

    return np.stack([imagehash.phash(Image.fromarray(p)).hash.flatten() for p in pixels])


def _union_find(n: int, pairs: np.ndarray) -> np.ndarray:
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def near_duplicate_groups(hashes: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Group id (index of the group's first member) per image."""
    bits = hashes.astype(np.int16)
    distance = bits.shape[1] - (bits @ bits.T + (1 - bits) @ (1 - bits).T)  # Hamming distance
    a, b = np.nonzero(np.triu(distance <= max_distance, k=1))
    return _union_find(len(hashes), np.stack([a, b], axis=1))


def assign_groups(data: LoadedData, max_distance: int = DEFAULT_MAX_DISTANCE) -> list[str]:
    """Group name per sample: ``source:patient:<id>`` or ``source:dup:<n>`` (near-duplicate cluster)."""
    groups: list[str] = [""] * len(data.samples)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(data.samples):
        if sample.patient_id:
            groups[i] = f"{sample.source}:patient:{sample.patient_id}"
        else:
            by_source[sample.source].append(i)
    for source, idx in by_source.items():
        ids = near_duplicate_groups(perceptual_hashes(data.pixels[idx]), max_distance)
        for i, gid in zip(idx, ids):
            groups[i] = f"{source}:dup:{gid:05d}"
    return groups


def split_groups(
    samples: list[Sample],
    groups: list[str],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> SplitAssignment:
    """Assign whole groups to splits, stratified by (source, majority label of the group)."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise SplitError(f"split fractions must sum to 1, got {fractions}")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g, idx in members.items():
        label = Counter(samples[i].label for i in idx).most_common(1)[0][0]
        strata[(samples[idx[0]].source, label)].append(g)
    rng = np.random.default_rng(seed)
    chosen: dict[str, str] = {}
    for key in sorted(strata):
        names = sorted(strata[key])
        rng.shuffle(names)
        names.sort(key=lambda g: -len(members[g]))  # stable: big groups first, ties in shuffled order
        total = sum(len(members[g]) for g in names)
        filled = dict.fromkeys(SPLITS, 0)
        for g in names:
            deficit = {s: fractions[k] * total - filled[s] for k, s in enumerate(SPLITS)}
            target = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
            chosen[g] = target
            filled[target] += len(members[g])
    return SplitAssignment(tuple(groups), tuple(chosen[g] for g in groups))


@dataclass(frozen=True)
class HoldOutRule:
    """``--external-test column=text``: images whose CSV ``column`` contains ``text`` (case-insensitive) are kept
    out of training, validation and test, with every other image of their groups, and scored separately —
    an estimate of how the model does on, e.g., a scanner it never saw."""

    column: str
    contains: str

    @classmethod
    def parse(cls, text: str) -> HoldOutRule:
        column, sep, contains = text.partition("=")
        if not sep or not column.strip() or not contains.strip():
            raise SplitError(f"--external-test {text!r}: expected COLUMN=TEXT, e.g. device=toshiba")
        return cls(column.strip().lower(), contains.strip())

    def matches(self, sample: Sample) -> bool:
        if self.column == "source":  # a whole source (folder name): leave-one-source-out
            return sample.source.lower() == self.contains.lower()
        value = sample.meta(self.column)
        return value is not None and self.contains.lower() in value.lower()

    def __str__(self) -> str:
        return f"{self.column}={self.contains}"


def hold_out(samples: list[Sample], groups: list[str], rule: HoldOutRule) -> tuple[np.ndarray, np.ndarray]:
    """Indices left for train/validation/test, and indices held out: every image of a group (patient /
    near-duplicate cluster) that has an image matching ``rule``, so no patient is on both sides."""
    held_groups = {g for sample, g in zip(samples, groups) if rule.matches(sample)}
    if not held_groups:
        values = sorted({v for s in samples if (v := (s.source if rule.column == "source" else s.meta(rule.column))) is not None})[:10]
        raise SplitError(f"--external-test {rule}: no image matches; values of {rule.column!r}: {values or 'none (no such column)'}")
    held = np.array([g in held_groups for g in groups])
    return np.nonzero(~held)[0], np.nonzero(held)[0]


def check_no_leak(assignment: SplitAssignment) -> None:
    """Raise :class:`SplitError` if any group appears in more than one split."""
    seen: dict[str, str] = {}
    for g, s in zip(assignment.groups, assignment.splits):
        if seen.setdefault(g, s) != s:
            raise SplitError(f"group {g} straddles {seen[g]} and {s}")


EXTERNAL = "external"  # the split name of held-out images in split.csv


def write_split_csv(
    path: Path,
    samples: list[Sample],
    assignment: SplitAssignment,
    external: tuple[list[Sample], list[str]] = ([], []),
) -> None:
    """One row per image: source, file, label, group, split (``train``/``val``/``test``, or ``external``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "label", "group", "split"])
        for sample, g, s in zip(samples, assignment.groups, assignment.splits):
            writer.writerow([sample.source, relative_name(sample), sample.label, g, s])
        for sample, g in zip(*external):
            writer.writerow([sample.source, relative_name(sample), sample.label, g, EXTERNAL])


def relative_name(sample: Sample) -> str:
    """The file's path below its source root (``benign/x.png``, ``images/y.png``): no machine paths."""
    parts = sample.path.parts
    name = "/".join(parts[len(parts) - parts[::-1].index(sample.source) :]) if sample.source in parts else sample.path.name
    return name if sample.view == "full" else f"{name}#{sample.view}"


def summarise(samples: list[Sample], assignment: SplitAssignment) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for sample, s in zip(samples, assignment.splits):
        key = f"{sample.source}/{sample.label}"
        out[s][key] = out[s].get(key, 0) + 1
    return out
