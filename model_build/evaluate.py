"""Metrics with grouped bootstrap confidence intervals, per split and per source, and the report plots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.model.operating_point import sensitivity_specificity

log = logging.getLogger(__name__)

ECE_BINS = 15


@dataclass(frozen=True)
class Predictions:
    """Calibrated probabilities for one evaluation set."""

    y: np.ndarray  # [N] true label index
    probs: np.ndarray  # [N, K]
    groups: np.ndarray  # [N] group ids (patient / near-duplicate cluster), for the bootstrap
    sources: np.ndarray  # [N]

    def subset(self, mask: np.ndarray) -> Predictions:
        return Predictions(self.y[mask], self.probs[mask], self.groups[mask], self.sources[mask])


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def binary_auc(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, score))


def headline(y: np.ndarray, probs: np.ndarray, labels: tuple[str, ...], threshold: float | None) -> dict[str, float]:
    """The metrics that get confidence intervals."""
    from sklearn.metrics import f1_score

    pred = probs.argmax(axis=1)
    present = np.unique(y)
    out = {
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "ece": expected_calibration_error(y, probs),
    }
    if "malignant" in labels:
        m = labels.index("malignant")
        is_m = y == m
        out["malignant_auc"] = binary_auc(is_m, probs[:, m])
        if threshold is not None:
            out["malignant_sensitivity"], out["malignant_specificity"] = sensitivity_specificity(is_m, probs[:, m] >= threshold)
    return out


def grouped_bootstrap(
    groups: np.ndarray, statistic: Callable[[np.ndarray], dict[str, float]], n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of each value ``statistic(indices)`` returns, resampling whole groups
    (patients / near-duplicate clusters) with replacement. Non-finite resample values are dropped."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), size=len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        for key, value in statistic(idx).items():
            samples.setdefault(key, []).append(value)
    out = {}
    for key, values in samples.items():
        arr = np.array(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        out[key] = (float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))) if len(arr) else (float("nan"),) * 2
    return out


def bootstrap_ci(
    preds: Predictions, labels: tuple[str, ...], threshold: float | None, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95% percentile CIs of the headline metrics, resampling whole groups."""
    return grouped_bootstrap(preds.groups, lambda idx: headline(preds.y[idx], preds.probs[idx], labels, threshold), n_boot, seed)


def full_metrics(preds: Predictions, labels: tuple[str, ...], threshold: float | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y, probs = preds.y, preds.probs
    pred = probs.argmax(axis=1)
    k = np.arange(len(labels))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=k, zero_division=0)
    head = headline(y, probs, labels, threshold)
    ci = bootstrap_ci(preds, labels, threshold, n_boot, seed)
    return {
        "n": int(len(y)),
        "n_groups": int(len(np.unique(preds.groups))),
        "headline": {key: {"value": value, "ci95": list(ci.get(key, (float("nan"), float("nan"))))} for key, value in head.items()},
        "per_class": {
            labels[i]: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])} for i in k
        },
        "auc_ovr": {labels[i]: binary_auc(y == i, probs[:, i]) for i in k},
        "confusion": {"labels": list(labels), "matrix": confusion_matrix(y, pred, labels=k).tolist()},
        "threshold": threshold,
    }


def evaluate_split(preds: Predictions, labels: tuple[str, ...], threshold: float | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics on the whole split and per source dataset."""
    result = {"all": full_metrics(preds, labels, threshold, n_boot, seed)}
    for source in sorted(set(preds.sources.tolist())):
        sub = preds.subset(preds.sources == source)
        result[f"source:{source}"] = full_metrics(sub, labels, threshold, n_boot, seed)
    return result


def fmt_ci(entry: dict[str, Any]) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['value']:.3f} [{lo:.3f}, {hi:.3f}]"


# --- plots ----------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> None:
    plt = _plt()
    labels = metrics["confusion"]["labels"]
    cm = np.array(metrics["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted (argmax)")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(preds: Predictions, labels: tuple[str, ...], threshold: float | None, path: Path, title: str) -> None:
    from sklearn.metrics import roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for i, name in enumerate(labels):
        truth = preds.y == i
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, preds.probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {binary_auc(truth, preds.probs[:, i]):.3f})")
    if threshold is not None and "malignant" in labels:
        m = labels.index("malignant")
        flagged = preds.probs[:, m] >= threshold
        is_m = preds.y == m
        if is_m.any() and (~is_m).any():
            ax.plot(1 - (~flagged[~is_m]).mean(), flagged[is_m].mean(), "ko", label=f"malignant @ {threshold:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(preds: Predictions, path: Path, title: str, bins: int = 10) -> None:
    plt = _plt()
    conf = preds.probs.max(axis=1)
    correct = preds.probs.argmax(axis=1) == preds.y
    edges = np.linspace(0, 1, bins + 1)
    centers, accs, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            centers.append(conf[m].mean())
            accs.append(correct[m].mean())
            counts.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfect calibration")
    ax.plot(centers, accs, "o-", label=f"model (ECE {expected_calibration_error(preds.y, preds.probs):.3f})")
    for c, a, n in zip(centers, accs, counts):
        ax.annotate(str(n), (c, a), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
    ax.set_xlabel("confidence (max calibrated probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(history: Any, path: Path) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(history.epoch, history.train_loss, "o-", label="train loss (augmented, smoothed, weighted)")
    a.plot(history.epoch, history.val_loss, "o-", label="val loss")
    b.plot(history.epoch, history.val_accuracy, "o-", label="val accuracy")
    b.plot(history.epoch, history.val_malignant_auc, "o-", label="val malignant AUC")
    for ax in (a, b):
        if history.averaged_epochs:
            kept = "kept" if history.average_kept else "not kept"
            ax.axvspan(history.averaged_epochs[0] - 0.5, history.averaged_epochs[-1] + 0.5, color="0.85", label=f"weights averaged ({kept})")
        grid = [e for e, phase in zip(history.epoch, history.phase) if phase == "int8-grid"]
        if grid:
            start = f"epoch {history.pre_grid_epoch}" if history.pre_grid_epoch else "the average or initial weights"
            ax.axvspan(grid[0] - 0.5, grid[-1] + 0.5, color="#d8e8f8", label=f"int8-grid fine-tuning (from {start})")
            if ax is a and history.snapped_val_loss is not None:
                ax.hlines(
                    history.snapped_val_loss,
                    grid[0] - 0.5,
                    grid[-1] + 0.5,
                    colors="C1",
                    linestyles="--",
                    lw=1,
                    label="val loss, snapped, before fine-tuning",
                )
        if history.best_epoch > 0:
            ax.axvline(history.best_epoch, color="k", ls=":", lw=0.8, label="kept epoch")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    a.set_title("loss")
    b.set_title("validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
