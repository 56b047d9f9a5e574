"""A bundle packed with the trained segmentation model (``pack-segmentation --fold``, what ``make ship-model
SEGMENTATION=models/segmentation-lite0`` and ``make ship-segmentation`` ship) carries that model file, its measured display rule and its
leave-one-source-out folds' figures read from each fold's report; its card is made again from its manifest and the
base's build report — the new version in its title, the outline section stating each fold against the per-part bar
and the descriptors shown — and every later rewrite of the card (modes, reader, revalidation) reproduces it."""

from __future__ import annotations

import json
from pathlib import Path

from device.model.bundle import SegmentationSpec, load_bundle
from model_build.card import model_card_text
from model_build.report import read_report
from model_build.segmentation_card import FOLD_BAR_DICE, HEADING, fold_headline
from tests.conftest import TRAINED_SEGMENTATION


def test_the_packed_bundle_carries_the_model_its_rule_and_its_folds(trained_outline_bundle_dir: Path) -> None:
    seg = load_bundle(trained_outline_bundle_dir).manifest.segmentation
    assert seg is not None
    trained = SegmentationSpec.from_dict(json.loads((TRAINED_SEGMENTATION / "segmentation.json").read_text(encoding="utf-8")))
    assert seg.model_sha256 == trained.model_sha256 and seg.descriptors == trained.descriptors is not None
    folds = sorted((TRAINED_SEGMENTATION / "folds").iterdir())
    assert len(folds) == 2 and seg.metrics["leave_one_source_out"] == [fold_headline(f) for f in folds]


def test_the_card_states_each_fold_against_the_bar_and_is_reproduced(trained_outline_bundle_dir: Path, classifier_bundle_dir: Path) -> None:
    bundle = load_bundle(trained_outline_bundle_dir)
    card = (trained_outline_bundle_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith(f"# Model card — {bundle.manifest.name} {bundle.manifest.version}\n")
    seg = bundle.manifest.segmentation
    assert seg is not None
    # packed onto the classifier (+seg) or swapped in by make ship-segmentation (+seg-<the outline model's sha256, 8 hex>)
    assert bundle.manifest.version.endswith(("+seg", f"+seg-{seg.model_sha256[:8]}"))
    assert card == model_card_text(bundle.manifest, read_report(trained_outline_bundle_dir))  # a later rewrite keeps it
    section = card[card.index(HEADING) :]
    for fold in seg.metrics["leave_one_source_out"]:
        row = next(line for line in section.splitlines() if line.startswith(f"| {fold['held_out']} |"))
        assert f"{fold['dice_mean']['value']:.3f}" in row and ("**below**" in row) == (fold["dice_mean"]["value"] < FOLD_BAR_DICE)
    assert f"{seg.metrics['test']['dice_mean']['value']:.3f}" in section
    assert "Descriptors shown on screen (labelled automatic): none" in section  # shape 0.26, margin 0.22: below 0.40
    base = (classifier_bundle_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.index(HEADING) > 0 and HEADING not in base  # the classifier's card, the section added after it
