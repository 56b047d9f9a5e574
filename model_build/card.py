"""MODEL_CARD.md: intended use, data and its limits, metrics with CIs, failure modes, what was not validated."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from device.model.bundle import Manifest
from model_build import calibrate
from model_build.figure_text import ci_text as _ci
from model_build.report import BuildReport
from model_build.segmentation_card import outline_section, with_outline_section


def _chosen_weights(history: dict[str, Any]) -> str:
    """The weights training picked (before any int8-grid phase)."""
    if history.get("average_kept"):
        epochs = history["averaged_epochs"]
        return f"the average of epochs {epochs[0]}-{epochs[-1]}"
    grid = history.get("snapped_val_loss") is not None
    epoch = history.get("pre_grid_epoch") if grid else history.get("best_epoch")
    return f"epoch {epoch}" if epoch and epoch > 0 else "the initial weights"


def _kept(history: dict[str, Any]) -> str:
    chosen = _chosen_weights(history)
    if history.get("averaged_epochs") and not history.get("average_kept"):
        epochs = history["averaged_epochs"]
        chosen += f" (the average of epochs {epochs[0]}-{epochs[-1]} scored val loss {history['averaged_val_loss']:.4f})"
    if history.get("snapped_val_loss") is None:
        return chosen
    best = history["best_epoch"]
    in_grid = best > 0 and history["phase"][best - 1] == "int8-grid"
    return (
        f"{chosen}, val loss {history['pre_grid_val_loss']:.4f}; with its conv kernels snapped to the int8 grid "
        f"{history['snapped_val_loss']:.4f}; kept: {f'int8-grid epoch {best}' if in_grid else 'the snapped weights, before fine-tuning'}, "
        f"val loss {history['kept_val_loss']:.4f}"
    )


def _origin_lines(origin: dict[str, Any] | None) -> list[str]:
    if not origin:
        return []
    h, train = origin.get("history") or {}, (origin.get("config") or {}).get("train") or {}
    best = h.get("best_epoch", -1)
    val = f", val loss {h['val_loss'][best - 1]:.4f}" if best > 0 and h.get("val_loss") else ""
    return [
        "",
        f"Initialised from the float weights of an earlier build on the same split, `{origin['build']}`: "
        f"{train.get('epochs_frozen')} head-only + {train.get('epochs')} fine-tuning epochs at peak lr {train.get('lr')}, "
        f"kept epoch {best} of {len(h.get('epoch', []))}{val}; its history is `report/metrics.json` › "
        "`initialised_from`, plotted in `report/training_curves_origin.png`.",
    ]


def _grid_note(history: dict[str, Any]) -> str:
    if history.get("snapped_val_loss") is None:
        return ""
    return (
        " The float model was fine-tuned with its convolution kernels on the int8 grid (BatchNorm folded, per "
        "channel, as the converter quantizes them), so the int8 model holds exactly its kernels and the remaining "
        "difference is activation rounding."
    )


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    keys = ("accuracy", "macro_f1", "malignant_auc", "malignant_sensitivity", "malignant_specificity", "ece")
    lines = ["| subset | n (groups) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for subset, m in evaluation.items():
        head = m["headline"]
        lines.append(f"| {subset} | {m['n']} ({m['n_groups']}) | " + " | ".join(_ci(head.get(k)) for k in keys) + " |")
    return lines


def _per_class(m: dict[str, Any]) -> list[str]:
    lines = ["| class | precision | recall | F1 | support | one-vs-rest AUC |", "|---|---|---|---|---|---|"]
    for name, v in m["per_class"].items():
        auc = m["auc_ovr"].get(name)
        auc_s = f"{auc:.3f}" if isinstance(auc, float) else "n/a"
        lines.append(f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} | {auc_s} |")
    return lines


def _shortcut_section(s: dict[str, Any] | None) -> list[str]:
    if not s:
        return ["Not run for this build."]
    rem, inj, att = s["removal_all"], s["injection_all"], s.get("cam_attention_on_marks", {})
    lines = [
        "Many images (both sources) carry sonographer marks: caliper crosses, dotted measurement lines, text. "
        "Training draws synthetic marks on ~35% of images of every class so marks carry no label information. "
        "Checks on the test split (float model, calibrated):",
        "",
        f"- images with detected bright overlay structures: {s['images_with_detected_marks']} of {rem['n']}; "
        f"accuracy with marks {_f(s.get('accuracy_with_marks'))}, without {_f(s.get('accuracy_without_marks'))};",
        f"- **removal** (inpainting the detected marks): accuracy {rem['accuracy_before']:.3f} -> {rem['accuracy_after']:.3f}, "
        f"{100 * rem['prediction_flip_rate']:.1f}% of predictions change, mean |Δ p(malignant)| {rem['mean_abs_malignant_prob_change']:.3f};",
        f"- **injection** (drawing synthetic marks on every image): accuracy {inj['accuracy_before']:.3f} -> {inj['accuracy_after']:.3f}, "
        f"{100 * inj['prediction_flip_rate']:.1f}% of predictions change, mean |Δ p(malignant)| {inj['mean_abs_malignant_prob_change']:.3f};",
        f"- **attention**: class-activation-map mass on mark pixels relative to their area: mean {_f(att.get('mean_ratio'))}, "
        f"median {_f(att.get('median_ratio'))} over {att.get('images_with_marks', 0)} images (1.0 = no preference for marks). "
        "CAM samples: `report/cam_samples.jpg`.",
    ]
    return lines


def _external_section(external: dict[str, Any] | None) -> list[str]:
    """``--external-test``: images held out of train/validation/test with their patients, scored apart."""
    if not external:
        return []
    return [
        f"## Held out of training: `{external['rule']}` ({external['n']} images)",
        "",
        f"This build never saw the images whose `{external['column']}` contains `{external['contains']}` "
        "(nor any other image of those patients): they were kept out of training, "
        "validation and test and scored here, int8 model, shipped threshold, 95% CIs resampling patients. It estimates "
        "how the model does on a scanner it has not seen; the model was trained without them.",
        "",
        *_metrics_table(external["int8"]),
        "",
        "BI-RADS on these images:",
        "",
        *reader_lines(external.get("reader_baseline"), "held-out images"),
        "",
    ]


def revalidation_section(r: dict[str, Any] | None) -> list[str]:
    """``python -m model_build revalidate --write``: the bundle re-scored on another resampling."""
    if not r:
        return []
    old, new = r["from"], r["to"]
    lines = [
        f"## Re-validated on `{new}` resampling (built on `{old}`)",
        "",
        f"This bundle was calibrated and evaluated on pixels resized with `{old}`; devices now prepare them with `{new}` "
        "(identical on x86_64 and aarch64). Its validation and test images were re-scored with the device's runner under both. "
        "The metrics above are the re-scored ones; the as-built figures stay in `report/metrics.json` "
        "(`evaluations.test_int8_as_built`). Temperature and thresholds were kept.",
        "",
        "| split | images | any change | max / mean Δp | label flips at the threshold | inconclusive flips |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        c = r[f"{split}_changes"]
        lines.append(
            f"| {split} | {c['n']} | {c['images_with_any_change']} | {c['max_prob_diff']:.3f} / {c['mean_prob_diff']:.4f} | "
            f"{len(c['label_flips'])} | {c['inconclusive_flips']} |"
        )
    before, after = (r.get(f"rule_threshold_on_val_int8_{x}") for x in (old, new))
    kept = r["thresholds"].get("malignant")
    if before and after and kept is not None:
        lower = kept <= after["threshold"]  # against the rule on the pixels the device now prepares
        lines += [
            "",
            f"The build's threshold rule, applied to the validation images' int8 probabilities, gives "
            f"{before['threshold']:.4f} on `{old}` pixels and {after['threshold']:.4f} on `{new}` pixels; "
            f"the shipped threshold {kept:.4f} (fitted at build time on the float model) is kept"
            + (
                f": it is lower, so more sensitive, than the rule's {after['threshold']:.4f} on `{new}` pixels."
                if lower
                else f", although the rule gives a lower one on `{new}` pixels: consider lowering it."
            ),
        ]
    return lines + [""]


def reader_lines(r: dict[str, Any] | None, images: str = "test images") -> list[str]:
    """The model beside the sonographer's BI-RADS on the same images (``model_build.reader``); ``images`` names them."""
    if not r:
        return ["Not computed for this build (`python -m model_build reader --bundle DIR --data ... --write` adds it)."]
    if "skipped" in r:
        return [f"Not computed: {r['skipped']}."]
    f = r["figures"]
    lines = [
        f"On the {r['n_images']} {images} ({r['n_malignant']} malignant, {r['n_benign']} benign; {r['n_groups']} patients) "
        f"of {', '.join(r['sources'])} that carry the BI-RADS category a senior ultrasonographer assigned at the examination "
        f"(categories: {', '.join(f'{k}: {v}' for k, v in r['birads_counts'].items())}), int8 model vs that reading, "
        "95% CIs resampling patients:",
        "",
        "| | model | BI-RADS | model − BI-RADS |",
        "|---|---|---|---|",
        f"| malignant AUC | {_ci(f['model_auc'])} | {_ci(f['reader_auc'])} | {_ci(f['auc_difference'])} |",
        f"| specificity at the reader's sensitivity {_ci(f['reader_sensitivity'])} (BI-RADS ≥ {r['biopsy_cutpoint']:g}) | "
        f"{_ci(f['model_specificity_at_reader_sensitivity'])} | {_ci(f['reader_specificity'])} | {_ci(f['specificity_difference'])} |",
    ]
    if "model_sensitivity_at_shipped_threshold" in f:
        lines.append(
            f"| at the shipped threshold {r['model_threshold']:.4f}: sensitivity / specificity | "
            f"{_ci(f['model_sensitivity_at_shipped_threshold'])} / {_ci(f['model_specificity_at_shipped_threshold'])} | | |"
        )
    lines += [
        "",
        "BI-RADS has only a few levels, so its ROC has few operating points and ties count half: its AUC is what that "
        "scale allows. The model's threshold in the second row is matched to the reader's sensitivity on these same "
        "images: a description, not an operating point. This is a retrospective comparison, not a reader study: the "
        "ultrasonographer saw the live examination and the patient, the model one still frame.",
    ]
    return lines


# The product's acceptance bar on the held-out test split (int8 model): metric -> minimum.
PRODUCT_BAR = {"accuracy": 0.92, "malignant_auc": 0.96, "malignant_sensitivity": 0.95}


def _bar_warning(report: BuildReport) -> list[str]:
    """A loud note when the shipped int8 model misses the product bar on the test split."""
    headline = report.headline("test_int8")

    def value(name: str) -> float | None:
        return (headline.get(name) or {}).get("value")

    missed = [name for name, minimum in PRODUCT_BAR.items() if (v := value(name)) is None or v < minimum]
    if not missed:
        return []
    parts = [f"{name.replace('_', ' ')} {_ci(headline.get(name))} (bar {PRODUCT_BAR[name]:.2f})" for name in missed]
    spec = headline.get("malignant_specificity")
    return [
        "> **The project's bar is NOT met by this model** (held-out test, int8): " + "; ".join(parts) + ". "
        f"Malignant specificity at the shipped threshold: {_ci(spec)}.",
        "",
    ]


# The model-v2 bar on the leave-one-source-out study (issue 15), judged per held-out source in the default mode.
LOSO_BAR_MIN = {"malignant_auc_lesions": 0.90, "sensitivity": 0.90, "specificity": 0.55}
LOSO_BAR_MAX = {"normals_called_malignant": 0.15}
_LOSO_WORDS = {
    "malignant_auc_lesions": "malignant AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "normals_called_malignant": "normal scans called malignant",
}


def loso_bar_misses(study: dict[str, Any]) -> list[str]:
    """Each way the study misses the leave-one-source-out bar, worded ("BUSI: normal scans called malignant 0.615 >
    0.15"); empty when every held-out source meets it. A source without real normal scans is not judged on them."""
    mode = study["modes"][study["default_mode"]]
    misses = []
    for source, overall in study["per_source"].items():
        name = _SOURCE_NAMES.get(source, source)
        figures = {"malignant_auc_lesions": overall.get("malignant_auc_lesions"), **mode["per_source"].get(source, {})}
        for key, minimum in LOSO_BAR_MIN.items():
            figure = figures.get(key) or {}
            if figure.get("value") is None or figure["value"] < minimum:
                misses.append(f"{name}: {_LOSO_WORDS[key]} {_f(figure.get('value'))} (n {figure.get('n', 0)}) < {minimum:.2f}")
        for key, maximum in LOSO_BAR_MAX.items():
            figure = figures.get(key) or {}
            if figure.get("value") is not None and figure["value"] > maximum:
                misses.append(f"{name}: {_LOSO_WORDS[key]} {_f(figure['value'])} (n {figure.get('n', 0)}) > {maximum:.2f}")
    return misses


def _loso_bar_words() -> str:
    """The bar in words, from LOSO_BAR_MIN / LOSO_BAR_MAX (the numbers the misses are judged by)."""
    minimums = ", ".join(f"{_LOSO_WORDS[key]} ≥ {value:.2f}" for key, value in LOSO_BAR_MIN.items())
    maximums = " and ".join(f"at most {value * 100:.0f} % of {_LOSO_WORDS[key]}" for key, value in LOSO_BAR_MAX.items())
    return f"{minimums} and {maximums}"


def _loso_bar_warning(study: dict[str, Any] | None) -> list[str]:
    if not study or not (misses := loso_bar_misses(study)):
        return []
    mode = _MODE_NAMES.get(study["default_mode"], study["default_mode"])
    return [
        f"> **The leave-one-source-out bar is NOT met** ({mode} mode; every held-out source needs {_loso_bar_words()}): " + "; ".join(misses) + ".",
        "",
    ]


def _gate_warning(report: BuildReport) -> list[str]:
    gate = report.parity_gate
    if gate is None or gate.passed:
        return []
    p = report.parity_int8_vs_float_test
    return [
        f"> **WARNING — interim bundle, int8 parity gate NOT passed.** The int8 model agrees with the float model on "
        f"{100 * p.top1_agreement:.1f}% of test images; the project requires {100 * gate.required:.0f}%. It was written "
        f"only because the build was run with `--min-agreement {gate.applied}`. The metrics below are measured on the "
        "int8 model itself, so they describe what the device runs, but this bundle is not the project's accepted model.",
        "",
    ]


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


_SOURCE_NAMES = {"busi": "BUSI", "bus-bra": "BUS-BRA", "breast-lesions-usg": "BrEaST-Lesions-USG"}
_MODE_NAMES = {"high_sensitivity": "High sensitivity", "balanced": "Balanced", "high_specificity": "High specificity"}


def _value(entry: dict[str, Any] | None) -> str:
    """``0.912`` from a study figure (its CI left to the tables above), ``—`` when it has no value."""
    return "—" if not entry or entry.get("value") is None else f"{entry['value']:.3f}"


def _v(entry: dict[str, Any] | None) -> str:
    """``0.912 [0.85, 0.96] (n 120)`` from a study figure, ``—`` when it has no value."""
    if not entry or entry.get("value") is None:
        return "—"
    lo, hi = entry["ci95"]
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{entry['value']:.3f}{ci} (n {entry['n']})"


def loso_section(study: dict[str, Any] | None) -> list[str]:
    """The card's headline: leave-one-source-out figures (model_build.operating_modes.study)."""
    if not study:
        return []
    lines = [
        "## On a source it never saw (leave-one-source-out) — read this first",
        "",
        f"Each source was held out in turn ({', '.join(_SOURCE_NAMES.get(s, s) for s in study['held_out_sources'])}): a model "
        "trained by this recipe on the other sources scored it. These figures, not the test split's, are what to expect "
        "on a scanner the model has not seen, and every threshold of this bundle was chosen on them. Normal scans: only BUSI "
        "has real ones; for the other sources, *normal views* are lesion-free regions cut from their lesion images.",
        "",
        "| held-out source | malignant AUC (lesions) | 3-class accuracy | normal scans: top class normal | normal views: top class normal |",
        "|---|---|---|---|---|",
    ]
    for source, f in study["per_source"].items():
        lines.append(
            f"| {_SOURCE_NAMES.get(source, source)} | {_v(f['malignant_auc_lesions'])} | {_v(f['three_class_accuracy'])} | "
            f"{_v(f['normals_top_class_normal'])} | {_v(f['normal_views_top_class_normal'])} |"
        )
    lines += [
        "",
        f"Categories: *No lesion seen* when p(lesion) = 1 − p(normal) < {study['lesion_threshold']:.3f}; "
        "*Suspicious — refer* when p(malignant) ≥ the mode's threshold; *Lesion, low suspicion* otherwise.",
        "",
        "| mode | p(malignant) threshold | held-out source | sensitivity | specificity | "
        "normal scans called malignant | normal views called malignant |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, m in study["modes"].items():
        name = _MODE_NAMES.get(mode, mode) + (" (default)" if mode == study["default_mode"] else "")
        rows = [("all (pooled)", m["figures"])] + [(_SOURCE_NAMES.get(s, s), f) for s, f in m["per_source"].items()]
        for i, (where, f) in enumerate(rows):
            lead = f"| {name} | {m['malignant_threshold']:.4f} " if i == 0 else "| | "
            lines.append(
                lead + f"| {where} | {_v(f['sensitivity'])} | {_v(f['specificity'])} | "
                f"{_v(f['normals_called_malignant'])} | {_v(f['normal_views_called_malignant'])} |"
            )
    lines += [
        "",
        "Malignancy rate observed in each category (pooled held-out images):",
        "",
        "| mode | No lesion seen | Lesion, low suspicion | Suspicious — refer |",
        "|---|---|---|---|",
    ]
    for mode, m in study["modes"].items():
        c = m["categories"]
        lines.append(f"| {_MODE_NAMES.get(mode, mode)} | {_v(c['no_lesion'])} | {_v(c['low_suspicion'])} | {_v(c['suspicious'])} |")
    lines += [
        "",
        "95 % CIs resample patients / near-duplicate groups. The shipped model itself is trained on every source; "
        "these figures estimate the recipe, not this exact model, on an unseen scanner.",
        "",
    ]
    return lines


def store_report_section(bundle_dir: Path, section: str, result: dict[str, Any]) -> None:
    """Set one section of a bundle's ``report/metrics.json`` (a :class:`BuildReport` field) and rewrite its
    ``MODEL_CARD.md`` from the report, through ``edit_bundle`` (a signed bundle is refused; the model and manifest
    are not touched)."""
    from device.model.bundle import edit_bundle, load_bundle
    from model_build.report import REPORT_FILE, read_report

    if section not in {f.name for f in fields(BuildReport)} - {"extra", "key_order"}:
        raise ValueError(f"{section!r} is not a section of the build report")
    bundle = load_bundle(bundle_dir)
    report = read_report(bundle.path)
    setattr(report, section, result)
    edit_bundle(
        bundle.path,
        files={str(REPORT_FILE): report.to_bytes(), "MODEL_CARD.md": model_card_text(bundle.manifest, report).encode("utf-8")},
    )


def write_model_card(path: Path, manifest: Manifest, report: BuildReport) -> None:
    path.write_text(model_card_text(manifest, report), encoding="utf-8")


def seed_spread_section(spread: dict[str, Any] | None) -> list[str]:
    """Another training run of the recipe at this bundle's thresholds (model_build.seed_spread)."""
    if not spread:
        return []
    lines = [
        "## Another training run of this recipe — the CIs above do not cover it",
        "",
        "The CIs above resample patients of one training run. The same recipe trained again with another seed, its "
        "held-out sources scored the same way, gives at this bundle's thresholds:",
        "",
        "| mode | p(malignant) threshold | sensitivity: this run → another run | specificity | normal scans called malignant |",
        "|---|---|---|---|---|",
    ]
    for mode, m in spread["modes"].items():
        cells = [f"{_v(m['this_run'][k])} → {_v(m['reseeded'][k])}" for k in ("sensitivity", "specificity", "normals_called_malignant")]
        lines.append(f"| {_MODE_NAMES.get(mode, mode)} | {m['malignant_threshold']:.4f} | " + " | ".join(cells) + " |")
    aucs = "; ".join(
        f"{_SOURCE_NAMES.get(s, s)} {a['this_run']['value']:.3f} → {a['reseeded']['value']:.3f}" for s, a in spread["malignant_auc_lesions"].items()
    )
    default = spread["modes"].get("balanced") or next(iter(spread["modes"].values()))
    lines += [
        "",
        f"Malignant AUC (lesions) per held-out source, this run → another run: {aucs}.",
        "",
        "The ranking moved little between the two runs; where p(malignant) falls moved more: at the same threshold the "
        f"balanced mode's pooled sensitivity was {default['this_run']['sensitivity']['value']:.3f} on this run's folds and "
        f"{default['reseeded']['sensitivity']['value']:.3f} on the other's. The shipped model is a further run (on every "
        "source), so these two runs, not the CIs, show how far its figures on an unseen scanner can be from those above.",
        "",
    ]
    return lines + _both_runs_lines(spread["modes"])


def _both_runs_lines(modes: dict[str, Any]) -> list[str]:
    """What a threshold that keeps every mode's target on every held-out source of *both* runs would cost."""
    rows = [(mode, m["both_runs"]) for mode, m in modes.items() if "both_runs" in m and "this_run" in m["both_runs"]]
    if not rows:
        return []
    lines = [
        "A threshold that kept each mode's target sensitivity on every held-out source of both runs would be the lower "
        "of the two runs' own (the other run's study would have chosen the second column); it is not used, for what "
        "it costs:",
        "",
        "| mode | the other run's own threshold | both runs | sensitivity: this run · another run | specificity | normal scans called malignant |",
        "|---|---|---|---|---|---|",
    ]
    for mode, both in rows:
        cells = [
            " · ".join(_value(both[run][k]) for run in ("this_run", "reseeded")) for k in ("sensitivity", "specificity", "normals_called_malignant")
        ]
        lines.append(
            f"| {_MODE_NAMES.get(mode, mode)} | {both['reseeded_threshold']:.4f} | {both['malignant_threshold']:.4f} | " + " | ".join(cells) + " |"
        )
    return lines + [""]


def _temperature_note(temperature: float, n_val: int) -> str:
    if n_val < calibrate.MIN_TEMPERATURE_IMAGES:
        minimum = calibrate.MIN_TEMPERATURE_IMAGES
        return f"Not calibrated: validation has {n_val} images, fewer than the {minimum} a temperature is fitted on; T = {temperature:.3f}."
    return f"Calibrated by temperature scaling on validation: T = {temperature:.3f}."


def model_card_text(manifest: Manifest, report: BuildReport) -> str:
    """MODEL_CARD.md for a bundle, from its manifest and its build report."""
    ev = report.evaluations
    test = ev["test_int8"]
    parity = report.parity_int8_vs_float_test
    op = report.operating_point
    sources = manifest.training_data.get("sources", {})
    split = report.split
    history = report.history
    config = report.config
    lines = [
        f"# Model card — {manifest.name} {manifest.version}",
        "",
        *_gate_warning(report),
        *_bar_warning(report),
        *_loso_bar_warning(report.leave_one_source_out),
        *loso_section(report.leave_one_source_out),
        *seed_spread_section(report.seed_spread),
        "## Intended use",
        "",
        "Decision support for **trained clinicians** reading breast ultrasound: a second opinion "
        f"({', '.join(manifest.labels)}) with a heatmap, on the sonopi appliance. **It is not a diagnosis** and must "
        "not be used to rule out biopsy or follow-up when clinical findings, BI-RADS assessment or the clinician's "
        "judgement say otherwise. Not for screening of asymptomatic populations without a clinician in the loop.",
        "",
        "## Model",
        "",
        f"- Architecture: EfficientNet-{config['arch'].capitalize()} (ImageNet-pretrained: {report.pretrained}), "
        "global average pooling, dropout, linear classifier; fine-tuned end to end (BatchNorm frozen).",
        f"- Input: {manifest.input.height}x{manifest.input.width} grey replicated to 3 channels, letterboxed, "
        "uint8 0..255 (normalisation (x-127)/128 inside the model).",
        "- Outputs: logits (`outputs.scores`) and the last conv feature map (`outputs.cam_features`) for heatmaps "
        "(`cam` in the manifest holds the classifier weights).",
        *(
            [
                "- The shipped graph runs each image and its left-right mirror as one batch of two through the backbone and "
                "averages the feature maps (a mild test-time augmentation)."
            ]
            if config.get("mirror_tta")
            else []
        ),
        *(
            [
                f"- Trained with an auxiliary head (weight {config['train']['aux_birads_weight']:g}, not in the shipped "
                "model) that learns the BI-RADS category of the training images that carry one."
            ]
            if config.get("train", {}).get("aux_birads_weight", 0) > 0
            else []
        ),
        f"- Full-integer int8 TFLite. {_temperature_note(manifest.temperature, sum(split.get('val', {}).values()))}",
        f"- Malignant operating threshold: p(malignant) ≥ {manifest.thresholds.get('malignant', float('nan')):.4f}, chosen on "
        f"validation for sensitivity ≥ {op.target_sensitivity if op else 0:.2f} in {100 * (op.confidence if op else 0):.0f}% of bootstrap "
        f"resamples (validation sensitivity {_f(op and op.val_sensitivity)}, specificity {_f(op and op.val_specificity)}).",
        "",
        "## Data",
        "",
        "| source | classes | images (train / val / test) |",
        "|---|---|---|",
    ]
    for source, labels in sources.items():
        counts = []
        for part in ("train", "val", "test"):
            counts.append(str(sum(v for k, v in split[part].items() if k.startswith(source + "/"))))
        lines.append(f"| {source} | {', '.join(labels)} | {' / '.join(counts)} |")
    lines += [
        "",
        "- BUSI (Al-Dhabyani et al., Data in Brief 2020): GE LOGIQ E9, Baheya Hospital, Cairo; normal/benign/malignant; no patient ids.",
        "- BUS-BRA (Gómez-Flores et al., Medical Physics 2023): GE Logiq 5/7, Toshiba Aplio 300, U-Systems; "
        "biopsy-proven benign/malignant; no normal class.",
        "- Splits keep whole groups together: BUS-BRA by `patient_id`; BUSI by near-duplicate clusters (pHash, "
        f"Hamming ≤ {config['hash_distance']}, chained), stratified by source and class, seed {config['seed']}. "
        "The split is in `report/split.csv`.",
        f"- Bad/unreadable files skipped: {len(report.bad_files)} (listed in `report/metrics.json`).",
        "",
        "**Limits of the data**: two public sources, three scanner vendors, two countries; the `normal` class comes "
        "from BUSI only (one scanner), so `normal` is confounded with that scanner; BUSI's labels are not all "
        "biopsy-proven; images are single still frames chosen by sonographers (typically showing the lesion well), "
        "not the full range of frames a device sees live.",
        "",
        "## Metrics (held-out test split, shipped int8 model, 95% bootstrap CIs resampling patients / near-duplicate clusters)",
        "",
        *_metrics_table(test),
        "",
        "3-class accuracy on `source:bus-bra` counts a `normal` prediction as an error (BUS-BRA has no normal images).",
        "Sensitivity/specificity are for the malignant class at the shipped threshold (malignant vs. not malignant).",
        "",
        "Per class (test, int8, all sources):",
        "",
        *_per_class(test["all"]),
        "",
        "Float model on the same test split, for comparison:",
        "",
        *_metrics_table({"all": ev["test_float"]["all"]}),
        "",
        f"int8 vs float (test, {parity.n} images): top-1 agreement {parity.top1_agreement:.4f}, "
        f"max |Δ probability| {parity.max_prob_diff:.4f}, mean {parity.mean_prob_diff:.4f}." + _grid_note(history),
        "",
        "Validation (float; used for early stopping, temperature and threshold — not an independent estimate):",
        "",
        *_metrics_table({"all": ev["val_float"]["all"]}),
        "",
        f"Training: {len(history['epoch'])} epoch(s) in this build, stopped by {history['stopped_by']}. Weights: "
        f"{_kept(history)}. Build time {report.build_seconds / 60:.1f} min. Plots: `report/*.png`.",
        *_origin_lines(report.initialised_from),
        "",
        *revalidation_section(report.revalidation),
        *_external_section(report.external_test),
        "## Compared with the sonographer's BI-RADS",
        "",
        *reader_lines(report.reader_baseline),
        "",
        "## Does the model read the sonographer's marks?",
        "",
        *_shortcut_section(report.shortcut_check),
        "",
        "## Known failure modes",
        "",
        "- Unseen scanners / presets / transducers (a different vendor's speckle, dynamic range or post-processing) "
        "can shift the scores; the per-source rows above show the size of such shifts between the two sources.",
        "- `normal` is learnt from one scanner only: normal tissue from another scanner may be called benign, and vice versa.",
        "- Frames without a lesion in view, off-axis frames, heavy shadowing, Doppler or elastography overlays, "
        "split-screen layouts and screenshots with large UI areas were not (or rarely) in the training data.",
        "- Rare malignant subtypes that look benign (e.g. some mucinous / medullary carcinomas, circumscribed "
        "high-grade tumours) and benign lesions that look malignant (complex fibroadenomas, fat necrosis, "
        "abscesses) are the expected errors; at the shipped threshold the model trades specificity for sensitivity.",
        "- Probabilities are calibrated on the validation split of these sources only; on other scanners they may be over-confident.",
        "",
        "## What was not validated",
        "",
        "- No prospective or clinical study and no reader study: the only comparison with a human reading is the "
        "retrospective BI-RADS one above, on one source's images.",
        "- No external test set from a scanner vendor absent from training (Philips, Siemens, Samsung, Mindray, "
        "handheld probes...), no validation on live video frames or on the appliance's capture path.",
        "- No subgroup analysis (age, breast density, lesion size, ethnicity) — the data carries no such fields for BUSI.",
        "- Thresholds were chosen on a small validation split; the confidence intervals above are wide accordingly.",
        "",
    ]
    text = "\n".join(lines)
    if manifest.segmentation is not None:  # a bundle packed with a segmentation model: its section, from the manifest
        text = with_outline_section(text, outline_section(manifest.segmentation))
    return text
