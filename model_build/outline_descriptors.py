"""The descriptors from a segmentation model's *own* outlines against the radiologist, and the display rule they give.

``model_build/descriptors.py`` measures the outline rules on the reference masks; what a device shows depends on the
outlines its model draws. This scores a ``model_build segment`` output (``segmentation.json`` + model) on the
BrEaST-Lesions-USG lesions of its held-out test split (``report/split.csv``) that carry the radiologist's shape and
margin: each image through the device's path (``device.model.preprocess.prepare`` with the auto-crop, then
:class:`device.outline.Segmenter`), the descriptors of its outline against the lexicon — agreement and Cohen's kappa
with 95 % CIs resampling patients. A lesion the model does not outline shows no descriptor, so it is counted apart
(``no_outline``), not as a disagreement. Orientation has no lexicon column: never validated here.

The result is the bundle's ``segmentation.descriptors`` section (format 6, :class:`device.model.bundle.DescriptorDisplay`):
a descriptor is shown when its kappa reaches :data:`DISPLAY_MIN_KAPPA`. ``--write`` puts it into ``segmentation.json``,
which ``pack-segmentation`` carries into the bundle.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.imageio import decode_image_file
from device.model.bundle import DescriptorDisplay, Figure, SegmentationSpec
from device.model.preprocess import prepare
from device.outline import Segmenter
from model_build.descriptors import DescriptorDataError, kappa, read_lexicon
from model_build.evaluate import grouped_bootstrap

log = logging.getLogger(__name__)

# docs/lesion-outline.md, "Display level": shown (labelled automatic) only when Cohen's kappa against the radiologist
# reaches 0.40 ("moderate", Landis-Koch). The build writes it into the bundle as segmentation.descriptors.min_kappa.
DISPLAY_MIN_KAPPA = 0.40
LEXICON_SOURCE = "breast-lesions-usg"  # the one source with a radiologist's lexicon
MEASURED = ("shape", "margin")  # the lexicon's descriptors; orientation has no column


@dataclass(frozen=True)
class Called:
    """One held-out lesion: the radiologist's descriptors and those of the model's outline (None: no outline)."""

    patient: str
    truth: dict[str, str]
    called: dict[str, str] | None


def held_out_files(seg_dir: Path) -> set[str]:
    """The file names of the lexicon source's test-split images in a segmentation build's ``report/split.csv``."""
    split = seg_dir / "report" / "split.csv"
    if not split.is_file():
        raise DescriptorDataError(f"{seg_dir}: no report/split.csv (a `model_build segment` output expected)")
    with open(split, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    files = {Path(r["file"]).name for r in rows if r.get("source") == LEXICON_SOURCE and r.get("split") == "test"}
    if not files:
        raise DescriptorDataError(f"{split}: no {LEXICON_SOURCE} image in the test split")
    return files


def load_segmenter(seg_dir: Path) -> Segmenter:
    json_path = seg_dir / "segmentation.json"
    spec = SegmentationSpec.from_dict(json.loads(json_path.read_text(encoding="utf-8")), source=str(json_path))
    return Segmenter(spec, seg_dir / spec.model, where=f"{json_path} (segmentation)", threads=2)


def call(seg_dir: Path, data: str | os.PathLike[str]) -> list[Called]:
    """The model's descriptors on each held-out lexicon lesion."""
    root = Path(data)
    segmenter = load_segmenter(seg_dir)
    held_out = held_out_files(seg_dir)
    out = []
    for entry in read_lexicon(root):
        if entry.filename not in held_out:
            continue
        frame = decode_image_file(root / "images" / entry.filename)
        prepared = prepare(frame, segmenter.spec.input, auto_crop=True)
        outline = segmenter.outline(prepared, (frame.shape[0], frame.shape[1]), same_input=True).outline
        truth = {"shape": entry.shape.value, "margin": entry.margin.value}
        called = {"shape": outline.shape.value, "margin": outline.margin.value} if outline is not None else None
        out.append(Called(entry.patient, truth, called))
    if not out:
        raise DescriptorDataError(f"{root}: none of {seg_dir}'s held-out {LEXICON_SOURCE} images has a lexicon entry")
    return out


def _figures(outlined: list[Called], idx: np.ndarray) -> dict[str, float]:
    chosen = [outlined[i] for i in idx]
    out = {}
    for name in MEASURED:
        truth = [c.truth[name] for c in chosen]
        called = [c.called[name] for c in chosen if c.called is not None]
        out[f"{name}:agreement"] = float(np.mean([a == b for a, b in zip(truth, called)]))
        out[f"{name}:kappa"] = kappa(truth, called)
    return out


def measure(calls: list[Called], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    outlined = [c for c in calls if c.called is not None]
    if len(outlined) < 2:
        raise DescriptorDataError(f"only {len(outlined)} of {len(calls)} held-out lexicon lesions outlined: nothing to measure")
    values = _figures(outlined, np.arange(len(outlined)))
    cis = grouped_bootstrap(np.array([c.patient for c in outlined]), lambda i: _figures(outlined, i), n_boot, seed)
    return {
        "lesions": len(calls),
        "outlined": len(outlined),
        "no_outline": len(calls) - len(outlined),
        "figures": {k: {"value": v, "ci95": list(cis[k])} for k, v in values.items()},
    }


def display_rule(result: dict[str, Any]) -> DescriptorDisplay:
    """The bundle's ``segmentation.descriptors``: the kappas measured (a non-finite one, e.g. a single class, is left
    out: not validated) at the documented display level."""
    kappas = {}
    for name in MEASURED:
        entry = result["figures"][f"{name}:kappa"]
        low, high = entry["ci95"]
        if all(np.isfinite([entry["value"], low, high])):
            kappas[name] = Figure(value=round(entry["value"], 4), ci95=(round(low, 4), round(high, 4)), n=result["outlined"])
    return DescriptorDisplay(
        min_kappa=DISPLAY_MIN_KAPPA,
        kappa=kappas,
        measured_on=(
            f"{result['outlined']} held-out {LEXICON_SOURCE} lesions (the segmentation build's test split) outlined by this "
            f"model, against the radiologist's lexicon ({result['no_outline']} not outlined); orientation: no lexicon column"
        ),
    )


def write_display_rule(seg_dir: Path, rule: DescriptorDisplay) -> None:
    """``rule`` as the ``descriptors`` key of ``segmentation.json`` (validated as a bundle reads it)."""
    json_path = seg_dir / "segmentation.json"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    data["descriptors"] = rule.to_dict()
    SegmentationSpec.from_dict(data, source=str(json_path))
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def table(result: dict[str, Any], rule: DescriptorDisplay) -> list[str]:
    f = result["figures"]

    def cell(key: str) -> str:
        e = f[key]
        return f"{e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"

    shown = rule.shown()
    return [
        f"{result['outlined']} of {result['lesions']} held-out {LEXICON_SOURCE} lexicon lesions outlined by the model (95 % CIs resampling patients)",
        "",
        "| descriptor | agreement | Cohen's kappa | shown |",
        "|---|---|---|---|",
        *(f"| {name} | {cell(f'{name}:agreement')} | {cell(f'{name}:kappa')} | {'yes' if name in shown else 'no'} |" for name in MEASURED),
        "| orientation | — | — | no (not in the lexicon) |",
        "",
        f"display level: kappa >= {rule.min_kappa:.2f}",
    ]
