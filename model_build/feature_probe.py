"""A fast leave-one-source-out probe on frozen ImageNet features: does a data recipe help unseen scanners?

Fine-tuning one fold takes a build's time; this probe takes minutes. It extracts the pooled features of the
ImageNet-pretrained backbone (no fine-tuning) once for every image and view, then, per held-out source, fits a
linear head on the other sources with and without the lesion-free / lesion-centred views and scores the
held-out source. It ranks recipes (what the views change for normals on a scanner the model never saw); it
does not estimate the shipped model's figures — ``model_build modes`` on fine-tuned folds does that.

    python -m model_build probe --data DIR [--data DIR ...] [--arch lite0] [--resolution 224]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_build.data import LoadedData, load_sources
from model_build.evaluate import binary_auc
from model_build.lesion_views import LESION_CENTRED, LESION_FREE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeRow:
    held_out: str
    recipe: str  # "images only" | "with views"
    malignant_auc_lesions: float
    normals_top_normal: float | None  # real normal scans of the held-out source whose top class is normal
    normal_views_top_normal: float | None  # its lesion-free views whose top class is normal
    n_train: int


def pooled_features(data: LoadedData, arch: str, resolution: int, batch: int = 32) -> np.ndarray:
    """Global-average-pooled backbone features of every image, ImageNet weights, no fine-tuning."""
    import keras

    from model_build.classifier import FEATURES_LAYER, build_classifier
    from model_build.train import to_batch

    clf = build_classifier(arch, len(data.labels), None, resolution=resolution)
    features = keras.Model(clf.model.input, keras.layers.GlobalAveragePooling2D()(clf.model.get_layer(FEATURES_LAYER).output))
    out = [features.predict_on_batch(to_batch(data.pixels[i : i + batch])) for i in range(0, len(data.pixels), batch)]
    return np.concatenate(out, axis=0)


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    head = LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced").fit(scaler.transform(x_train), y_train)
    probs = np.zeros((len(x_test), n_classes))
    probs[:, head.classes_] = head.predict_proba(scaler.transform(x_test))
    return probs


def probe(data: LoadedData, features: np.ndarray) -> list[ProbeRow]:
    y = data.label_index()
    source = np.array([s.source for s in data.samples])
    view = np.array([s.view for s in data.samples])
    labels = data.labels
    malignant, normal = labels.index("malignant"), labels.index("normal")
    rows = []
    for held in sorted(set(source.tolist())):
        test = (source == held) & (view != LESION_CENTRED)
        for recipe, train in (("images only", (source != held) & (view == "full")), ("with views", source != held)):
            probs = _fit_predict(features[train], y[train], features[test], len(labels))
            yt, vt, top = y[test], view[test], probs.argmax(1)
            lesions = (vt == "full") & (yt != normal)
            real_normals = (vt == "full") & (yt == normal)
            views = vt == LESION_FREE
            rows.append(
                ProbeRow(
                    held,
                    recipe,
                    binary_auc(yt[lesions] == malignant, probs[lesions, malignant]),
                    float(np.mean(top[real_normals] == normal)) if real_normals.sum() >= 10 else None,
                    float(np.mean(top[views] == normal)) if views.any() else None,
                    int(train.sum()),
                )
            )
            log.info("%s", rows[-1])
    return rows


def run(roots: Sequence[str], arch: str = "lite0", resolution: int = 224) -> list[ProbeRow]:
    from model_build.pipeline import input_spec

    data = load_sources(list(roots), input_spec(arch, resolution), lesion_views=True)
    return probe(data, pooled_features(data, arch, resolution))


def table(rows: list[ProbeRow]) -> list[str]:
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    lines = [
        "| held-out source | training data | malignant AUC (lesions) | normal scans: top class normal | "
        "normal views: top class normal | training images |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.held_out} | {r.recipe} | {f(r.malignant_auc_lesions)} | {f(r.normals_top_normal)} | {f(r.normal_views_top_normal)} | {r.n_train} |"
        for r in rows
    ]
    return lines
