"""Conv kernels on the int8 grid (model_build/weight_grid.py): the arithmetic, that the TFLite converter
reproduces snapped kernels exactly (and does not reproduce unsnapped ones), and the straight-through
training step."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from model_build.weight_grid import GridKernels, batchnorm_factor, conv_bn_pairs, snap_kernel


def _grid_steps(folded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = folded.reshape(-1, folded.shape[-1])
    scale = np.abs(flat).max(axis=0) / 127
    return flat / scale, scale


def test_snapped_conv_kernel_folds_onto_the_per_channel_grid() -> None:
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, (3, 3, 4, 8)).astype(np.float32)
    factor = rng.uniform(0.2, 3.0, 8) * rng.choice([-1, 1], 8)  # gamma can be negative
    snapped = snap_kernel(kernel, factor, depthwise=False)
    steps, scale = _grid_steps(snapped.astype(np.float64) * factor)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(np.round(steps)).max() == 127
    before, _ = _grid_steps(kernel.astype(np.float64) * factor)
    assert np.abs(before - np.round(before)).max() > 0.1  # the random kernel was not on the grid
    assert np.abs(steps - before).max() <= 0.5 + 1e-4  # each value moves to its nearest grid point
    np.testing.assert_allclose(scale, np.abs((kernel * factor).reshape(-1, 8)).max(axis=0) / 127, rtol=1e-6)


def test_depthwise_kernel_channels_are_input_times_multiplier() -> None:
    rng = np.random.default_rng(1)
    kernel = rng.normal(0, 0.1, (3, 3, 4, 2)).astype(np.float32)
    factor = np.array([1, 1, 1, 1, 1, 1, 1, 1000.0])  # channel 7 = input 3, multiplier 1
    snapped = snap_kernel(kernel, factor, depthwise=True)
    steps, _ = _grid_steps((snapped.astype(np.float64).reshape(3, 3, 8)) * factor)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(snapped[:, :, 3, 1]).max() == pytest.approx(np.abs(kernel[:, :, 3, 1]).max(), rel=1e-6)


def test_a_zero_batchnorm_factor_leaves_the_channel_alone() -> None:
    kernel = np.full((1, 1, 2, 2), 0.3, np.float32)
    snapped = snap_kernel(kernel, np.array([0.0, 1.0]), depthwise=False)
    assert snapped[0, 0, 0, 0] == pytest.approx(0.3)


def _tiny_model(seed: int):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 128, offset=-127 / 128)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(name="conv_bn")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(6, 1, use_bias=False, name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    logits = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, logits)
    rng = np.random.default_rng(seed)
    for _, bn in conv_bn_pairs(model):
        n = bn.get_weights()[0].shape[0]
        bn.set_weights([rng.uniform(0.3, 3.0, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.05, 2.0, n)])
    return model


def _tflite_kernels(model_bytes: bytes) -> dict[tuple[int, ...], np.ndarray]:
    """Dequantized int8 weight tensors of the converted model, keyed by shape."""
    from model_build.export import interpreter

    interp = interpreter(model_bytes, threads=1)
    out = {}
    for d in interp.get_tensor_details():
        shape = tuple(int(v) for v in d["shape"])
        q = d["quantization_parameters"]
        if d["dtype"] != np.int8 or len(shape) != 4 or len(q["scales"]) != shape[-1 if shape[0] == 1 else 0]:
            continue
        values = interp.get_tensor(d["index"]).astype(np.float64)
        axis = q["quantized_dimension"]
        scales = np.asarray(q["scales"]).reshape([-1 if i == axis else 1 for i in range(4)])
        out[shape] = values * scales
    return out


def _folded(model) -> dict[str, np.ndarray]:
    """Each conv's BatchNorm-folded kernel in TFLite layout: Conv2D [out, kh, kw, in], depthwise [1, kh, kw, ch]."""
    from keras import layers

    out = {}
    for conv, bn in conv_bn_pairs(model):
        k = conv.get_weights()[0].astype(np.float64)
        if isinstance(conv, layers.DepthwiseConv2D):
            out[conv.name] = (k.reshape(k.shape[0], k.shape[1], -1) * batchnorm_factor(bn))[None]
        else:
            out[conv.name] = np.transpose(k * batchnorm_factor(bn), (3, 0, 1, 2))
    return out


@pytest.mark.parametrize("snap", [False, True])
def test_the_converter_reproduces_snapped_kernels_exactly(snap: bool) -> None:
    from model_build.export import convert_int8

    model = _tiny_model(seed=3)
    if snap:
        GridKernels(model)
    rep = np.random.default_rng(0).integers(0, 256, (16, 32, 32), dtype=np.uint8)
    tflite = _tflite_kernels(convert_int8(model, rep, 16))
    folded = _folded(model)
    assert sorted(tflite) == sorted(v.shape for v in folded.values())  # BatchNorm was folded into each conv
    for name, want in folded.items():
        error = np.abs(tflite[want.shape] - want).max() / np.abs(want).max()
        if snap:
            assert error < 1e-5, (name, error)
        else:
            assert error > 1e-3, (name, error)  # plain rounding: up to half a step (1/254 of the max)


def test_optimiser_steps_accumulate_on_the_shadow_kernels() -> None:
    """Steps smaller than half a grid step must add up (a plain projection would undo each of them)."""
    model = _tiny_model(seed=4)
    grid = GridKernels(model)
    conv = model.get_layer("project")
    start, shadow_start = conv.get_weights()[0].copy(), grid.shadow[-1].copy()
    step = np.abs(shadow_start).max() * 1e-3  # well below half a grid step (max / 254) in the widest channels
    for _ in range(200):
        conv.set_weights([conv.get_weights()[0] + step])  # what an optimiser update does to the variable
        grid.absorb_step()
    moved = conv.get_weights()[0] - start
    assert np.abs(moved).max() > 0  # the snapped kernel moved by whole grid steps
    np.testing.assert_allclose(grid.shadow[-1] - shadow_start, 200 * step, rtol=1e-3, atol=1e-6)
    factor = batchnorm_factor(model.get_layer("project_bn"))
    np.testing.assert_allclose(snap_kernel(conv.get_weights()[0], factor, False), conv.get_weights()[0], rtol=1e-5, atol=1e-7)
