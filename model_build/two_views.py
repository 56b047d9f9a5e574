"""Two views of one lesion: the lesion-level rule (device/lesions.py) measured on BUS-BRA's two-view patients.

BUS-BRA has two views of the lesion for most patients (``bus_<id>-l.png`` / ``-r.png``, same histology). For the
bundle's held-out test patients that have both views, each view is judged as the device judges a frame
(``device.decision.decide`` in the bundle's balanced mode), then combined by each :class:`device.lesions.ViewRule`.
Reported per lesion, with 95 % CIs resampling patients: malignant AUC, sensitivity and specificity at the mode's
threshold — beside the frame-level figures (every view on its own), which is what one view per lesion gives.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.decision import MALIGNANT, Category, Mode, decide
from device.lesions import ViewRule, combine_views
from device.model.bundle import load_bundle
from model_build.evaluate import binary_auc, grouped_bootstrap
from model_build.rescore import RescoreError, score_test_split

SOURCE = "bus-bra"


@dataclass(frozen=True)
class Lesions:
    """Per lesion (a test patient with exactly two views): truth, each view's and each rule's scores."""

    patients: np.ndarray  # [L]
    malignant: np.ndarray  # [L] bool
    view_p: np.ndarray  # [L, 2] each view's p(malignant)
    view_suspicious: np.ndarray  # [L, 2] bool: the view's own category is suspicious
    rule_p: dict[str, np.ndarray]  # rule -> [L] combined p(malignant)
    rule_suspicious: dict[str, np.ndarray]  # rule -> [L] bool
    threshold: float
    mode: str


def collect(bundle_dir: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]], mode: Mode = Mode.BALANCED) -> Lesions:
    bundle = load_bundle(bundle_dir)
    m = bundle.manifest
    scored = score_test_split(bundle, roots, keep=lambda s: s.source == SOURCE and s.view == "full")
    spec = m.decision_spec()
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(scored.samples):
        if sample.patient_id:
            by_patient[sample.patient_id].append(i)
    pairs = {p: sorted(idx, key=lambda i: scored.samples[i].path.name) for p, idx in by_patient.items() if len(idx) == 2}
    if not pairs:
        raise RescoreError(f"no {SOURCE} test patient with two views in {bundle_dir}'s split")
    patients, malignant, view_p, view_s = [], [], [], []
    rule_p: dict[str, list[float]] = {r.value: [] for r in ViewRule}
    rule_s: dict[str, list[bool]] = {r.value: [] for r in ViewRule}
    threshold = 0.0
    for patient, idx in sorted(pairs.items()):
        labels = {scored.samples[i].label for i in idx}
        if len(labels) != 1:
            raise RescoreError(f"{SOURCE} patient {patient}: views labelled {sorted(labels)} — not one lesion")
        decisions = [decide(scored.probs[i], m.labels, spec, mode, None, inconclusive=False) for i in idx]
        threshold = decisions[0].malignant_threshold
        patients.append(patient)
        malignant.append(labels.pop() == MALIGNANT)
        view_p.append([d.p_malignant for d in decisions])
        view_s.append([d.category is Category.SUSPICIOUS for d in decisions])
        for rule in ViewRule:
            lesion = combine_views(decisions, rule)
            rule_p[rule.value].append(float(lesion.p_malignant or 0.0))
            rule_s[rule.value].append(lesion.category is Category.SUSPICIOUS)
    return Lesions(
        np.array(patients),
        np.array(malignant),
        np.array(view_p),
        np.array(view_s),
        {k: np.array(v) for k, v in rule_p.items()},
        {k: np.array(v) for k, v in rule_s.items()},
        threshold,
        mode.value,
    )


def _figures(lesions: Lesions, idx: np.ndarray) -> dict[str, float]:
    y = lesions.malignant[idx]
    out: dict[str, float] = {}
    frames_y = np.repeat(y, 2)  # every view on its own, as a frame
    out["frame:auc"] = binary_auc(frames_y, lesions.view_p[idx].ravel())
    out["frame:sensitivity"], out["frame:specificity"] = _sens_spec(frames_y, lesions.view_suspicious[idx].ravel())
    for rule in lesions.rule_p:
        out[f"{rule}:auc"] = binary_auc(y, lesions.rule_p[rule][idx])
        out[f"{rule}:sensitivity"], out[f"{rule}:specificity"] = _sens_spec(y, lesions.rule_suspicious[rule][idx])
    out["views_disagree"] = float(np.mean(lesions.view_suspicious[idx, 0] != lesions.view_suspicious[idx, 1]))
    return out


def _sens_spec(truth: np.ndarray, called: np.ndarray) -> tuple[float, float]:
    sens = float(np.mean(called[truth])) if truth.any() else float("nan")
    spec = float(np.mean(~called[~truth])) if (~truth).any() else float("nan")
    return sens, spec


def measure(lesions: Lesions, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    every = np.arange(len(lesions.patients))
    values = _figures(lesions, every)
    cis = grouped_bootstrap(lesions.patients, lambda idx: _figures(lesions, idx), n_boot, seed)
    return {
        "source": SOURCE,
        "mode": lesions.mode,
        "malignant_threshold": lesions.threshold,
        "lesions": int(len(every)),
        "malignant": int(lesions.malignant.sum()),
        "figures": {k: {"value": v, "ci95": list(cis.get(k, (float("nan"), float("nan"))))} for k, v in values.items()},
    }


def table(result: dict[str, Any]) -> list[str]:
    f = result["figures"]

    def cell(key: str) -> str:
        e = f[key]
        return f"{e['value']:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"

    lines = [
        f"{result['lesions']} {result['source']} test lesions with two views ({result['malignant']} malignant), "
        f"{result['mode']} mode, malignant threshold {result['malignant_threshold']:.4f}; 95 % CIs resampling patients",
        "",
        "| | malignant AUC | sensitivity | specificity |",
        "|---|---|---|---|",
        f"| each view alone (per frame) | {cell('frame:auc')} | {cell('frame:sensitivity')} | {cell('frame:specificity')} |",
    ]
    for rule in ViewRule:
        r = rule.value
        lines.append(f"| lesion, `{r}` of two views | {cell(r + ':auc')} | {cell(r + ':sensitivity')} | {cell(r + ':specificity')} |")
    lines += ["", f"the two views' categories disagree (one suspicious, one not) on {cell('views_disagree')} of lesions"]
    return lines
