"""``python -m model_build segment``: data -> split -> train -> int8 TFLite -> scored on held-out patients -> report.

Writes into ``--out``: ``segmentation.tflite`` (uint8 input, float outputs: the lesion logit ``[1, 1]`` and the
mask ``[1, S, S, 1]``), ``segmentation.json`` (the bundle's ``segmentation`` section, ``SegmentationSpec``: input
geometry, output tensor names, threshold, minimum region, the model's sha256 and headline figures),
``segmentation-float.weights.h5``, and ``report/``: ``metrics.json``, ``split.csv``, ``montage_test.png`` (and
``montage_external.png`` and each held-out image's scores, ``external_scores.csv``), ``REPORT.md``. Every figure of
the report is the int8 model's, run by the device's ``ModelRunner``; the float model is scored beside it for the
int8 difference.

``python -m model_build pack-segmentation`` (:func:`pack_segmentation`) puts that output into a copy of a classifier
bundle through ``write_bundle``: the device then outlines the lesion with it (device/outline.py).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.model.bundle import (
    InputSpec,
    Manifest,
    MaskSpec,
    ModelBundle,
    SegmentationOutputs,
    SegmentationSpec,
    edit_bundle,
    load_bundle,
    write_bundle,
)
from device.selftest import record_segmentation_reference
from model_build.export import identify_outputs, int8_runner
from model_build.figure_text import ci_text
from model_build.segmentation import SegTrainConfig, build_segmenter, check_resolution, export_model, predict_float, train_segmenter
from model_build.segmentation_card import CARD_FILE, fold_headline, outline_section, with_outline_section
from model_build.segmentation_compare import PARTS, scores_file, write_scores
from model_build.segmentation_data import SegData, SegSplit, load_segmentation, split_segmentation
from model_build.segmentation_eval import THRESHOLD, Scores, min_region_px, montage, parity, score, summarise_by_source
from model_build.split import EXTERNAL, HoldOutRule, relative_name, write_split_csv

log = logging.getLogger(__name__)

MAX_INT8_DICE_DROP = 0.01  # the bar: int8 Dice within 0.01 of the float model's


@dataclass(frozen=True)
class SegBuildConfig:
    data: tuple[str, ...]
    out: Path
    arch: str = "lite0"
    resolution: int = 224
    weights: Path | None = None
    limit: int | None = None  # at most N lesion and N empty images per source (quick runs)
    lesion_free: bool = True
    external_test: str | None = None
    representative_steps: int = 200
    n_boot: int = 1000
    seed: int = 0
    montage_n: int = 24
    train: SegTrainConfig = field(default_factory=SegTrainConfig)


@dataclass
class SegBuildResult:
    out: Path
    metrics: dict[str, Any]


def input_spec(resolution: int) -> InputSpec:
    return InputSpec(height=resolution, width=resolution)  # uint8 grey3 letterbox, exact resampling, normalised in the model


def int8_predict(runner, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The device's runner over each image: mask probabilities ``[N,S,S]`` and lesion logits ``[N]``."""
    masks, lesion = [], []
    for image in pixels:
        logit, mask = runner.invoke(runner.input_tensor(image), with_features=True)
        masks.append(mask[..., 0])
        lesion.append(float(logit[0]))
    return np.stack(masks) if masks else np.zeros((0, *pixels.shape[1:]), np.float32), np.array(lesion)


def _montage_pick(data: SegData, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` images: lesion images spread over the sources, a quarter images with an empty mask."""
    rng = np.random.default_rng(seed)
    lesion = data.has_lesion()[idx]
    n_empty = min(int((~lesion).sum()), max(1, n // 4))
    empty = rng.permutation(idx[~lesion])[:n_empty]
    by_source: dict[str, list[int]] = {}
    for i in rng.permutation(idx[lesion]):
        by_source.setdefault(data.samples[i].source, []).append(int(i))
    chosen: list[int] = []
    while len(chosen) < n - n_empty and any(by_source.values()):
        for source in sorted(by_source):
            if by_source[source] and len(chosen) < n - n_empty:
                chosen.append(by_source[source].pop())
    return np.array(chosen + [int(i) for i in empty], dtype=np.int64)


def _evaluate(
    name: str, data: SegData, idx: np.ndarray, groups: np.ndarray, runner, seg, cfg: SegBuildConfig, min_px: int, report: Path
) -> dict[str, Any]:
    sub = data.subset(idx)
    probs_q, logits_q = int8_predict(runner, sub.pixels)
    probs_f, _ = predict_float(seg, sub.pixels)
    scores_q = score(probs_q, sub.masks, sub.scales, min_px, image_boxes=sub.image_boxes)
    scores_f = score(probs_f, sub.masks, sub.scales, min_px, image_boxes=sub.image_boxes)
    pick = _montage_pick(sub, np.arange(len(idx)), cfg.montage_n, cfg.seed)
    captions = [
        f"{sub.samples[i].source.split('#')[0][:10]} {sub.samples[i].sample.path.stem[:12]}"
        + (" free" if sub.samples[i].sample.view != "full" else "")
        + (f" D{scores_q.dice[i]:.2f}" if scores_q.lesion[i] else "")
        for i in pick
    ]
    montage(sub.pixels[pick], sub.masks[pick], probs_q[pick], captions, report / f"montage_{name}.png", min_px, sub.image_boxes[pick])
    # per image, so two runs scoring the same images (one held-out source, or one split's test patients) compare paired
    files = [relative_name(s.sample) for s in sub.samples]
    write_scores(report / scores_file(name).name, [s.sample.source for s in sub.samples], files, groups.tolist(), scores_q)
    return {
        "n": int(len(idx)),
        "int8": summarise_by_source(scores_q, groups, sub.sources(), cfg.n_boot, cfg.seed),
        "float": summarise_by_source(scores_f, groups, sub.sources(), cfg.n_boot, cfg.seed),
        "parity_int8_vs_float": parity(scores_f, scores_q),
        "lesion_logit_auc": _auc(scores_q, logits_q),
    }


def _auc(s: Scores, logits: np.ndarray) -> float | None:
    from model_build.evaluate import binary_auc

    value = binary_auc(s.lesion, logits)
    return None if not np.isfinite(value) else value


def build_segmentation(cfg: SegBuildConfig) -> SegBuildResult:
    check_resolution(cfg.arch, cfg.resolution)
    start = time.monotonic()
    spec = input_spec(cfg.resolution)
    rule = HoldOutRule.parse(cfg.external_test) if cfg.external_test else None
    data = load_segmentation(list(cfg.data), spec, limit=cfg.limit, seed=cfg.seed, lesion_free=cfg.lesion_free)
    split = split_segmentation(data, cfg.seed, rule)
    train_idx, val_idx, test_idx = (split.indices(s) for s in ("train", "val", "test"))
    if not len(train_idx) or not len(test_idx):
        raise ValueError(f"segmentation split too small: {len(train_idx)} train, {len(val_idx)} validation, {len(test_idx)} test images")
    log.info("segmentation split: %d train, %d validation, %d test, %d external", len(train_idx), len(val_idx), len(test_idx), len(split.external))
    import keras

    keras.utils.set_random_seed(cfg.seed)  # before any layer is made: the decoder's initial weights follow the seed
    seg = build_segmenter(cfg.arch, cfg.resolution, cfg.weights)
    history = train_segmenter(seg, (data.pixels[train_idx], data.masks[train_idx]), (data.pixels[val_idx], data.masks[val_idx]), cfg.train)
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = cfg.out / "report"
    report.mkdir(exist_ok=True)
    seg.model.save_weights(str(cfg.out / "segmentation-float.weights.h5"))
    model_bytes = _convert(seg, data.pixels[train_idx], cfg)
    names = identify_outputs(model_bytes, 1)  # scores = the lesion logit [1, 1], "cam_features" = the mask [1, S, S, 1]
    runner = int8_runner(model_bytes, spec, names, 1)
    min_px = min_region_px(cfg.resolution)
    groups = np.array(split.groups)
    metrics: dict[str, Any] = {
        "kind": "lesion segmentation",
        "arch": cfg.arch,
        "resolution": cfg.resolution,
        "pretrained": seg.pretrained,
        "sources": sorted({s.sample.source for s in data.samples}),
        "images": {"total": len(data.samples), "train": len(train_idx), "val": len(val_idx), "test": len(test_idx), "external": len(split.external)},
        "lesion_images_without_mask_left_out": data.left_out,
        "bad_files": [asdict(b) for b in data.bad_files],
        "threshold": THRESHOLD,
        "min_region_px": min_px,
        "train": {**{k: v for k, v in asdict(cfg.train).items() if k != "augment"}, "history": history.to_dict()},
        "limit": cfg.limit,
        "lesion_free_views": cfg.lesion_free,
        "seed": cfg.seed,
        "test": _evaluate("test", data, test_idx, groups[test_idx], runner, seg, cfg, min_px, report),
    }
    if rule is not None:
        metrics["external_test"] = {
            "rule": str(rule),
            **_evaluate("external", data, split.external, groups[split.external], runner, seg, cfg, min_px, report),
        }
    write_segmentation(cfg.out, model_bytes, segmentation_spec(spec, names.cam_features, names.scores, min_px, model_bytes, headline(metrics)))
    _write_split(report / "split.csv", data, split)
    metrics["seconds"] = time.monotonic() - start
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n", encoding="utf-8")
    (report / "REPORT.md").write_text("\n".join(report_lines(metrics)) + "\n", encoding="utf-8")
    return SegBuildResult(cfg.out, metrics)


class RescoreError(ValueError):
    """A run's held-out scores cannot be redone: no held-out part, a missing file, or other held-out images."""


@dataclass(frozen=True)
class RescoredScores:
    path: Path
    dice_mean: float  # by today's scoring rule
    reported_dice_mean: float  # the run's report's


def rescore(seg_dir: Path, data: Sequence[str | os.PathLike[str]], part: str = EXTERNAL) -> RescoredScores:
    """``report/<part>_scores.csv`` for a ``segment`` run made before the build wrote it, by today's scoring rule:
    its int8 model on that part's images (``external``: its held-out source; ``test``: its own test patients),
    loaded and split with the run's own settings (its ``metrics.json``). The images and their groups must be the
    ones its ``split.csv`` lists for that part, or nothing is written (other data, another split); the mean Dice is
    returned beside the report's (they differ where the scoring rule changed since the run)."""
    report = seg_dir / "report"
    if part not in PARTS:
        raise RescoreError(f"part {part!r}: choose one of {', '.join(PARTS)}")
    try:
        metrics = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
        model_bytes = (seg_dir / "segmentation.tflite").read_bytes()
        with open(report / "split.csv", newline="", encoding="utf-8") as fh:
            listed = {(r["source"], r["file"]): r["group"] for r in csv.DictReader(fh) if r["split"] == part}
    except (OSError, ValueError, KeyError) as exc:
        raise RescoreError(f"{seg_dir}: not a `segment` output ({exc})") from None
    external = metrics.get("external_test")
    if part == EXTERNAL and not external:
        raise RescoreError(f"{seg_dir}: held no source out (no external_test in its metrics.json)")
    spec = input_spec(int(metrics["resolution"]))
    loaded = load_segmentation(list(data), spec, limit=metrics["limit"], seed=int(metrics["seed"]), lesion_free=bool(metrics["lesion_free_views"]))
    split = split_segmentation(loaded, int(metrics["seed"]), HoldOutRule.parse(external["rule"]) if external else None)
    chosen = split.external if part == EXTERNAL else split.indices("test")
    sub = loaded.subset(chosen)
    sources, files = [s.sample.source for s in sub.samples], [relative_name(s.sample) for s in sub.samples]
    groups = [split.groups[i] for i in chosen]
    if dict(zip(zip(sources, files), groups)) != listed:
        raise RescoreError(
            f"{seg_dir}: {len(files)} {part} images here, {len(listed)} in its split.csv, not the same images and groups: "
            "give the --data it was built on, in the same order"
        )
    runner = int8_runner(model_bytes, spec, identify_outputs(model_bytes, 1), 1)
    probs, _ = int8_predict(runner, sub.pixels)
    scores = score(probs, sub.masks, sub.scales, int(metrics["min_region_px"]), float(metrics["threshold"]), image_boxes=sub.image_boxes)
    path = report / scores_file(part).name
    write_scores(path, sources, files, groups, scores)
    again = float(np.mean(scores.dice[scores.lesion])) if scores.lesion.any() else float("nan")
    reported = (external if part == EXTERNAL else metrics["test"])["int8"]["all"]["dice_mean"]["value"]
    return RescoredScores(path, again, float(reported))


def _convert(seg, train_pixels: np.ndarray, cfg: SegBuildConfig) -> bytes:
    from model_build.export import convert_int8

    order = np.random.default_rng(cfg.seed).permutation(len(train_pixels))
    return convert_int8(export_model(seg), train_pixels[order], cfg.representative_steps)


SEGMENTATION_JSON = "segmentation.json"
SEGMENTATION_MODEL = "segmentation.tflite"


def segmentation_spec(
    spec: InputSpec,
    mask: str,
    lesion_logit: str,
    min_px: int,
    model_bytes: bytes,
    metrics: dict[str, Any] | None = None,
    threshold: float = THRESHOLD,
) -> SegmentationSpec:
    """The bundle's ``segmentation`` section for a converted model: one definition (device.model.bundle)."""
    return SegmentationSpec(
        input=spec,
        outputs=SegmentationOutputs(mask=mask, lesion_logit=lesion_logit),
        model=SEGMENTATION_MODEL,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mask=MaskSpec(threshold=threshold, min_region_px=min_px),
        metrics=metrics or {},
    )


def write_segmentation(out: Path, model_bytes: bytes, spec: SegmentationSpec) -> None:
    """``segmentation.tflite`` and ``segmentation.json`` (validated as the bundle will read it) into ``out``."""
    data = spec.to_dict()
    SegmentationSpec.from_dict(data, source=str(out / SEGMENTATION_JSON))
    out.mkdir(parents=True, exist_ok=True)
    (out / SEGMENTATION_MODEL).write_bytes(model_bytes)
    (out / SEGMENTATION_JSON).write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a bundle carries in ``segmentation.metrics``: the held-out test set's, int8 (the full report is
    ``report/segmentation/``)."""
    out: dict[str, Any] = {
        "arch": metrics.get("arch"),
        "resolution": metrics.get("resolution"),
        "limit": metrics.get("limit"),
        "report": "report/segmentation/REPORT.md",
    }
    test = metrics.get("test", {}).get("int8", {}).get("all")
    if test:
        out["test"] = {k: test[k] for k in ("n_lesion", "dice_mean", "dice_median", "iou_mean", "missed", "false_outline_rate") if k in test}
    return json.loads(json.dumps(out, default=_json_default))  # plain JSON types (numpy scalars -> floats)


class PackError(ValueError):
    """A segmentation output or bundle that cannot be packed (names the file)."""


def pack_segmentation(
    bundle_dir: Path, seg_dir: Path, out: Path, version: str | None = None, folds: list[Path] | None = None, replace: bool = False
) -> ModelBundle:
    """A copy of the classifier bundle at ``bundle_dir`` with ``model_build segment``'s output (``seg_dir``) as its
    segmentation model, written to ``out`` through ``write_bundle`` (format 4). The classifier, its manifest and its
    files are kept; the segmentation report goes to ``report/segmentation/``. ``version``: default
    ``<version>+seg``. The segmentation model's outputs on the bundle's reference frame are recorded as
    ``segmentation.reference`` (a bundle without a reference frame gets one, with the classifier's reference:
    :func:`device.selftest.record_segmentation_reference`). The model card gets its lesion-outline section
    (:mod:`model_build.segmentation_card`, with the leave-one-source-out ``folds``' figures). The copy is unsigned (a
    signature covers every file): sign it again. ``replace``: ``bundle_dir`` may carry a segmentation model already
    (a shipped bundle whose outline model was retrained); its classifier is kept and the old model, its section and
    report are left out (the version then defaults to the classifier's ``+seg-<the new model's sha256, 8 hex>``)."""
    base = load_bundle(bundle_dir)
    replacing = base.manifest.segmentation is not None
    if replacing and not replace:
        raise PackError(
            f"{bundle_dir}: has a segmentation model already ({base.manifest.version}); pack onto the classifier bundle alone, or --replace it"
        )
    json_path = seg_dir / SEGMENTATION_JSON
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{json_path}: cannot read ({exc})") from exc
    spec = SegmentationSpec.from_dict(data, source=str(json_path))
    model_path = seg_dir / spec.model
    if not model_path.is_file():
        raise PackError(f"{model_path}: the segmentation model named by {json_path} is missing")
    seg_bytes = model_path.read_bytes()
    if hashlib.sha256(seg_bytes).hexdigest() != spec.model_sha256:
        raise PackError(f"{model_path}: sha256 differs from {json_path}'s model_sha256 (not the model it describes)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PackError(f"{out}: exists and is not an empty directory; choose a new --out")
    if folds:
        spec = dataclasses.replace(spec, metrics={**spec.metrics, "leave_one_source_out": [fold_headline(f) for f in folds]})
    manifest = dataclasses.replace(base.manifest, segmentation=spec, version=version or packed_version(base.manifest.version, spec, replacing))
    written = write_bundle(out, base.model_path.read_bytes(), manifest, segmentation=seg_bytes)
    files = base.other_files(leave_out={"report/segmentation/"} if replacing else ())
    card = files.get(CARD_FILE)
    if card is not None:
        files[CARD_FILE] = _packed_card(written.manifest, base.path, card.decode("utf-8")).encode("utf-8")
    report = seg_dir / "report"
    if report.is_dir():
        files.update({f"report/segmentation/{p.relative_to(report).as_posix()}": p.read_bytes() for p in sorted(report.rglob("*")) if p.is_file()})
    if files:
        edit_bundle(out, files=files)
    return record_segmentation_reference(out)  # what `device selftest` must reproduce, by the device's own runner


def packed_version(version: str, spec: SegmentationSpec, replacing: bool) -> str:
    """A packed bundle's default version: the classifier's ``+seg``; once an outline model is swapped for another,
    the classifier's (any ``+seg`` / ``+seg-<sha8>`` taken off) ``+seg-<the new model's sha256, 8 hex>``."""
    if not replacing:
        return f"{version}+seg"
    classifier_version = re.sub(r"\+seg(-[0-9a-f]{8})?$", "", version)
    return f"{classifier_version}+seg-{spec.model_sha256[:8]}"


def _packed_card(manifest: Manifest, base_dir: Path, base_card: str) -> str:
    """The packed bundle's card: made again from its manifest and the base's build report, as every card rewrite is
    (its title carries the new version; the outline section comes from the manifest); a base without a build report
    keeps its card with the outline section added."""
    from model_build.card import model_card_text
    from model_build.report import ReportError, read_report

    try:
        return model_card_text(manifest, read_report(base_dir))
    except ReportError:
        assert manifest.segmentation is not None  # packed just now
        return with_outline_section(base_card, outline_section(manifest.segmentation))


def _write_split(path: Path, data: SegData, split: SegSplit) -> None:
    kept = [data.samples[i].sample for i in split.kept]
    external = ([data.samples[i].sample for i in split.external], [split.groups[i] for i in split.external])
    write_split_csv(path, kept, split.assignment, external)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _ci(entry: dict[str, Any], digits: int = 3) -> str:
    return ci_text(entry, digits, missing="–")


def _table(evaluation: dict[str, Any]) -> list[str]:
    lines = [
        "| subset | lesion images | Dice mean | Dice median | IoU mean | boundary (model px) | boundary (image px) | "
        "no outline drawn | empty masks | false outlines |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, m in evaluation.items():
        lines.append(
            f"| {key} | {m['n_lesion']} | {_ci(m['dice_mean'])} | {_ci(m['dice_median'])} | {_ci(m['iou_mean'])} | "
            f"{_ci(m['boundary_px_mean'], 1)} | {_ci(m['boundary_image_px_mean'], 1)} | {_ci(m['missed'])} | "
            f"{m['n_empty']} | {_ci(m['false_outline_rate'])} |"
        )
    return lines


def report_lines(metrics: dict[str, Any]) -> list[str]:
    h, t = metrics["train"]["history"], metrics["train"]
    images = metrics["images"]
    lines = [
        f"# Lesion segmentation: {metrics['arch']} at {metrics['resolution']} px (int8)",
        "",
        f"Sources {', '.join(metrics['sources'])}; {images['total']} images ({images['train']} train, {images['val']} validation, "
        f"{images['test']} test, {images['external']} held out), split by patient / near-duplicate group"
        + (f", at most {metrics['limit']} lesion and {metrics['limit']} empty images per source (a quick run)" if metrics["limit"] else "")
        + ".",
        f"Trained {len(h['loss'])} epoch(s) (best {h['best_epoch']}, stopped by {h['stopped_by']}) in {h['seconds'] / 60:.1f} min, "
        f"batch {t['batch_size']}, lr {t['lr']}; ImageNet encoder weights: {'yes' if metrics['pretrained'] else 'NO'}.",
        "",
        f"A drawn outline is the largest region of the mask ≥ {metrics['threshold']} inside the image (never in the letterbox bands, "
        f"as on the device) and at least {metrics['min_region_px']} model px; "
        "Dice, IoU and boundary error (mean symmetric contour distance) on lesion images, false outlines on images with an empty "
        "mask (normal scans, lesion-free views). 95 % CIs resample patients.",
        "",
        "## Held-out test patients (int8 model, device runner)",
        "",
        *_table(metrics["test"]["int8"]),
        "",
    ]
    p = metrics["test"]["parity_int8_vs_float"]
    if p.get("n"):
        verdict = "within" if abs(p["dice_difference"]) <= MAX_INT8_DICE_DROP else "NOT within"
        lines += [
            f"int8 vs float on {p['n']} test lesion images: mean Dice {p['dice_int8']:.4f} vs {p['dice_float']:.4f} "
            f"(difference {p['dice_difference']:+.4f}, {verdict} {MAX_INT8_DICE_DROP}); mean per-image |difference| "
            f"{p['mean_abs_image_difference']:.4f}.",
            "",
        ]
    if metrics["test"].get("lesion_logit_auc") is not None:
        lines += [f"Lesion / no-lesion logit AUC on the test images: {metrics['test']['lesion_logit_auc']:.3f}.", ""]
    if "external_test" in metrics:
        ext = metrics["external_test"]
        lines += [f"## Held out of training: `{ext['rule']}` ({ext['n']} images)", "", *_table(ext["int8"]), ""]
        q = ext["parity_int8_vs_float"]
        if q.get("n"):
            lines += [f"int8 vs float there: mean Dice {q['dice_int8']:.4f} vs {q['dice_float']:.4f} ({q['dice_difference']:+.4f}).", ""]
    if metrics["lesion_images_without_mask_left_out"]:
        left = ", ".join(f"{k} {v}" for k, v in metrics["lesion_images_without_mask_left_out"].items())
        lines += [f"Lesion images without a mask, not used: {left}.", ""]
    montages = "`montage_test.png`" + (" and `montage_external.png`" if "external_test" in metrics else "")
    lines += [f"Montage: {montages} (green reference, red predicted by the int8 model).", ""]
    return lines
