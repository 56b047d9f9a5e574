"""On-device inference: runtime selection, the classifier, heatmaps and the worker thread.

Runtime order: ``ai_edge_litert`` (LiteRT), ``tflite_runtime``, ``tensorflow.lite`` — whichever is
installed first; the one in use is logged and reported (``Classifier.runtime``).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.bundle import ModelBundle
from device.crop import Box
from device.decision import MALIGNANT, Category, Decision, Mode, applied_threshold, decide
from device.errors import BundleError, RuntimeUnavailableError
from device.head import head_scores
from device.preprocess import Placement, prepare, to_input_tensor
from device.quality import QualityLimits, confidence_problems, image_problems

log = logging.getLogger(__name__)

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
    raise RuntimeUnavailableError(
        "no TFLite runtime installed: tried " + ", ".join(tried) + " — install ai-edge-litert (pip install ai-edge-litert)"
    )


@dataclass(frozen=True)
class Classification:
    probabilities: dict[str, float]  # calibrated (after temperature)
    label: str | None  # None when inconclusive
    decision: str  # the label by the decision rule, even when inconclusive (reported beside the flag)
    inconclusive: bool
    reasons: tuple[str, ...]
    thresholds: dict[str, float]
    crop: Box
    roi: Box | None
    latency_ms: float  # crop + preprocess + invoke + postprocess
    # uint8 [crop h, crop w] on the fixed scale 0..255 = p(malignant) 0..1 (see HEATMAP_SCALE); suspicious only
    heatmap: np.ndarray | None = None
    assessment: Decision | None = None  # the category rule's output (device.decision); None only in old tests

    @property
    def top_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def category(self) -> Category | None:
        return self.assessment.category if self.assessment else None

    @property
    def p_malignant(self) -> float | None:
        return self.assessment.p_malignant if self.assessment else self.probabilities.get(MALIGNANT)

    @property
    def mode(self) -> Mode | None:
        return self.assessment.mode if self.assessment else None


HEATMAP_FLOOR = 0.01  # the fixed heat-map scale: log10 from p = 1 % (0) to 100 % (255)
HEATMAP_SCALE = (
    "fixed, logarithmic: colour = p(malignant) x the location's malignant class activation relative to its peak, "
    "0 at <= 1 %, 128 at 10 %, 255 at 100 %"
)


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = scores.astype(np.float64) / temperature
    z -= z.max()
    e = np.exp(z)
    return e / e.sum()


def decide_label(probabilities: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float]) -> str:
    """A label whose probability reaches its operating threshold wins (the one furthest above its
    threshold, relatively); otherwise the most probable label."""
    reached = [(probabilities[labels.index(name)] / t, name) for name, t in thresholds.items() if probabilities[labels.index(name)] >= t]
    if reached:
        return max(reached)[1]
    return labels[int(np.argmax(probabilities))]


class Classifier:
    """One model, one interpreter. Not thread-safe: use from one thread (see :class:`InferenceWorker`)."""

    def __init__(
        self,
        bundle: ModelBundle,
        threads: int = 2,
        limits: QualityLimits | None = None,
        runtime: str | None = None,
        thresholds: dict[str, float] | None = None,
        mode: Mode | str | None = None,
    ) -> None:
        """``mode``: the operating mode (default: the bundle's default mode). ``thresholds``: a site's
        ``{"malignant": t}``, which may only lower the mode's threshold (ConfigError otherwise)."""
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.decision_spec = self.manifest.decision_spec()
        self.mode = Mode(mode if mode is not None else self.decision_spec.default_mode)
        model = f"model {self.manifest.name} {self.manifest.version}"
        self.decision_spec.mode(self.mode, model)  # BundleError when the bundle lacks the mode
        site = (thresholds or {}).get(MALIGNANT)
        self._site_threshold = site
        self.malignant_threshold = applied_threshold(self.decision_spec, self.mode, site, model)
        self.thresholds = {MALIGNANT: self.malignant_threshold}  # the one applied, recorded with every result
        self.limits = limits or QualityLimits(
            min_confidence=self.manifest.quality.min_confidence, max_entropy=self.manifest.quality.max_entropy
        )
        interpreter_cls, self.runtime = load_interpreter_class(runtime)
        try:
            self.interpreter = interpreter_cls(model_path=str(bundle.model_path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"model bundle {bundle.path}: {bundle.model_path.name} is not a valid TFLite model ({exc})") from exc
        self._input, self._scores, self._features = self._bind_tensors()
        self._cam_weights = None
        if self.manifest.cam is not None:
            self._cam_weights = np.asarray(self.manifest.cam.weights, dtype=np.float32)
        self._head = self.manifest.head.arrays() if self.manifest.head is not None else None  # a site bundle's
        if self._head is not None:  # its scores and heat maps come from the refitted head
            self._cam_weights = self._head[0].astype(np.float32)
        log.info(
            "model %s %s loaded with %s (%d threads)", self.manifest.name, self.manifest.version, self.runtime, threads
        )
        self.warm_up()

    # --- set-up ------------------------------------------------------------------------------------

    def _bind_tensors(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        inputs = self.interpreter.get_input_details()
        spec = self.manifest.input
        where = f"model bundle {self.bundle.path}"
        if len(inputs) != 1:
            raise BundleError(f"{where}: model has {len(inputs)} inputs, expected 1")
        expected = [1, spec.height, spec.width, spec.channels]
        if list(inputs[0]["shape"]) != expected:
            raise BundleError(f"{where}: model input shape {list(inputs[0]['shape'])} does not match manifest {expected}")
        if np.dtype(inputs[0]["dtype"]).name != spec.dtype:
            raise BundleError(f"{where}: model input dtype {np.dtype(inputs[0]['dtype']).name} does not match manifest {spec.dtype}")
        outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        scores = outputs.get(self.manifest.outputs.scores)
        if scores is None:
            raise BundleError(f"{where}: no output tensor named {self.manifest.outputs.scores!r} (have {sorted(outputs)})")
        if list(scores["shape"]) != [1, len(self.manifest.labels)]:
            raise BundleError(f"{where}: scores output shape {list(scores['shape'])} does not match {len(self.manifest.labels)} labels")
        features = None
        if self.manifest.outputs.cam_features is not None:
            features = outputs.get(self.manifest.outputs.cam_features)
            if features is None or len(features["shape"]) != 4:
                raise BundleError(f"{where}: class-activation output {self.manifest.outputs.cam_features!r} missing or not 4-D")
            channels = len(self.manifest.cam.weights) if self.manifest.cam is not None else None
            if features["shape"][3] != channels:
                raise BundleError(f"{where}: class-activation output has {features['shape'][3]} channels, "
                                  f"cam.weights has {channels}")
        return inputs[0], scores, features

    def warm_up(self) -> None:
        self.interpreter.set_tensor(self._input["index"], np.zeros(self._input["shape"], dtype=self._input["dtype"]))
        self.interpreter.invoke()

    # --- the compute path --------------------------------------------------------------------------

    def classify(
        self,
        frame: np.ndarray,
        *,
        auto_crop: bool = True,
        roi: Box | None = None,
        roi_mode: str = "override",
        heatmap: bool = False,
    ) -> Classification:
        """Crop, check quality, preprocess, invoke, calibrate and decide. Never raises for a bad frame:
        a frame unfit for analysis gives an inconclusive result with the reasons."""
        start = time.perf_counter()
        prepared = prepare(frame, self.manifest.input, auto_crop=auto_crop, roi=roi, roi_mode=roi_mode)
        reasons = image_problems(prepared.crop.apply(frame), self.limits)  # colour check needs the original
        raw_scores, features = self.invoke(self.input_tensor(prepared.pixels), with_features=heatmap)
        probabilities = self.probabilities(raw_scores)
        reasons += confidence_problems(probabilities, self.limits)
        labels = self.manifest.labels
        probs = {name: float(p) for name, p in zip(labels, probabilities)}
        assessment = self.assess(probs, inconclusive=bool(reasons))
        heat = None
        if heatmap and features is not None and assessment.category is Category.SUSPICIOUS:
            heat = self._heatmap(features, labels.index(MALIGNANT), assessment.p_malignant, prepared.placement,
                                 prepared.grey_crop.shape[:2])
        latency_ms = (time.perf_counter() - start) * 1000.0
        return Classification(
            probabilities=probs,
            label=None if reasons else assessment.label,
            decision=assessment.label,
            inconclusive=bool(reasons),
            reasons=tuple(reasons),
            thresholds=dict(self.thresholds),
            crop=prepared.crop,
            roi=roi,
            latency_ms=latency_ms,
            heatmap=heat,
            assessment=assessment,
        )

    def assess(self, probabilities: dict[str, float], inconclusive: bool) -> Decision:
        """The category rule in this classifier's mode, with the site's threshold when it set one."""
        return decide(probabilities, self.manifest.labels, self.decision_spec, self.mode, self._site_threshold, inconclusive)

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """Model pixels -> the ``[1, H, W, C]`` tensor this interpreter takes."""
        return to_input_tensor(pixels, self.manifest.input, self._input["dtype"], self._input["quantization"])

    def invoke(self, tensor: np.ndarray, with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores tensor's values (dequantized, before the temperature) and, if asked, the feature map. A site
        bundle's scores are its head's on the pooled feature map (device/head.py)."""
        self.interpreter.set_tensor(self._input["index"], tensor)
        self.interpreter.invoke()
        if self._head is not None and self._features is not None:  # a head implies the feature map (bundle.py)
            features = _dequantize(self.interpreter.get_tensor(self._features["index"]), self._features)[0]
            return head_scores(features, *self._head), (features if with_features else None)
        scores = _dequantize(self.interpreter.get_tensor(self._scores["index"]), self._scores)[0]
        features = None
        if with_features and self._features is not None:  # an (S/32)x(S/32)x1280 copy: only when a heatmap is wanted
            features = _dequantize(self.interpreter.get_tensor(self._features["index"]), self._features)[0]
        return scores, features

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: the manifest's temperature applied to the scores."""
        if self.manifest.outputs.scores_kind == "logits":
            return softmax(scores, self.manifest.temperature)
        # probabilities: recover logits, then apply the temperature
        return softmax(np.log(np.clip(scores, 1e-12, 1.0)), self.manifest.temperature)

    def _heatmap(self, features: np.ndarray, class_index: int, p_class: float, placement: Placement,
                 crop_shape: tuple[int, int]) -> np.ndarray:
        """The class activation on the fixed scale (HEATMAP_SCALE): its shape relative to its peak, times the
        class probability, on one logarithmic scale for every image, so the hottest colour an image can show is
        its own p(class), never an auto-rescaled 100 %."""
        assert self._cam_weights is not None  # a heat map is asked for only when the bundle has cam weights
        cam = features @ self._cam_weights[:, class_index]  # [h, w]
        cam = np.maximum(cam, 0.0)
        peak = float(cam.max())
        cam = cam / peak * p_class if peak > 0 else cam * 0.0
        cam = heat_scale(cam)
        spec = self.manifest.input
        full = cv2.resize(cam.astype(np.float32), (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        inside = full[placement.y : placement.y + placement.height, placement.x : placement.x + placement.width]
        resized = cv2.resize(inside, (crop_shape[1], crop_shape[0]), interpolation=cv2.INTER_LINEAR)
        return np.clip(resized * 255.0, 0, 255).astype(np.uint8)


def heat_scale(p: np.ndarray | float) -> np.ndarray:
    """A probability on the heat map's fixed scale, 0..1: log10 from HEATMAP_FLOOR (0) to 1 (1)."""
    floor = np.log10(HEATMAP_FLOOR)
    return np.clip((np.log10(np.maximum(p, HEATMAP_FLOOR)) - floor) / -floor, 0.0, 1.0).astype(np.float32)


def _dequantize(values: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if values.dtype in (np.int8, np.uint8, np.int16) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


# --- running inference off the caller's thread --------------------------------------------------------


@dataclass
class _Request:
    frame: np.ndarray
    options: dict[str, Any]
    future: Future


class InferenceWorker:
    """Runs a :class:`Classifier` on its own thread so a UI never blocks.

    ``submit`` queues a frame and returns a ``Future`` at once (explicit requests — a tap on
    Analyse — are served first, in order). ``submit_latest`` is for live analysis: there is one
    live slot, and a live request not yet started is replaced by the newer frame (it is cancelled).
    Neither call ever blocks the caller.
    """

    def __init__(self, classifier_factory: Callable[[], Classifier]) -> None:
        self._factory = classifier_factory
        self._wakeup = threading.Condition()
        self._requests: deque[_Request] = deque()
        self._latest: _Request | None = None
        self._closing = False
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.classifier: Classifier | None = None
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> Classifier:
        """Wait for the model to load; re-raises the load error (e.g. a rejected bundle)."""
        self._ready.wait(timeout)
        if self._startup_error is not None:
            raise self._startup_error
        if self.classifier is None:
            raise TimeoutError("model is still loading")
        return self.classifier

    def submit(self, frame: np.ndarray, **options: Any) -> Future:
        request = _Request(frame, options, Future())
        with self._wakeup:
            self._requests.append(request)
            self._wakeup.notify()
        return request.future

    def submit_latest(self, frame: np.ndarray, **options: Any) -> Future:
        request = _Request(frame, options, Future())
        with self._wakeup:
            stale, self._latest = self._latest, request
            self._wakeup.notify()
        if stale is not None:
            stale.future.cancel()
        return request.future

    def close(self, timeout: float = 5.0) -> None:
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(timeout)

    def _next_request(self) -> _Request | None:
        with self._wakeup:
            while not (self._requests or self._latest or self._closing):
                self._wakeup.wait()
            if self._requests:
                return self._requests.popleft()
            request, self._latest = self._latest, None
            return request  # None only when closing with nothing left

    def _loop(self) -> None:
        try:
            self.classifier = self._factory()
        except BaseException as exc:  # reported through wait_ready() and every future
            self._startup_error = exc
        finally:
            self._ready.set()
        while (request := self._next_request()) is not None:
            if not request.future.set_running_or_notify_cancel():
                continue
            if self._startup_error is not None:
                request.future.set_exception(self._startup_error)
                continue
            assert self.classifier is not None  # set before _ready, or _startup_error is
            try:
                request.future.set_result(self.classifier.classify(request.frame, **request.options))
            except BaseException as exc:  # delivered to the caller through the future
                request.future.set_exception(exc)
