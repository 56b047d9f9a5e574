"""Re-validate a built bundle on another resampling: what moves when its input pixels change.

A format-1 bundle was calibrated and evaluated on pixels resized by OpenCV (``input.resampling =
"opencv"``), which the Pi's OpenCV computes differently (docs/device.md, "Platform-exact
preprocessing"). This re-scores the bundle's own validation and test images (found again from its
``report/split.csv``) with the device's runner (``device.engine.Classifier``) under both
resamplings and reports, image by image and in aggregate, what changed:

* per-image probability differences, label flips at the bundle's threshold, inconclusive flips;
* the test split's metrics (with CIs) under each resampling, at the bundle's threshold;
* the threshold the build's rule (``calibrate.choose_threshold``) picks on the validation images'
  int8 probabilities under each resampling — the float model the build calibrated on is not in a
  bundle, so this shows how far the preprocessing alone moves the rule's answer.

``--write`` then switches the bundle to the new resampling through ``device.model.bundle.edit_bundle``:
its version gains ``+<resampling>`` (same model file, new pixels: results must be told apart), the
manifest's headline metrics become the re-scored ones, ``report/metrics.json`` keeps the
as-built test figures beside them, the card is rewritten, and a reference frame for ``device
selftest`` is recorded. Temperature and threshold are kept (they are re-validated, not re-fitted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.engine import Classifier, decide_label
from device.imageio import decode_image_file
from device.model.bundle import Manifest, ModelBundle, Resampling, edit_bundle, load_bundle
from device.model.preprocess import prepare
from device.selftest import record_reference
from model_build import calibrate, evaluate
from model_build.card import model_card_text
from model_build.data import Sample
from model_build.report import REPORT_FILE, read_report
from model_build.rescore import find_samples, read_split_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredImages:
    samples: list[Sample]
    groups: np.ndarray
    y: np.ndarray
    probs: np.ndarray  # [N, K] calibrated, the device's runner


def score_split(classifier: Classifier, roots: Sequence[str | os.PathLike[str]], split: str, resamplings: Sequence[str]) -> dict[str, ScoredImages]:
    """The bundle's ``split`` images, classified as ``device classify`` would, once per resampling
    (each file found and decoded once)."""
    bundle = classifier.bundle
    samples, groups, skipped = find_samples(read_split_rows(bundle, split), roots)
    if skipped:
        log.warning("%s split: sources not given with --data, left out: %s", split, skipped)
    specs = {r: dataclasses.replace(bundle.manifest.input, resampling=r) for r in resamplings}
    probs: dict[str, list[np.ndarray]] = {r: [] for r in resamplings}
    for sample in samples:
        frame = decode_image_file(sample.path)
        for r, spec in specs.items():
            scores, _ = classifier.invoke(classifier.input_tensor(prepare(frame, spec, auto_crop=True).pixels))
            probs[r].append(classifier.probabilities(scores))
    labels = bundle.manifest.labels
    y = np.array([labels.index(s.label) for s in samples])
    log.info("%s split: %d image(s) scored with resampling %s", split, len(samples), ", ".join(resamplings))
    return {r: ScoredImages(samples, np.array(groups), y, np.array(p)) for r, p in probs.items()}


def _flips(before: ScoredImages, after: ScoredImages, manifest: Manifest, thresholds: dict[str, float]) -> dict[str, Any]:
    labels = manifest.labels
    pairs = list(zip(before.probs, after.probs, strict=True))
    decide = [(decide_label(p, labels, thresholds), decide_label(q, labels, thresholds)) for p, q in pairs]
    limit = manifest.quality.min_confidence
    low = [(p.max() < limit, q.max() < limit) for p, q in pairs]
    diff = np.abs(after.probs - before.probs)
    changed = [
        {"image": f"{s.source}/{Path(s.path).name}", "before": a, "after": b} for s, (a, b) in zip(before.samples, decide, strict=True) if a != b
    ]
    return {
        "n": len(before.samples),
        "max_prob_diff": float(diff.max()),
        "mean_prob_diff": float(diff.mean()),
        "images_with_any_change": int(np.sum(diff.max(axis=1) > 0)),
        "label_flips": changed,
        "inconclusive_flips": int(sum(a != b for a, b in low)),
    }


def revalidate(
    bundle_dir: Path, roots: Sequence[str | os.PathLike[str]], resampling: str = Resampling.EXACT.value, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    bundle = load_bundle(bundle_dir)
    classifier = Classifier(bundle)
    m = bundle.manifest
    old, new = m.input.resampling, resampling
    config = read_report(bundle.path).config if (bundle.path / REPORT_FILE).is_file() else {}
    result: dict[str, Any] = {"from": old, "to": new, "thresholds": dict(m.thresholds), "temperature": m.temperature}
    scored = {(split, r): images for split in ("val", "test") for r, images in score_split(classifier, roots, split, (old, new)).items()}
    malignant = m.labels.index("malignant") if "malignant" in m.labels else None
    threshold = m.thresholds.get("malignant")
    for split in ("val", "test"):
        result[f"{split}_changes"] = _flips(scored[(split, old)], scored[(split, new)], m, m.thresholds)
    for r in (old, new):
        test = scored[("test", r)]
        preds = evaluate.Predictions(test.y, test.probs, test.groups, np.array([s.source for s in test.samples]))
        result[f"test_int8_{r}"] = evaluate.evaluate_split(preds, m.labels, threshold, n_boot, seed)
        if malignant is not None:
            val = scored[("val", r)]
            point = calibrate.choose_threshold(
                val.probs[:, malignant],
                val.y == malignant,
                config.get("target_sensitivity", 0.95),
                config.get("threshold_confidence", 0.9),
                seed=seed,
            )
            result[f"rule_threshold_on_val_int8_{r}"] = dataclasses.asdict(point)
    return result


def store_in_bundle(bundle_dir: Path, result: dict[str, Any]) -> ModelBundle:
    """Switch the bundle to the re-validated resampling; keep the as-built figures beside the new ones."""
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    report = read_report(bundle.path)
    evaluations = report.evaluations
    if "test_int8_as_built" not in evaluations:
        evaluations["test_int8_as_built"] = evaluations["test_int8"]
    new = result["to"]
    evaluations["test_int8"] = result[f"test_int8_{new}"]
    report.revalidation = result
    headline = dict(report.headline("test_int8"))
    manifest_metrics = {
        **m.metrics,
        **headline,
        "revalidated": f"re-scored with input.resampling={new!r} (was {result['from']!r}); "
        "temperature and thresholds kept — report/metrics.json 'revalidation'",
    }
    # A new version: results made with the new pixels must be told apart from the old ones (at the hub too).
    version = m.version if m.version.endswith(f"+{new}") else f"{m.version}+{new}"
    manifest = dataclasses.replace(m, version=version, input=dataclasses.replace(m.input, resampling=new), metrics=manifest_metrics)
    edited = edit_bundle(
        bundle.path,
        manifest=manifest,
        files={
            str(REPORT_FILE): report.to_bytes(),
            "MODEL_CARD.md": model_card_text(manifest, report).encode("utf-8"),
        },
    )
    return record_reference(edited.path)


def summary_lines(result: dict[str, Any]) -> list[str]:
    old, new = result["from"], result["to"]
    lines = [f"resampling {old} -> {new} (temperature {result['temperature']:.4f}, thresholds {result['thresholds']})"]
    for split in ("val", "test"):
        c = result[f"{split}_changes"]
        lines.append(
            f"  {split}: {c['n']} images, {c['images_with_any_change']} with any change, max prob diff "
            f"{c['max_prob_diff']:.4f}, mean {c['mean_prob_diff']:.5f}, label flips {len(c['label_flips'])}, "
            f"inconclusive flips {c['inconclusive_flips']}"
        )
        for flip in c["label_flips"]:
            lines.append(f"    {flip['image']}: {flip['before']} -> {flip['after']}")
    for r in (old, new):
        h = result[f"test_int8_{r}"]["all"]["headline"]
        lines.append(f"  test ({r}): " + ", ".join(f"{k} {evaluate.fmt_ci(v)}" for k, v in h.items()))
        point = result.get(f"rule_threshold_on_val_int8_{r}")
        if point:
            lines.append(
                f"  rule threshold on val int8 ({r}): {point['threshold']:.4f} (val sensitivity "
                f"{point['val_sensitivity']:.3f}, specificity {point['val_specificity']:.3f})"
            )
    return lines
