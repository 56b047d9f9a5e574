"""EfficientNet-Lite (no squeeze-excite, ReLU6, fixed stem/head) in Keras, plus the classifier head.

Layer names follow the PyTorch reference (``efficientnet-lite-pytorch``) block by block so the
ImageNet weights can be ported tensor by tensor (see :func:`load_torch_weights`).
Convolutions use TF "SAME" padding, which is what the reference's ``Conv2dStaticSamePadding`` does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

# (repeats, kernel, stride, expand, in, out) — efficientnet_lite_builder.py
_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": LiteVariant("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": LiteVariant("lite2", 1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if not width:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def block_specs(variant: LiteVariant) -> list[BlockSpec]:
    """The expanded list of MBConv blocks, exactly as the reference builds them."""
    specs: list[BlockSpec] = []
    last = len(_BLOCKS) - 1
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_BLOCKS):
        f_in, f_out = round_filters(f_in, variant.width), round_filters(f_out, variant.width)
        if i in (0, last):
            n = repeats  # fixed head/stem: first and last stage not scaled
            if i == 0:
                f_in = 32
        else:
            n = int(math.ceil(variant.depth * repeats))
        specs.append(BlockSpec(kernel, stride, expand, f_in, f_out))
        specs.extend(BlockSpec(kernel, 1, expand, f_out, f_out) for _ in range(n - 1))
    return specs


def _bn(name: str):
    import keras

    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def build_backbone(variant: LiteVariant, input_size: int | None = None, drop_connect: float = 0.2):
    """Float backbone: input ``[B, S, S, 3]`` already normalised ((x-127)/128) -> last feature map ``[B, h, w, 1280]``."""
    import keras
    from keras import layers

    size = input_size or variant.resolution
    inputs = keras.Input((size, size, 3), name="normalised")

    def relu6(name: str) -> layers.ReLU:
        return layers.ReLU(6.0, name=name)

    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = relu6("stem_relu")(x)
    specs = block_specs(variant)
    for idx, spec in enumerate(specs):
        p = f"block{idx}_"
        shortcut = x
        if spec.expand != 1:
            x = layers.Conv2D(spec.filters_in * spec.expand, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
            x = _bn(p + "expand_bn")(x)
            x = relu6(p + "expand_relu")(x)
        x = layers.DepthwiseConv2D(spec.kernel, strides=spec.stride, padding="same", use_bias=False, name=p + "dwconv")(x)
        x = _bn(p + "dw_bn")(x)
        x = relu6(p + "dw_relu")(x)
        x = layers.Conv2D(spec.filters_out, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
        x = _bn(p + "project_bn")(x)
        if spec.stride == 1 and spec.filters_in == spec.filters_out:
            rate = drop_connect * idx / len(specs)
            if rate > 0:
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=p + "drop")(x)
            x = layers.Add(name=p + "add")([x, shortcut])
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = relu6("head_relu")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant.name}")


def load_torch_weights(backbone, state: dict[str, np.ndarray]) -> int:
    """Copy a reference state dict into :func:`build_backbone`'s layers. Returns the number of tensors set."""
    count = 0

    def conv(layer_name: str, key: str, depthwise: bool = False) -> None:
        nonlocal count
        w = state[key]  # torch: [out, in/groups, kh, kw]
        if depthwise:
            kernel = np.transpose(w, (2, 3, 0, 1))  # [kh, kw, C, 1]
        else:
            kernel = np.transpose(w, (2, 3, 1, 0))  # [kh, kw, in, out]
        backbone.get_layer(layer_name).set_weights([kernel])
        count += 1

    def bn(layer_name: str, key: str) -> None:
        nonlocal count
        values = [state[f"{key}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        backbone.get_layer(layer_name).set_weights(values)
        count += 4

    conv("stem_conv", "_conv_stem.weight")
    bn("stem_bn", "_bn0")
    idx = 0
    while f"_blocks.{idx}._depthwise_conv.weight" in state:
        p, t = f"block{idx}_", f"_blocks.{idx}."
        if f"{t}_expand_conv.weight" in state:
            conv(p + "expand_conv", t + "_expand_conv.weight")
            bn(p + "expand_bn", t + "_bn0")
        conv(p + "dwconv", t + "_depthwise_conv.weight", depthwise=True)
        bn(p + "dw_bn", t + "_bn1")
        conv(p + "project_conv", t + "_project_conv.weight")
        bn(p + "project_bn", t + "_bn2")
        idx += 1
    conv("head_conv", "_conv_head.weight")
    bn("head_bn", "_bn1")
    return count


def imagenet_classifier(backbone, state: dict[str, np.ndarray]):
    """Backbone + the ImageNet 1000-way head from the state dict (for checking the port)."""
    import keras
    from keras import layers

    x = layers.GlobalAveragePooling2D(name="gap")(backbone.output)
    dense = layers.Dense(state["_fc.weight"].shape[0], name="imagenet_fc")
    out = dense(x)
    dense.set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    return keras.Model(backbone.input, out)
