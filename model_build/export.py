"""Full-integer int8 TFLite export (uint8 input, normalisation inside), output lookup by name, parity."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.model.bundle import InputSpec
from device.model.runtime import ModelRunner, TensorNames, load_interpreter_class
from model_build.calibrate import softmax

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.98


class ExportError(RuntimeError):
    """Conversion failed, the outputs cannot be identified, or int8 parity is too poor."""


@dataclass(frozen=True)
class TfliteOutputs:
    scores: str
    cam_features: str
    input_scale: float
    input_zero_point: int


@dataclass(frozen=True)
class Parity:
    n: int
    top1_agreement: float
    max_prob_diff: float
    mean_prob_diff: float


def convert_int8(export_model: Any, representative: np.ndarray, steps: int = 400) -> bytes:
    """Convert the two-output Keras model to full-integer int8 with a uint8 input and float outputs."""
    import tensorflow as tf

    rep = representative[:steps]

    def dataset() -> Iterator[list[np.ndarray]]:
        for grey in rep:
            yield [np.repeat(grey[None, :, :, None], 3, axis=-1).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(export_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    import contextlib
    import io

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):  # keras' export prints every captured variable
            return converter.convert()
    except Exception as exc:  # the converter raises many unrelated types
        raise ExportError(f"TFLite conversion failed: {exc}") from exc
    finally:
        log.debug("converter output: %s", chatter.getvalue()[-2000:])


def interpreter(model_bytes: bytes, threads: int = 2) -> Any:
    """A bare interpreter over converted model bytes (the device's runtime order), tensors allocated."""
    interpreter_cls, _ = load_interpreter_class()
    interp = interpreter_cls(model_content=model_bytes, num_threads=threads)
    interp.allocate_tensors()
    return interp


def identify_outputs(model_bytes: bytes, n_classes: int) -> TfliteOutputs:
    """Find the scores and feature-map output tensors by shape (output order is not guaranteed)."""
    interp = interpreter(model_bytes)
    inp = interp.get_input_details()[0]
    if inp["dtype"] != np.uint8:
        raise ExportError(f"input tensor is {inp['dtype']}, expected uint8")
    scale, zero = inp["quantization"]
    if abs(scale - 1.0) > 1e-6 or zero != 0:
        log.warning("uint8 input quantization is (%s, %s), expected (1.0, 0): raw pixels are rescaled", scale, zero)
    scores = [d for d in interp.get_output_details() if list(d["shape"]) == [1, n_classes]]
    feats = [d for d in interp.get_output_details() if len(d["shape"]) == 4]
    if len(scores) != 1 or len(feats) != 1:
        shapes = [(d["name"], list(d["shape"])) for d in interp.get_output_details()]
        raise ExportError(f"cannot identify outputs by shape: {shapes}")
    return TfliteOutputs(scores[0]["name"], feats[0]["name"], float(scale), int(zero))


def int8_runner(model_bytes: bytes, spec: InputSpec, names: TfliteOutputs, n_classes: int, threads: int = 2) -> ModelRunner:
    """The device's runner (``device.model.runtime``) over the converted model: the build scores its int8
    model exactly as the device will."""
    return ModelRunner(model_bytes, spec, TensorNames(names.scores, names.cam_features), n_classes, where="the converted int8 model", threads=threads)


def parity(float_logits: np.ndarray, int8_logits: np.ndarray, temperature: float) -> Parity:
    pf, pq = softmax(float_logits, temperature), softmax(int8_logits, temperature)
    diff = np.abs(pf - pq)
    return Parity(
        n=int(len(pf)),
        top1_agreement=float(np.mean(pf.argmax(1) == pq.argmax(1))),
        max_prob_diff=float(diff.max()),
        mean_prob_diff=float(diff.mean()),
    )


def check_parity(p: Parity, minimum: float = MIN_AGREEMENT) -> None:
    if p.top1_agreement < minimum:
        raise ExportError(
            f"int8 model refused: top-1 agreement with the float model is {p.top1_agreement:.3f} on {p.n} images, below the required {minimum:.2f}"
        )
