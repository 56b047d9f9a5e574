"""The model card's lesion-outline section, for a bundle packed with a segmentation model (``pack-segmentation``).

Made from what the bundle carries only, so every rewrite of the card (``model_build.card.model_card_text``: modes,
reader, revalidation) makes it again: ``segmentation.metrics`` (the held-out test patients, int8; and
``leave_one_source_out``, each fold's figures, put there by ``pack-segmentation --fold`` from the fold's
``report/metrics.json``) and ``segmentation.descriptors`` (the display rule measured on the model's own outlines).
Every figure is read, none restated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from device.model.bundle import SegmentationSpec
from model_build.figure_text import ci_text as _ci

HEADING = "## Lesion outline (segmentation model)"
CARD_FILE = "MODEL_CARD.md"
FOLD_BAR_DICE = 0.75  # issue 16's bar for each leave-one-source-out part


class CardError(ValueError):
    """A fold report that cannot be read (names the file)."""


def fold_headline(fold: Path) -> dict[str, Any]:
    """A leave-one-source-out fold's figures for ``segmentation.metrics.leave_one_source_out``: what was held out and
    the int8 model's Dice on its lesions (``segment --external-test``'s ``report/metrics.json``)."""
    path = fold / "report" / "metrics.json"
    try:
        external = json.loads(path.read_text(encoding="utf-8"))["external_test"]
        scored = external["int8"]["all"]
        return {
            "held_out": str(external["rule"]),
            "n_lesion": int(scored["n_lesion"]),
            "dice_mean": {"value": float(scored["dice_mean"]["value"]), "ci95": [float(v) for v in scored["dice_mean"]["ci95"]]},
            "dice_median": {"value": float(scored["dice_median"]["value"]), "ci95": [float(v) for v in scored["dice_median"]["ci95"]]},
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CardError(f"{path}: not a leave-one-source-out segmentation report ({exc})") from exc


def _fold_row(fold: dict[str, Any]) -> str:
    dice = fold["dice_mean"]
    verdict = "meets" if dice["value"] >= FOLD_BAR_DICE else "**below**"
    median = fold["dice_median"]["value"]
    return f"| {fold['held_out']} | {fold['n_lesion']} | {_ci(dice)} | {median:.3f} | {verdict} the {FOLD_BAR_DICE:.2f} per part |"


def _descriptor_lines(spec: SegmentationSpec) -> list[str]:
    rule = spec.descriptors
    if rule is None:
        return ["- Descriptors: none shown (not measured on this model's outlines)."]
    shown = spec.shown_descriptors()
    measured = ", ".join(f"{name} kappa {_ci({'value': f.value, 'ci95': f.ci95})}" for name, f in sorted(rule.kappa.items()))
    return [
        f"- Descriptors shown on screen (labelled automatic): {', '.join(sorted(shown)) or 'none'} — only those whose Cohen's "
        f"kappa against the radiologist, from this model's own outlines, reaches {rule.min_kappa:.2f}: {measured or 'none measured'} "
        f"({rule.measured_on}).",
    ]


def outline_section(spec: SegmentationSpec) -> str:
    test = spec.metrics.get("test", {})
    folds = spec.metrics.get("leave_one_source_out", [])
    lines = [
        HEADING,
        "",
        "Decision support: the outline shows where the model sees the lesion and its size, for the clinician to check "
        "against the image; it is not a measurement to act on without looking.",
        "",
        f"- Model: `{spec.model}`, input {spec.input.height}x{spec.input.width} ({spec.input.resize}); the outline is the "
        f"region of probability >= {spec.mask.threshold} under the clinician's region (else the largest), none under "
        f"{spec.mask.min_region_px} model pixels; sizes in mm only with a known pixel spacing.",
    ]
    if "dice_mean" in test:
        lines.append(
            f"- Held-out test patients ({test.get('n_lesion', '?')} lesion images, int8): Dice mean {_ci(test['dice_mean'])}, "
            f"median {_ci(test['dice_median'])}; no outline drawn {_ci(test['missed'])}; false outlines on empty masks "
            f"{_ci(test['false_outline_rate'])}."
        )
    if folds:
        lines += ["", "On a source it never saw (trained without it):", ""]
        lines += ["| held out | lesions | Dice mean | Dice median | |", "|---|---|---|---|---|"]
        lines += [_fold_row(f) for f in folds]
        lines.append("")
    lines += _descriptor_lines(spec)
    lines.append("- Orientation is not validated (the lexicon in the data has none) and is never shown.")
    lines.append(f"- Full report: `{spec.metrics.get('report', 'report/segmentation/REPORT.md')}`.")
    return "\n".join(lines) + "\n"


def with_outline_section(card: str, section: str) -> str:
    """``card`` with ``section`` in place of an earlier one (a re-pack), else appended."""
    head, found, _ = card.partition(HEADING)
    body = head if found else card
    return body.rstrip("\n") + "\n\n" + section
