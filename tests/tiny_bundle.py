"""A tiny, hand-weighted model bundle with a predictable rule, built through the real export path
(Keras -> full-integer int8 TFLite -> ``device.model.bundle.write_bundle``).

Rule (on the mean brightness ``m`` of the model input, 0..1, letterbox padding included):
``normal`` when m < 1/3, ``benign`` in between, ``malignant`` when m > 2/3 — so tests know the
right label for a frame. It also has a class-activation output, like the real bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.model.bundle import CamSpec, InputSpec, Manifest, ModelBundle, OutputSpec, QualitySpec, write_bundle

LABELS = ("normal", "benign", "malignant")
SIZE = 32
# logits_k = a_k * m + b_k, written as weights on the features [m, 1 - m]
_DENSE = np.array([[-20.0, 0.0, 10.0], [10.0, 0.0, -20.0]], dtype=np.float32)  # rows: m, 1-m
_BIAS = np.array([0.0, 0.0, 0.0], dtype=np.float32)


def expected_label(mean_brightness: float) -> str:
    logits = _DENSE[0] * mean_brightness + _DENSE[1] * (1 - mean_brightness) + _BIAS
    return LABELS[int(np.argmax(logits))]


def build_tiny_bundle(out: Path, name: str = "tiny-test-model", version: str = "0.0.1") -> ModelBundle:
    import keras

    inp = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(keras.ops.cast(inp, "float32"))
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="features")
    features = conv(x)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    dense = keras.layers.Dense(3, name="logits")
    logits = dense(pooled)
    model = keras.Model(inp, [logits, features])
    # features: channel 0 = mean of RGB (brightness), channel 1 = 1 - brightness
    conv.set_weights([np.array([[[[1 / 3, -1 / 3]] * 3]], dtype=np.float32).reshape(1, 1, 3, 2), np.array([0.0, 1.0], np.float32)])
    dense.set_weights([_DENSE, _BIAS])

    def representative():
        rng = np.random.default_rng(0)
        for level in np.linspace(0, 255, 24):
            noise = rng.integers(-20, 20, (1, SIZE, SIZE, 3))
            yield [np.clip(level + noise, 0, 255).astype(np.uint8)]

    model_bytes = int8_tflite(model, representative)
    scores_name, features_name = output_names_by_rank(model_bytes)
    manifest = Manifest(
        name=name,
        version=version,
        created="2026-01-01T00:00:00Z",
        labels=LABELS,
        input=InputSpec(height=SIZE, width=SIZE, dtype="uint8", color="grey3", resize="stretch"),
        outputs=OutputSpec(scores=scores_name, scores_kind="logits", cam_features=features_name),
        model_sha256="0" * 64,
        temperature=1.0,
        thresholds={"malignant": 0.4},
        quality=QualitySpec(min_confidence=0.4),
        cam=CamSpec(weights=tuple(tuple(float(v) for v in row) for row in _DENSE), bias=tuple(float(v) for v in _BIAS)),
        training_data={"note": "hand-weighted test model, not trained"},
        metrics={},
        intended_use="Tests only.",
    )
    return write_bundle(out, model_bytes, manifest)


def int8_tflite(model, representative) -> bytes:
    """A Keras model as full-integer int8 TFLite, uint8 input and float outputs, as model_build exports (the tiny test
    models of tests/tiny_bundle.py and tests/device/tiny_segmentation.py)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    return converter.convert()


def output_names_by_rank(model_bytes: bytes) -> tuple[str, str]:
    """The names of a model's rank-2 and rank-4 outputs (scores and feature map, or lesion logit and mask)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    by_rank = {len(d["shape"]): d["name"] for d in interpreter.get_output_details()}
    return by_rank[2], by_rank[4]
