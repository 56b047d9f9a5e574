"""The one TFLite runner: runtime selection, tensor binding, invoke, and the scores -> probabilities rule.

Used by the device's :class:`device.engine.Classifier` (one frame at a time) and by the workstation
(``model_build`` export parity, re-scoring, the leave-one-source-out study), so a bundle's probabilities
are computed by one piece of code wherever they are computed.

Runtime order: ``ai_edge_litert`` (LiteRT), ``tflite_runtime``, ``tensorflow.lite`` — whichever is
installed first; the one in use is reported as :attr:`ModelRunner.runtime`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import BundleError, RuntimeUnavailableError
from device.head import head_scores
from device.model.bundle import InputSpec, ModelBundle
from device.model.preprocess import to_input_tensor

RUNTIMES = (  # (name, module to import, attribute path of the Interpreter class)
    ("ai_edge_litert", "ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow", "tensorflow", "lite.Interpreter"),
)


def load_interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """The first available TFLite ``Interpreter`` class and the runtime's name."""
    candidates = [r for r in RUNTIMES if preferred in (None, r[0])]
    if not candidates:
        raise RuntimeUnavailableError(f"unknown TFLite runtime {preferred!r}; choose from {[r[0] for r in RUNTIMES]}")
    tried = []
    for name, module_name, attribute in candidates:
        try:
            found = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError) as exc:
            tried.append(f"{module_name} ({exc.__class__.__name__})")
            continue
        return found, name  # type: ignore[return-value]  # an Interpreter class found by name
    raise RuntimeUnavailableError("no TFLite runtime installed: tried " + ", ".join(tried) + " — install ai-edge-litert (pip install ai-edge-litert)")


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis (one image's scores, or a batch's rows), in float64."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    normalised: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return normalised


def probabilities(scores: np.ndarray, temperature: float, scores_kind: str = "logits") -> np.ndarray:
    """The bundle's one rule from its scores output to calibrated probabilities: the temperature applies
    to logits; a ``probabilities`` output is taken back to logits first, so the temperature applies too."""
    if scores_kind == "logits":
        return softmax(scores, temperature)
    return softmax(np.log(np.clip(scores, 1e-12, 1.0)), temperature)


def dequantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """A tensor's values as float32, with its own scale and zero point when it is quantized."""
    scale, zero_point = details["quantization"]
    if values.dtype in (np.int8, np.uint8, np.int16) and scale:
        real: np.ndarray = (values.astype(np.float32) - zero_point) * scale
        return real
    return values.astype(np.float32)


@dataclass(frozen=True)
class TensorNames:
    """The output tensors a runner reads, by name (TFLite does not keep output order)."""

    scores: str
    features: str | None = None  # the last feature map (class activation, a site head's input)


class ModelRunner:
    """One interpreter over one model, its tensors bound and checked. Not thread-safe: one thread per runner."""

    def __init__(
        self,
        model: Path | bytes,
        spec: InputSpec,
        names: TensorNames,
        n_classes: int,
        *,
        where: str,
        threads: int = 2,
        runtime: str | None = None,
        head: tuple[np.ndarray, np.ndarray] | None = None,
        model_name: str = "the model",
    ) -> None:
        """``model``: a ``.tflite`` path or its bytes. ``where`` names the model in every error.
        ``head``: a site bundle's refitted head (weights, bias), applied to the pooled feature map."""
        self.spec, self.names, self.where, self.head = spec, names, where, head
        interpreter_cls, self.runtime = load_interpreter_class(runtime)
        try:
            if isinstance(model, bytes):
                self.interpreter = interpreter_cls(model_content=model, num_threads=threads)
            else:
                self.interpreter = interpreter_cls(model_path=str(model), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{where}: {model_name} is not a valid TFLite model ({exc})") from exc
        self.input, self.scores, self.features = self._bind(n_classes)

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, threads: int = 2, runtime: str | None = None) -> ModelRunner:
        m = bundle.manifest
        return cls(
            bundle.model_path,
            m.input,
            TensorNames(m.outputs.scores, m.outputs.cam_features),
            len(m.labels),
            where=f"model bundle {bundle.path}",
            model_name=bundle.model_path.name,
            threads=threads,
            runtime=runtime,
            head=m.head.arrays() if m.head is not None else None,
        )

    def _bind(self, n_classes: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise BundleError(f"{self.where}: model has {len(inputs)} inputs, expected 1")
        expected = [1, self.spec.height, self.spec.width, self.spec.channels]
        if list(inputs[0]["shape"]) != expected:
            raise BundleError(f"{self.where}: model input shape {list(inputs[0]['shape'])} does not match manifest {expected}")
        if np.dtype(inputs[0]["dtype"]).name != self.spec.dtype:
            raise BundleError(f"{self.where}: model input dtype {np.dtype(inputs[0]['dtype']).name} does not match manifest {self.spec.dtype}")
        outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        scores = outputs.get(self.names.scores)
        if scores is None:
            raise BundleError(f"{self.where}: no output tensor named {self.names.scores!r} (have {sorted(outputs)})")
        if list(scores["shape"]) != [1, n_classes]:
            raise BundleError(f"{self.where}: scores output shape {list(scores['shape'])} does not match {n_classes} labels")
        features = None
        if self.names.features is not None:
            features = outputs.get(self.names.features)
            if features is None or len(features["shape"]) != 4:
                raise BundleError(f"{self.where}: class-activation output {self.names.features!r} missing or not 4-D")
        if self.head is not None and features is None:
            raise BundleError(f"{self.where}: a site head needs the feature-map output, the manifest names none")
        return inputs[0], scores, features

    @property
    def feature_channels(self) -> int | None:
        return int(self.features["shape"][3]) if self.features is not None else None

    def warm_up(self) -> None:
        self.interpreter.set_tensor(self.input["index"], np.zeros(self.input["shape"], dtype=self.input["dtype"]))
        self.interpreter.invoke()

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """Model pixels (``H x W x C``, or ``H x W`` grey as the workstation keeps them) -> the input tensor."""
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], self.spec.channels, axis=2)
        return to_input_tensor(pixels, self.spec, self.input["dtype"], self.input["quantization"])

    def invoke(self, tensor: np.ndarray, with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores (dequantized, before the temperature) and, if asked, the feature map ``[h, w, C]``.
        A site bundle's scores are its head's on the pooled feature map (device/head.py)."""
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        if self.head is not None:
            assert self.features is not None  # _bind refuses a head without a feature map
            features = dequantize(self.interpreter.get_tensor(self.features["index"]), self.features)[0]
            return head_scores(features, *self.head), (features if with_features else None)
        scores = dequantize(self.interpreter.get_tensor(self.scores["index"]), self.scores)[0]
        features = None
        if with_features and self.features is not None:  # an (S/32)x(S/32)xC copy: only when asked for
            features = dequantize(self.interpreter.get_tensor(self.features["index"]), self.features)[0]
        return scores, features

    def score_batch(self, pixels: np.ndarray, with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores ``[N, K]`` (and feature maps ``[N, h, w, C]`` if asked) for ``N`` images of model pixels."""
        scores, features = [], []
        for image in pixels:
            s, f = self.invoke(self.input_tensor(image), with_features)
            scores.append(s)
            if with_features and f is not None:
                features.append(f)
        stacked = np.stack(scores) if scores else np.zeros((0, int(self.scores["shape"][1])), np.float32)
        return stacked, (np.stack(features) if features else None)


def bundle_probabilities(bundle: ModelBundle, pixels: np.ndarray, threads: int = 2) -> np.ndarray:
    """Calibrated probabilities ``[N, K]`` of a bundle for ``N`` images of model pixels: the device's rule."""
    runner = ModelRunner.from_bundle(bundle, threads=threads)
    scores, _ = runner.score_batch(pixels)
    m = bundle.manifest
    return probabilities(scores, m.temperature, m.outputs.scores_kind)
