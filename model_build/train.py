"""Training: frozen-backbone warm-up, then full fine-tuning with early stopping on validation.

Imbalance: inverse-frequency class weights (as per-sample weights). Batches are augmented on the
fly (``augment.py``). Early stopping monitors validation cross-entropy (no smoothing) and keeps the
best weights; a wall-clock budget stops training cleanly so a build always finishes in time.

Weight averaging (``average_last``, as in stochastic weight averaging): the weights at the end of
the last N epochs of the fine-tuning schedule are averaged, and the average is kept only when its
validation loss beats the best single epoch (with BatchNorm frozen its statistics need no
recomputation). In the full builds measured so far it never did (docs/model.md).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from model_build.augment import AugmentConfig, augment
from model_build.classifier import Classifier, set_backbone_trainable
from model_build.weight_grid import GridKernels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs_frozen: int = 2
    epochs: int = 20
    batch_size: int = 32
    lr_head: float = 1e-3
    lr: float = 2e-4
    warmup_epochs: int = 1
    min_lr_fraction: float = 0.02
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    patience: int = 20  # >= epochs: the cosine schedule runs to its end
    average_last: int = 8  # average the weights of the last N fine-tuning epochs (0 = off)
    freeze_bn: bool = True  # keep BatchNorm in inference mode while fine-tuning
    grid_epochs: int = 2  # then fine-tune with conv kernels on the int8 grid (weight_grid.py; 0 = off)
    grid_lr: float = 2e-5
    aux_birads_weight: float = 0.0  # > 0: a training-only head also learns the BI-RADS category (images that carry one)
    time_budget_s: float = 32 * 60  # the CLI's --time-budget-min default
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    epoch: list[int] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # the optimised objective (with the BI-RADS head: both losses)
    train_classifier_loss: list[float] = field(default_factory=list)  # with the BI-RADS head: the classifier's part
    train_birads_loss: list[float] = field(default_factory=list)  # with the BI-RADS head: its (unweighted) loss
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_malignant_auc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_by: str = "epochs"
    averaged_epochs: list[int] = field(default_factory=list)
    averaged_val_loss: float | None = None
    kept: str = "best epoch"  # for people; code tests average_kept
    average_kept: bool = False  # the weight average beat the best single epoch and was loaded
    pre_grid_epoch: int | None = None  # the epoch the int8-grid phase started from (None: the average or initial weights)
    pre_grid_val_loss: float | None = None  # the kept weights before their kernels went on the int8 grid
    snapped_val_loss: float | None = None  # the same weights snapped, before int8-grid fine-tuning
    kept_val_loss: float | None = None  # of the weights train() returns


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def to_batch(grey: np.ndarray) -> np.ndarray:
    """``N x H x W`` uint8 grey -> ``N x H x W x 3`` float32 (0..255), the model's input."""
    return np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)


def _batches_class():
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        """Augmented batches of (pixels, label, weight); with ``aux`` (BI-RADS index per image, -1 = none) the
        targets are (label, BI-RADS index) and the weights (class weight, 1 if the image has a BI-RADS else 0)."""

        def __init__(self, pixels, y, weights, batch_size, seed, cfg, aux=None):
            super().__init__(workers=1, use_multiprocessing=False)
            self.pixels, self.y, self.w, self.aux = pixels, y, weights, aux
            self.batch_size, self.cfg = batch_size, cfg
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(y))

        def __len__(self) -> int:
            return math.ceil(len(self.y) / self.batch_size)

        def __getitem__(self, index):
            idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            imgs = to_batch(np.stack([augment(self.pixels[i], self.rng, self.cfg) for i in idx]))
            if self.aux is None:
                return imgs, self.y[idx], self.w[self.y[idx]]
            aux = self.aux[idx]
            return imgs, (self.y[idx], np.maximum(aux, 0)), (self.w[self.y[idx]], (aux >= 0).astype(np.float32))

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(self.y))

    return AugmentedBatches


BIRADS_CLASSES = (2, 3, 4, 5)  # the auxiliary head's categories (4a/4b/4c count as 4)


def birads_targets(values: list[float | None]) -> np.ndarray:
    """BI-RADS values (``reader.parse_birads``) -> index in :data:`BIRADS_CLASSES`, -1 when absent or not 2-5."""
    out = np.full(len(values), -1, dtype=np.int64)
    for i, v in enumerate(values):
        if v is not None and int(v) in BIRADS_CLASSES:
            out[i] = BIRADS_CLASSES.index(int(v))
    return out


def _sparse_loss(n_classes: int, label_smoothing: float):
    import keras

    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def sparse_loss(y_true, y_pred):
        return loss(keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), n_classes), y_pred)

    return sparse_loss


def _with_birads_head(clf: Classifier):
    """A training-only model sharing ``clf.model``'s layers, with a second linear head on the pooled features
    that predicts the BI-RADS category. ``clf.model`` (and so the exported model) never contains it."""
    import keras

    pooled = clf.model.get_layer("head_dropout").output
    birads_logits = keras.layers.Dense(len(BIRADS_CLASSES), name="birads_aux")(pooled)
    return keras.Model(clf.model.input, [clf.model.output, birads_logits], name="train_with_birads")


def predict_logits(model, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    out = [model.predict_on_batch(to_batch(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)]
    return np.concatenate(out, axis=0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _val_metrics(logits: np.ndarray, y: np.ndarray, malignant: int | None) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    p = _softmax(logits)
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    acc = float(np.mean(p.argmax(1) == y))
    auc = float("nan")
    if malignant is not None and 0 < np.sum(y == malignant) < len(y):
        auc = float(roc_auc_score(y == malignant, p[:, malignant]))
    return loss, acc, auc


def train(
    clf: Classifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    labels: tuple[str, ...],
    cfg: TrainConfig,
    birads_train: np.ndarray | None = None,
) -> History:
    """Train ``clf.model`` in place. ``birads_train``: per training image, the index of its BI-RADS category in
    :data:`BIRADS_CLASSES` or -1 — used only when ``cfg.aux_birads_weight > 0``."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    n_classes = len(labels)
    malignant = labels.index("malignant") if "malignant" in labels else None
    weights = class_weights(y_train, n_classes)
    log.info("class weights %s", dict(zip(labels, np.round(weights, 3).tolist())))
    aux = birads_train if cfg.aux_birads_weight > 0 else None
    if aux is not None and not (aux >= 0).any():
        raise ValueError("--aux-birads-weight needs training images with a BI-RADS category (a 'birads' CSV column)")
    batches = _batches_class()(x_train, y_train, weights, cfg.batch_size, cfg.seed, cfg.augment, aux)
    fit_model = clf.model if aux is None else _with_birads_head(clf)
    sparse_loss = _sparse_loss(n_classes, cfg.label_smoothing)
    losses = sparse_loss if aux is None else [sparse_loss, _sparse_loss(len(BIRADS_CLASSES), 0.0)]
    loss_weights = None if aux is None else [1.0, cfg.aux_birads_weight]
    if aux is not None:
        log.info(
            "auxiliary BI-RADS head: %d of %d training images carry a category, loss weight %.2f",
            int((aux >= 0).sum()),
            len(aux),
            cfg.aux_birads_weight,
        )

    def compile_for_training(optimizer) -> None:
        fit_model.compile(optimizer=optimizer, loss=losses, loss_weights=loss_weights)

    history = History()
    state: dict[str, Any] = {"best": math.inf, "weights": None, "wait": 0, "epoch": 0, "finetune_epoch": 0}
    average = WeightAverage()
    start = time.monotonic()
    verbose = 1 if _isatty() else 2

    class Monitor(keras.callbacks.Callback):
        def __init__(self, phase: str) -> None:
            super().__init__()
            self.phase = phase

        def on_epoch_end(self, epoch, logs=None):
            state["epoch"] += 1
            if self.phase == "finetune":
                state["finetune_epoch"] += 1
                if cfg.average_last and state["finetune_epoch"] > cfg.epochs - cfg.average_last:
                    average.add(clf.model.get_weights(), state["epoch"])
            v_loss, v_acc, v_auc = _val_metrics(predict_logits(clf.model, x_val), y_val, malignant)
            elapsed = time.monotonic() - start
            history.epoch.append(state["epoch"])
            history.phase.append(self.phase)
            history.train_loss.append(float((logs or {}).get("loss", float("nan"))))
            if aux is not None:
                history.train_classifier_loss.append(float((logs or {}).get("classifier_loss", float("nan"))))
                history.train_birads_loss.append(float((logs or {}).get("birads_aux_loss", float("nan"))))
            history.val_loss.append(v_loss)
            history.val_accuracy.append(v_acc)
            history.val_malignant_auc.append(v_auc)
            history.seconds.append(elapsed)
            improved = v_loss < state["best"] - 1e-4
            if improved:
                state.update(best=v_loss, weights=clf.model.get_weights(), wait=0)
                history.best_epoch = state["epoch"]
            elif self.phase == "finetune":
                state["wait"] += 1
            log.info(
                "epoch %d [%s] train_loss %.4f val_loss %.4f val_acc %.3f val_malignant_auc %.3f %s(%.0f s)",
                state["epoch"],
                self.phase,
                history.train_loss[-1],
                v_loss,
                v_acc,
                v_auc,
                "* " if improved else "",
                elapsed,
            )
            if self.phase == "finetune" and state["wait"] >= cfg.patience:
                history.stopped_by = f"early stopping (no val_loss improvement in {cfg.patience} epochs)"
                self.model.stop_training = True
            if elapsed > cfg.time_budget_s:
                history.stopped_by = f"time budget ({cfg.time_budget_s:.0f} s)"
                self.model.stop_training = True

    if cfg.epochs_frozen > 0:
        set_backbone_trainable(clf, False)
        compile_for_training(keras.optimizers.AdamW(cfg.lr_head, weight_decay=cfg.weight_decay))
        log.info("phase 1: head only, backbone frozen, %d epoch(s)", cfg.epochs_frozen)
        fit_model.fit(batches, epochs=cfg.epochs_frozen, callbacks=[Monitor("frozen")], verbose=verbose)
    if cfg.epochs > 0 and time.monotonic() - start < cfg.time_budget_s:
        set_backbone_trainable(clf, True, freeze_bn=cfg.freeze_bn)
        warmup = min(cfg.warmup_epochs, max(cfg.epochs - 1, 0)) * len(batches)
        steps = max(cfg.epochs * len(batches) - warmup, 1)
        schedule = keras.optimizers.schedules.CosineDecay(
            cfg.lr * 0.1 if warmup else cfg.lr,
            steps,
            alpha=cfg.min_lr_fraction,
            warmup_target=cfg.lr if warmup else None,
            warmup_steps=warmup,
        )
        compile_for_training(keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay))
        log.info("phase 2: fine-tuning the backbone (BatchNorm %s), up to %d epoch(s)", "frozen" if cfg.freeze_bn else "trainable", cfg.epochs)
        fit_model.fit(batches, epochs=cfg.epochs, callbacks=[Monitor("finetune")], verbose=verbose)
    kept_average = average.count >= 2 and _keep_average(clf, average, state["best"], x_val, y_val, malignant, history)
    if not kept_average and state["weights"] is not None:
        clf.model.set_weights(state["weights"])
        log.info("restored best weights from epoch %d (val_loss %.4f)", history.best_epoch, state["best"])
    # the loaded weights' validation loss is already known, unless no epoch ran (e.g. --init-weights, --epochs 0)
    kept_loss: float = state["best"]
    if kept_average:
        assert history.averaged_val_loss is not None  # _keep_average measured it before keeping the average
        kept_loss = history.averaged_val_loss
    if not math.isfinite(kept_loss):
        kept_loss = _val_metrics(predict_logits(clf.model, x_val), y_val, malignant)[0]
    if cfg.grid_epochs > 0:
        history.pre_grid_val_loss = kept_loss
        _grid_phase(clf, fit_model, batches, compile_for_training, Monitor, state, x_val, y_val, malignant, history, cfg, verbose)
        kept_loss = state["best"]
    history.kept_val_loss = kept_loss
    return history


def _grid_phase(
    clf, fit_model, batches, compile_for_training, monitor, state, x_val, y_val, malignant, history: History, cfg: TrainConfig, verbose
) -> None:
    """Snap the conv kernels to the int8 grid, then fine-tune them there; keep the best snapped weights
    (``state`` ends holding them and their validation loss)."""
    import keras

    history.pre_grid_epoch = history.best_epoch if history.best_epoch > 0 and not history.average_kept else None
    set_backbone_trainable(clf, True, freeze_bn=True)  # the grid is defined through frozen BatchNorm factors
    grid = GridKernels(clf.model)
    v_loss, v_acc, v_auc = _val_metrics(predict_logits(clf.model, x_val), y_val, malignant)
    history.snapped_val_loss = v_loss
    log.info(
        "phase 3: %d conv kernels snapped to the int8 grid: val_loss %.4f -> %.4f (val_acc %.3f, val_malignant_auc %.3f); "
        "fine-tuning on the grid for %d epoch(s)",
        len(grid.pairs),
        history.pre_grid_val_loss,
        v_loss,
        v_acc,
        v_auc,
        cfg.grid_epochs,
    )
    state.update(best=v_loss, weights=clf.model.get_weights())
    compile_for_training(keras.optimizers.AdamW(cfg.grid_lr, weight_decay=cfg.weight_decay))
    fit_model.fit(batches, epochs=cfg.grid_epochs, callbacks=[grid.callback(), monitor("int8-grid")], verbose=verbose)
    clf.model.set_weights(state["weights"])  # the best snapped weights: before fine-tuning, or an int8-grid epoch


class WeightAverage:
    """Running mean of a model's weight arrays (integer arrays, e.g. counters, keep their last value)."""

    def __init__(self) -> None:
        self.mean: list[np.ndarray] | None = None
        self.epochs: list[int] = []

    @property
    def count(self) -> int:
        return len(self.epochs)

    def add(self, weights: list[np.ndarray], epoch: int) -> None:
        self.epochs.append(epoch)
        if self.mean is None:
            self.mean = [np.array(w, copy=True) for w in weights]
            return
        n = len(self.epochs)
        for i, w in enumerate(weights):
            if np.issubdtype(w.dtype, np.floating):
                self.mean[i] += (w - self.mean[i]) / n
            else:
                self.mean[i] = np.array(w, copy=True)


def _keep_average(clf: Classifier, average: WeightAverage, best_loss: float, x_val, y_val, malignant, history: History) -> bool:
    """Load the averaged weights; keep them if they beat the best single epoch on validation."""
    clf.model.set_weights(average.mean)
    v_loss, v_acc, v_auc = _val_metrics(predict_logits(clf.model, x_val), y_val, malignant)
    history.averaged_epochs = list(average.epochs)
    history.averaged_val_loss = v_loss
    log.info(
        "average of epochs %d-%d: val_loss %.4f val_acc %.3f val_malignant_auc %.3f (best single epoch %d: %.4f)",
        average.epochs[0],
        average.epochs[-1],
        v_loss,
        v_acc,
        v_auc,
        history.best_epoch,
        best_loss,
    )
    if v_loss <= best_loss:
        history.kept = f"average of {average.count} epochs"
        history.average_kept = True
        return True
    return False


def _isatty() -> bool:
    import sys

    return sys.stdout.isatty()
