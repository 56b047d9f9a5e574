"""Convolution kernels on the int8 grid the TFLite converter will use, and fine-tuning them there.

The converter folds an inference-mode BatchNormalization into the convolution before it
(``w_f = w * gamma / sqrt(var + eps)``, per output channel) and quantizes ``w_f`` per channel,
symmetric, to int8 with scale ``max|w_f| / 127``. Rounding those kernels is a measured, large part of the
int8 model's error (docs/model.md: about half of the logit error, most of it in block 0's depthwise
kernel). Snapping the float kernels to that same grid (and back through the BatchNorm factor), then
fine-tuning with them kept there (``GridKernels``, the weight half of quantization-aware training),
gives a float model whose kernels the converter reproduces exactly: the int8 model differs from it only
by activation rounding, and calibration is fitted on a float model that has the device's kernels.

The largest value of each channel keeps its magnitude, so the scale the converter picks is unchanged.
BatchNorm must stay frozen (inference mode) while and after kernels are on the grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INT8_MAX = 127


def conv_bn_pairs(model: Any) -> list[tuple[Any, Any]]:
    """(convolution, BatchNormalization) pairs where the BatchNorm reads the convolution's output directly."""
    from keras import layers

    pairs = []
    for layer in _all_layers(model):
        if not isinstance(layer, layers.BatchNormalization):
            continue
        producer = layer.input._keras_history[0]  # the layer that made this tensor (Keras 3 keeps no public accessor)
        if isinstance(producer, (layers.Conv2D, layers.DepthwiseConv2D)) and not producer.use_bias:
            pairs.append((producer, layer))
    return pairs


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def batchnorm_factor(bn: Any) -> np.ndarray:
    gamma, _beta, _mean, var = (np.asarray(w, dtype=np.float64) for w in bn.get_weights())
    return gamma / np.sqrt(var + bn.epsilon)


def snap_kernel(kernel: np.ndarray, factor: np.ndarray, depthwise: bool) -> np.ndarray:
    """``kernel`` such that ``kernel * factor`` (per output channel) lies on its per-channel int8 grid."""
    k = np.asarray(kernel, dtype=np.float64)
    # Conv2D kernels are [kh, kw, in, out]; DepthwiseConv2D [kh, kw, in, multiplier] with out = in * multiplier.
    shape = k.shape
    flat = k.reshape(shape[0], shape[1], -1) if depthwise else k.reshape(-1, shape[-1])
    folded = flat * factor  # output channels on the last axis
    scale = np.abs(folded).reshape(-1, folded.shape[-1]).max(axis=0) / INT8_MAX
    safe = np.where(scale > 0, scale, 1.0)
    snapped = np.round(folded / safe) * safe
    safe_factor = np.where(factor != 0, factor, 1.0)
    unfolded = np.where(factor != 0, snapped / safe_factor, flat)
    return unfolded.reshape(shape).astype(np.float32)


class GridKernels:
    """The conv+BatchNorm kernels of a model, trained on the int8 grid with a straight-through estimator.

    The model always holds snapped kernels at batch boundaries, so forward passes, gradients and
    validation all see the int8-grid values; the optimiser's step is added to a float "shadow" copy,
    which is snapped again before the next batch (the weight half of quantization-aware training).
    """

    def __init__(self, model: Any) -> None:
        from keras import layers

        self.pairs = conv_bn_pairs(model)
        self.depthwise = [isinstance(conv, layers.DepthwiseConv2D) for conv, _ in self.pairs]
        self.factors = [batchnorm_factor(bn) for _, bn in self.pairs]  # constant: BatchNorm stays frozen
        self.shadow = [conv.get_weights()[0].astype(np.float64) for conv, _ in self.pairs]
        self.snapped = [np.zeros(0)] * len(self.pairs)
        self.assign_snapped()

    def assign_snapped(self) -> None:
        for i, (conv, _) in enumerate(self.pairs):
            self.snapped[i] = snap_kernel(self.shadow[i], self.factors[i], self.depthwise[i])
            conv.set_weights([self.snapped[i]])

    def absorb_step(self) -> None:
        """Move the optimiser's update of the snapped kernels onto the shadow copies, then snap again."""
        for i, (conv, _) in enumerate(self.pairs):
            self.shadow[i] += conv.get_weights()[0] - self.snapped[i]
        self.assign_snapped()

    def callback(self):
        import keras

        grid = self

        class SnapAfterEachStep(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                grid.absorb_step()

        return SnapAfterEachStep()
