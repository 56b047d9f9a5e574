"""The whole build: data -> split -> train -> calibrate -> export int8 -> evaluate -> bundle."""

from __future__ import annotations

import csv
import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from device.model.bundle import CamSpec, InputSpec, Manifest, ModelBundle, Normalization, OutputSpec, QualitySpec, write_bundle
from device.selftest import record_reference
from model_build import calibrate, evaluate, export, reader, shortcut, split
from model_build.card import write_model_card
from model_build.classifier import NORM_MEAN, NORM_SCALE, build_classifier, input_resolution, mirrored_export_model
from model_build.data import DatasetError, LoadedData, load_sources
from model_build.lesion_removal import LESION_REMOVED
from model_build.lesion_views import LESION_CENTRED
from model_build.report import BuildReport, ParityGate, read_training_origin, write_report
from model_build.train import History, TrainConfig, birads_targets, to_batch, train

log = logging.getLogger(__name__)

PLACEHOLDER_SHA = "0" * 64


@dataclass(frozen=True)
class BuildConfig:
    data: tuple[str, ...]
    out: Path
    arch: str = "lite0"
    resolution: int | None = None  # input side; None = the architecture's native one (Lite0: 224)
    weights: Path | None = None
    strict: bool = False
    seed: int = 0
    limit_per_class: int | None = None
    fractions: tuple[float, float, float] = split.DEFAULT_FRACTIONS
    hash_distance: int = split.DEFAULT_MAX_DISTANCE
    target_sensitivity: float = 0.95
    threshold_confidence: float = 0.9
    min_agreement: float = export.MIN_AGREEMENT
    representative_steps: int = 400
    n_boot: int = 1000
    name: str | None = None
    version: str | None = None
    shortcut_check: bool = True
    mirror_tta: bool = False  # ship the image+mirror averaging graph (2x compute on the device)
    init_weights: Path | None = None  # start from these Keras weights (e.g. re-export with --epochs 0)
    external_test: str | None = None  # "column=text": hold those images (and their groups) out, score them apart
    lesion_views: bool = False  # add lesion-free (normal) and lesion-centred views cut by the sources' masks
    lesion_removed: float = 0.0  # this share of the lesion images with their lesion filled in, as normal (training only)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class BuildResult:
    bundle: ModelBundle
    metrics: BuildReport  # report/metrics.json
    seconds: float


def input_spec(arch: str, resolution: int | None = None) -> InputSpec:
    size = input_resolution(arch, resolution)
    norm = Normalization(NORM_MEAN, NORM_SCALE, True) if arch.startswith("lite") else Normalization(0.0, 1.0, True)
    return InputSpec(height=size, width=size, dtype="uint8", color="grey3", resize="letterbox", normalization=norm)


def build(cfg: BuildConfig) -> BuildResult:
    start = time.monotonic()
    out = Path(cfg.out)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    spec = input_spec(cfg.arch, cfg.resolution)
    hold_out_rule = split.HoldOutRule.parse(cfg.external_test) if cfg.external_test else None  # checked before any work

    data = load_sources(
        list(cfg.data),
        spec,
        strict=cfg.strict,
        limit_per_class=cfg.limit_per_class,
        seed=cfg.seed,
        lesion_views=cfg.lesion_views,
        lesion_removed=cfg.lesion_removed,
    )
    log.info("loaded %d images from %d source(s), labels %s, %d bad file(s)", len(data.samples), len(cfg.data), data.labels, len(data.bad_files))
    groups = split.assign_groups(data, cfg.hash_distance)
    data, groups, held_out = _hold_out(data, groups, hold_out_rule)
    assignment = split.split_groups(data.samples, groups, cfg.fractions, cfg.seed)
    split.check_no_leak(assignment)
    split.write_split_csv(report / "split.csv", data.samples, assignment, (held_out.data.samples, held_out.groups) if held_out else ([], []))
    split_idx = {name: _scored(data, assignment.indices(name), name) for name in split.SPLITS}
    parts = {name: data.subset(idx) for name, idx in split_idx.items()}
    for name, part in parts.items():
        if len(part.samples) == 0:
            raise DatasetError(f"the {name} split is empty: too few images or groups")
    y = {name: part.label_index() for name, part in parts.items()}
    group_of = {name: np.array(assignment.groups)[idx] for name, idx in split_idx.items()}
    log.info("split (images): %s", {k: len(v.samples) for k, v in parts.items()})

    import keras

    keras.utils.set_random_seed(cfg.seed)  # before any layer is made: the head's initial weights follow the seed
    clf = build_classifier(cfg.arch, len(data.labels), cfg.weights, resolution=cfg.resolution)
    origin = None
    if cfg.init_weights is not None:
        origin = weights_origin(Path(cfg.init_weights), report / "split.csv")
        clf.model.load_weights(str(cfg.init_weights))
        log.info("initialised from %s", cfg.init_weights)
    birads_train = birads_targets([reader.parse_birads(s.meta("birads")) for s in parts["train"].samples])
    history = train(clf, parts["train"].pixels, y["train"], parts["val"].pixels, y["val"], data.labels, cfg.train, birads_train)
    float_weights = out.parent / f"{out.name}{FLOAT_WEIGHTS_SUFFIX}"  # beside the bundle, never inside it
    clf.model.save_weights(str(float_weights))
    log.info("float weights saved to %s", float_weights)

    # With --mirror-tta the exported graph averages each image with its mirror (classifier.mirrored_export_model):
    # calibration, thresholds and float metrics always use the float model that is exported.
    export_model = mirrored_export_model(clf) if cfg.mirror_tta else clf.export_model()
    logits = {name: predict_export(export_model, parts[name].pixels) for name in ("val", "test")}
    temperature = calibrate.fit_temperature(logits["val"], y["val"])
    malignant = data.labels.index("malignant") if "malignant" in data.labels else None
    threshold = None
    operating = None
    if malignant is not None:
        p_val = calibrate.softmax(logits["val"], temperature)[:, malignant]
        operating = calibrate.choose_threshold(p_val, y["val"] == malignant, cfg.target_sensitivity, cfg.threshold_confidence, seed=cfg.seed)
        threshold = operating.threshold

    rng = np.random.default_rng(cfg.seed)
    rep_idx = rng.permutation(len(parts["train"].samples))[: cfg.representative_steps]
    model_bytes = export.convert_int8(export_model, parts["train"].pixels[rep_idx], cfg.representative_steps)
    names = export.identify_outputs(model_bytes, len(data.labels))
    int8 = export.int8_runner(model_bytes, spec, names, len(data.labels))
    int8_logits, int8_features = int8.score_batch(parts["test"].pixels, with_features=True)
    parity = export.parity(logits["test"], int8_logits, temperature)
    log.info("int8 vs float on test: top-1 agreement %.4f, max prob diff %.4f", parity.top1_agreement, parity.max_prob_diff)
    export.check_parity(parity, cfg.min_agreement)
    gate = ParityGate(required=export.MIN_AGREEMENT, applied=cfg.min_agreement, passed=parity.top1_agreement >= export.MIN_AGREEMENT)
    if not gate.passed:
        log.warning(
            "!!! int8 top-1 agreement %.4f is BELOW the project's %.2f gate; bundle written only because "
            "--min-agreement %.2f was given. The model card says so.",
            parity.top1_agreement,
            export.MIN_AGREEMENT,
            cfg.min_agreement,
        )

    def preds(name: str, split_logits: np.ndarray) -> evaluate.Predictions:
        return evaluate.Predictions(y[name], calibrate.softmax(split_logits, temperature), group_of[name], parts[name].sources())

    evaluations = {
        "val_float": evaluate.evaluate_split(preds("val", logits["val"]), data.labels, threshold, cfg.n_boot, cfg.seed),
        "test_float": evaluate.evaluate_split(preds("test", logits["test"]), data.labels, threshold, cfg.n_boot, cfg.seed),
        "test_int8": evaluate.evaluate_split(preds("test", int8_logits), data.labels, threshold, cfg.n_boot, cfg.seed),
    }
    external = None
    if held_out is not None:
        external = _evaluate_held_out(held_out, export_model, int8, temperature, threshold, malignant, data.labels, cfg)
    reader_baseline = None
    if malignant is not None:
        reader_baseline = reader.compare_on_samples(
            parts["test"].samples,
            y["test"] == malignant,
            calibrate.softmax(int8_logits, temperature)[:, malignant],
            group_of["test"],
            threshold,
            cfg.n_boot,
            cfg.seed,
        )
        reader_baseline["scored_by"] = "the build (its int8 model on the test split)"
    kernel, bias = clf.dense_weights()
    shortcut_result = None
    if cfg.shortcut_check:
        shortcut_result = _shortcut(
            clf,
            export_model,
            parts["test"],
            y["test"],
            temperature,
            malignant,
            kernel,
            bias,
            int8_features,
            int8_logits,
            data.labels,
            report,
            cfg.seed,
        )

    _plots(report, evaluations, preds("test", int8_logits), preds("val", logits["val"]), data.labels, threshold, history)
    if origin is not None and origin.get("history"):
        known = {f.name for f in dataclasses.fields(History)}
        origin_history = History(**{k: v for k, v in origin["history"].items() if k in known})
        evaluate.plot_training(origin_history, report / "training_curves_origin.png")
    seconds = time.monotonic() - start
    metrics = {
        "labels": list(data.labels),
        "temperature": temperature,
        "operating_point": dataclasses.asdict(operating) if operating else None,
        "parity_int8_vs_float_test": dataclasses.asdict(parity),
        "parity_gate": dataclasses.asdict(gate),
        "evaluations": evaluations,
        "shortcut_check": shortcut_result,
        "reader_baseline": reader_baseline,
        "external_test": external,
        "history": dataclasses.asdict(history),
        "initialised_from": origin,
        "split": split.summarise(data.samples, assignment),
        "n_groups": {name: int(len(set(group_of[name].tolist()))) for name in split.SPLITS},
        "bad_files": [dataclasses.asdict(b) for b in data.bad_files],
        "config": _jsonable(dataclasses.asdict(cfg)),
        "build_seconds": seconds,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "pretrained": clf.pretrained,
    }
    build_report = BuildReport.from_json(_jsonable(metrics), report / "metrics.json")  # validated as any read
    write_report(out, build_report)

    manifest = _manifest(cfg, data, spec, names, temperature, threshold, kernel, bias, evaluations, parity, build_report)
    write_bundle(out, model_bytes, manifest)
    bundle = record_reference(out)  # the test frame and the outputs `device selftest` must reproduce
    write_model_card(out / "MODEL_CARD.md", bundle.manifest, build_report)
    seconds = time.monotonic() - start
    log.info("bundle written to %s in %.0f s (%.2f MB model)", out, seconds, len(model_bytes) / 1e6)
    return BuildResult(bundle, build_report, seconds)


FLOAT_WEIGHTS_SUFFIX = "-float.weights.h5"


@dataclass(frozen=True)
class HeldOut:
    """Images kept out of train/validation/test by ``--external-test`` (with their groups)."""

    rule: split.HoldOutRule
    data: LoadedData
    groups: list[str]


def _hold_out(data: LoadedData, groups: list[str], rule: split.HoldOutRule | None) -> tuple[LoadedData, list[str], HeldOut | None]:
    if rule is None:
        return data, groups, None
    kept, held = split.hold_out(data.samples, groups, rule)
    log.info("--external-test %s: %d image(s) in %d group(s) held out of train/val/test", rule, len(held), len({groups[i] for i in held}))
    held = _scored(data, held, "external")
    return data.subset(kept), [groups[i] for i in kept], HeldOut(rule, data.subset(held), [groups[i] for i in held])


TRAIN_ONLY_VIEWS = frozenset({LESION_CENTRED, LESION_REMOVED})


def _scored(data: LoadedData, idx: np.ndarray, split_name: str) -> np.ndarray:
    """Lesion-centred views train only: scored, they would count a lesion twice; so do lesion-removed images
    (not real normal scans). Lesion-free views are kept everywhere (normal tissue of that scanner), under
    their own source name ``source#lesion_free``."""
    if split_name == "train":
        return idx
    return np.array([i for i in idx if data.samples[i].view not in TRAIN_ONLY_VIEWS], dtype=np.int64)


def _evaluate_held_out(
    held: HeldOut,
    export_model,
    int8: export.ModelRunner,
    temperature: float,
    threshold: float | None,
    malignant: int | None,
    labels: tuple[str, ...],
    cfg: BuildConfig,
) -> dict[str, Any]:
    """The held-out images scored like the test split: float and int8 metrics, and the BI-RADS comparison."""
    y = held.data.label_index()
    groups = np.array(held.groups)
    int8_probs = calibrate.softmax(int8.score_batch(held.data.pixels)[0], temperature)
    float_probs = calibrate.softmax(predict_export(export_model, held.data.pixels), temperature)
    result: dict[str, Any] = {"rule": str(held.rule), "column": held.rule.column, "contains": held.rule.contains, "n": int(len(y))}
    for kind, probs in (("float", float_probs), ("int8", int8_probs)):
        preds = evaluate.Predictions(y, probs, groups, held.data.sources())
        result[kind] = evaluate.evaluate_split(preds, labels, threshold, cfg.n_boot, cfg.seed)
    write_predictions(Path(cfg.out) / "report" / EXTERNAL_PREDICTIONS, held.data.samples, groups, int8_probs, labels)
    if malignant is not None:
        result["reader_baseline"] = reader.compare_on_samples(
            held.data.samples, y == malignant, int8_probs[:, malignant], groups, threshold, cfg.n_boot, cfg.seed
        )
    log.info("external test (%s, int8): %s", held.rule, evaluate.fmt_ci(result["int8"]["all"]["headline"]["accuracy"]))
    return result


EXTERNAL_PREDICTIONS = "external_predictions.csv"  # per held-out image: its int8 probabilities (model_build decide)


def write_predictions(path: Path, samples, groups: np.ndarray, probs: np.ndarray, labels: tuple[str, ...]) -> None:
    """One row per image: source, file (with its view), view, label, group and the calibrated probabilities."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "file", "view", "label", "group", *[f"p_{name}" for name in labels]])
        for sample, group, row in zip(samples, groups, probs):
            writer.writerow([sample.source, split.relative_name(sample), sample.view, sample.label, group, *[f"{float(v):.6f}" for v in row]])


def weights_origin(init_weights: Path, split_csv: Path) -> dict[str, Any] | None:
    """Where ``--init-weights`` came from, when it is a build's float weights (``<bundle>-float.weights.h5``).

    That build's training history is carried into this report, and its split must be this build's split:
    weights trained on another split may have seen this build's test images.
    """
    if not init_weights.is_file():
        raise DatasetError(f"--init-weights {init_weights}: no such file")
    if not init_weights.name.endswith(FLOAT_WEIGHTS_SUFFIX):
        log.warning("--init-weights %s is not a build's float weights: its training is not traceable", init_weights)
        return None
    build_dir = init_weights.with_name(init_weights.name[: -len(FLOAT_WEIGHTS_SUFFIX)])
    metrics_file, origin_split = build_dir / "report" / "metrics.json", build_dir / "report" / "split.csv"
    if not metrics_file.is_file() or not origin_split.is_file():
        log.warning("--init-weights %s: no report beside it in %s: its training is not traceable", init_weights, build_dir)
        return None
    if origin_split.read_bytes() != split_csv.read_bytes():
        raise DatasetError(
            f"--init-weights {init_weights} was trained on a different split ({origin_split}): its weights may have seen this build's test images"
        )
    origin = read_training_origin(build_dir)
    return {
        "weights": str(init_weights),
        "build": str(build_dir),
        "config": origin.config,
        "history": origin.history,
        "build_seconds": origin.build_seconds,
    }


def predict_export(export_model, grey: np.ndarray) -> np.ndarray:
    """Float logits of the (batch-1) export model, image by image."""
    return np.concatenate([export_model.predict_on_batch(to_batch(g[None]))[0] for g in grey], axis=0)


def _shortcut(
    clf, export_model, test: LoadedData, y_test, temperature, malignant, kernel, bias, int8_features, int8_logits, labels, report: Path, seed: int
) -> dict[str, Any]:
    def probs_fn(grey: np.ndarray) -> np.ndarray:
        return calibrate.softmax(predict_export(export_model, grey), temperature)

    result = shortcut.analyse(probs_fn, test.pixels, y_test, malignant, seed)
    pred = int8_logits.argmax(1)
    size = test.pixels.shape[1]
    cams = shortcut.cam_maps(int8_features, kernel, bias, pred, size)
    result["cam_attention_on_marks"] = shortcut.attention_on_marks(test.pixels, cams)
    marked = [i for i, g in enumerate(test.pixels) if shortcut.overlay_mask(g).sum() >= 15]
    pick = (marked[:: max(1, len(marked) // 12)] + list(range(len(test.pixels))))[:12]
    captions = [f"{test.samples[i].source} {labels[y_test[i]][:3]}->{labels[pred[i]][:3]}" for i in pick]
    shortcut.cam_montage(test.pixels[pick], cams[pick], captions, report / "cam_samples.jpg")
    return result


def _plots(report: Path, evaluations, test_preds, val_preds, labels, threshold, history: History) -> None:
    evaluate.plot_confusion(evaluations["test_int8"]["all"], report / "confusion_test.png", "test (int8, shipped)")
    evaluate.plot_roc(test_preds, labels, threshold, report / "roc_test.png", "ROC, test (int8, shipped)")
    evaluate.plot_reliability(test_preds, report / "reliability_test.png", "reliability, test (int8, T-scaled)")
    evaluate.plot_reliability(val_preds, report / "reliability_val.png", "reliability, validation (float, T-scaled)")
    evaluate.plot_training(history, report / "training_curves.png")


def _manifest(cfg, data, spec, names, temperature, threshold, kernel, bias, evaluations, parity, report: BuildReport) -> Manifest:
    now = datetime.now(UTC)
    test = evaluations["test_int8"]["all"]["headline"]
    return Manifest(
        name=cfg.name or f"sonopi-{cfg.arch}",
        version=cfg.version or now.strftime("%Y.%m.%d-%H%M"),
        created=now.isoformat(timespec="seconds"),
        labels=tuple(data.labels),
        input=spec,
        outputs=OutputSpec(scores=names.scores, scores_kind="logits", cam_features=names.cam_features),
        model_sha256=PLACEHOLDER_SHA,
        temperature=float(temperature),
        thresholds={"malignant": float(threshold)} if threshold is not None else {},
        quality=QualitySpec(min_confidence=0.5),
        cam=CamSpec(
            weights=tuple(tuple(float(v) for v in row) for row in kernel),
            bias=tuple(float(v) for v in bias),
        ),
        training_data={
            "sources": {k: list(v) for k, v in data.source_labels.items()},
            "images": len(data.samples),
            "split": report.split,
            "split_file": "report/split.csv",
            "arch": cfg.arch,
            "seed": cfg.seed,
        },
        metrics={
            "split": "test (held out, grouped by patient / near-duplicate cluster)",
            "model": "int8 (shipped)",
            **{k: v for k, v in _jsonable(test).items()},
            "int8_float_top1_agreement": parity.top1_agreement,
            "int8_float_max_prob_diff": parity.max_prob_diff,
        },
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value
