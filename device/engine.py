"""On-device inference: the classifier (quality gate, decision, heat map, lesion outline) and the worker thread.

Running the model itself — runtime selection, tensors, scores -> probabilities — is
:mod:`device.model.runtime`, shared with the workstation; this module adds what the device adds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import cv2
import numpy as np

from device.close_up import CloseUpCheck
from device.crop import Box, RoiMode, fit_within
from device.decision import MALIGNANT, Category, Decision, Mode, applied_threshold, decide
from device.errors import BundleError
from device.model.bundle import ModelBundle
from device.model.preprocess import Placement, Prepared, prepare
from device.model.runtime import ModelRunner, probabilities
from device.outline import LesionResult, Segmenter, withheld
from device.quality import QualityLimits, confidence_problems, image_problems
from device.spacing import PixelSpacing

log = logging.getLogger(__name__)

# The heat map's long side at most: it is a 7 x 7 class activation map, drawn scaled into the crop's box, and at
# the size of a 5015 x 5015 crop it took the classifier to 436 MB and the touchscreen's overlay to 483 MB
# (tests/device/test_heatmap_size.py). A crop up to this size gets a map its own size.
HEATMAP_MAX_SIDE = 1024


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
    latency_ms: float  # crop + preprocess + invoke + postprocess (+ the lesion outline, when the bundle has one)
    # uint8 [crop h, crop w] (scaled down, aspect kept, to HEATMAP_MAX_SIDE for a longer crop) on the fixed scale
    # 0..255 = p(malignant) 0..1 (see HEATMAP_SCALE); suspicious only
    heatmap: np.ndarray | None = None
    assessment: Decision | None = None  # the category rule's output (device.decision); None only in old tests
    # the lesion outline (device/outline.py): None without a segmentation model or when not asked for (the live
    # score); withheld when inconclusive
    lesion: LesionResult | None = None
    # with a clinician's ROI: both views' decisions and which one this result reports (device/close_up.py); the
    # crop, probabilities and heat map are the deciding view's, ``roi`` the clinician's
    close_up: CloseUpCheck | None = None

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


@dataclass(frozen=True)
class _View:
    """How one view of a frame is cut and what is computed on it (``Classifier.classify``'s options)."""

    auto_crop: bool
    roi: Box | None
    roi_mode: RoiMode | str
    heatmap: bool
    spacing: PixelSpacing | None


class _Viewed(NamedTuple):
    """One view classified: the result (no heat map, no outline yet), its prepared pixels, its feature map or None."""

    result: Classification
    prepared: Prepared
    features: np.ndarray | None


def _assessment(result: Classification) -> Decision:
    assert result.assessment is not None  # every Classifier result carries its decision
    return result.assessment


HEATMAP_FLOOR = 0.01  # the fixed heat-map scale: log10 from p = 1 % (0) to 100 % (255)
HEATMAP_SCALE = (
    "fixed, logarithmic: colour = p(malignant) x the location's malignant class activation relative to its peak, "
    "0 at <= 1 %, 128 at 10 %, 255 at 100 %"
)


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
        self.limits = limits or QualityLimits(min_confidence=self.manifest.quality.min_confidence, max_entropy=self.manifest.quality.max_entropy)
        self.runner = ModelRunner.from_bundle(bundle, threads=threads, runtime=runtime)
        self.runtime = self.runner.runtime
        seg = self.manifest.segmentation
        self.segmenter = Segmenter.from_bundle(bundle, threads=threads, runtime=runtime) if seg is not None else None
        self._same_input = seg is not None and seg.input == self.manifest.input  # the classifier's pixels serve both
        channels = self.runner.feature_channels
        if channels is not None and channels != (len(self.manifest.cam.weights) if self.manifest.cam else None):
            raise BundleError(
                f"model bundle {bundle.path}: class-activation output has {channels} channels, "
                f"cam.weights has {len(self.manifest.cam.weights) if self.manifest.cam else None}"
            )
        self._cam_weights = None
        if self.manifest.cam is not None:
            self._cam_weights = np.asarray(self.manifest.cam.weights, dtype=np.float32)
        if self.runner.head is not None:  # a site bundle's scores and heat maps come from the refitted head
            self._cam_weights = self.runner.head[0].astype(np.float32)
        log.info("model %s %s loaded with %s (%d threads)", self.manifest.name, self.manifest.version, self.runtime, threads)
        self.warm_up()

    def warm_up(self) -> None:
        self.runner.warm_up()

    # --- the compute path --------------------------------------------------------------------------

    def classify(
        self,
        frame: np.ndarray,
        *,
        auto_crop: bool = True,
        roi: Box | None = None,
        roi_mode: RoiMode | str = RoiMode.OVERRIDE,
        close_up: Box | None = None,
        heatmap: bool = False,
        outline: bool = True,
        spacing: PixelSpacing | None = None,
    ) -> Classification:
        """Crop, check quality, preprocess, invoke, calibrate and decide; outline the lesion when the bundle has a
        segmentation model and ``outline`` (the live score, which shows none, passes False; ``spacing``: the frame's,
        for sizes in mm). Never raises for a bad frame: a frame unfit
        for analysis gives an inconclusive result with the reasons (and no outline).

        ``roi``: the scan region's (the configured source ROI). ``close_up``: a clinician's ROI (drawn, or a tapped
        lesion's square): both views are classified and the close-up's decision is reported unless the scan
        region's is more concerning (device/close_up.py); the outline is the lesion under the close-up."""
        start = time.perf_counter()
        view = _View(auto_crop=auto_crop, roi=roi, roi_mode=roi_mode, heatmap=heatmap, spacing=spacing)
        if close_up is None:
            chosen = self._classify_view(frame, view)
            lesion = self._outline(frame, chosen.prepared, view, roi, withhold=chosen.result.inconclusive) if outline else None
            check = None
        else:
            scan = self._classify_view(frame, view)
            near = self._classify_view(frame, replace(view, roi=close_up))
            check = CloseUpCheck.of(_assessment(near.result), _assessment(scan.result))
            chosen = scan if check.raised else near
            # the outline is the lesion under the close-up, on the scan region's pixels
            lesion = self._outline(frame, scan.prepared, view, close_up, withhold=chosen.result.inconclusive) if outline else None
        heat = self._heatmap_of(chosen) if heatmap else None  # for the reported view only
        latency_ms = (time.perf_counter() - start) * 1000.0
        reported_roi = close_up if close_up is not None else roi
        return replace(chosen.result, roi=reported_roi, heatmap=heat, lesion=lesion, close_up=check, latency_ms=latency_ms)

    def _classify_view(self, frame: np.ndarray, view: _View) -> _Viewed:
        """One view of ``frame`` (its crop as ``view`` says) classified, with its prepared pixels and, when a heat map
        is asked for, the feature map; no heat map or outline yet (``classify`` adds them to the view it reports)."""
        prepared = prepare(frame, self.manifest.input, auto_crop=view.auto_crop, roi=view.roi, roi_mode=view.roi_mode)
        reasons = image_problems(prepared.crop.apply(frame), self.limits)  # colour check needs the original
        raw_scores, features = self.invoke(self.input_tensor(prepared.pixels), with_features=view.heatmap)
        probabilities = self.probabilities(raw_scores)
        reasons += confidence_problems(probabilities, self.limits)
        probs = {name: float(p) for name, p in zip(self.manifest.labels, probabilities)}
        assessment = self.assess(probs, inconclusive=bool(reasons))
        result = Classification(
            probabilities=probs,
            label=None if reasons else assessment.label,
            decision=assessment.label,
            inconclusive=bool(reasons),
            reasons=tuple(reasons),
            thresholds=dict(self.thresholds),
            crop=prepared.crop,
            roi=view.roi,
            latency_ms=0.0,  # set by classify, which times the whole analysis
            assessment=assessment,
        )
        return _Viewed(result, prepared, features)

    def _heatmap_of(self, viewed: _Viewed) -> np.ndarray | None:
        """The view's heat map: for a suspicious result only, when the runner gave the feature map."""
        assessment = _assessment(viewed.result)
        if viewed.features is None or assessment.category is not Category.SUSPICIOUS:
            return None
        placement, crop_shape = viewed.prepared.placement, viewed.prepared.grey_crop.shape[:2]
        return self._heatmap(viewed.features, self.manifest.labels.index(MALIGNANT), assessment.p_malignant, placement, crop_shape)

    def _outline(self, frame: np.ndarray, prepared: Prepared, view: _View, roi: Box | None, *, withhold: bool) -> LesionResult | None:
        """The lesion outline (None without a segmentation model; withheld for an inconclusive result). ``prepared``:
        the classifier's view of the scan region (``view``), reused when it has no ROI; ``roi``: the region whose
        lesion is kept (the close-up, else the view's own ROI)."""
        if self.segmenter is None:
            return None
        if withhold:
            return withheld()
        scan, same = self.segmenter.scan_region(frame, prepared, auto_crop=view.auto_crop, roi=view.roi, same_input=self._same_input)
        return self.segmenter.outline(scan, (frame.shape[0], frame.shape[1]), spacing=view.spacing, roi=roi, same_input=same)

    def assess(self, probabilities: dict[str, float], inconclusive: bool) -> Decision:
        """The category rule in this classifier's mode, with the site's threshold when it set one."""
        return decide(probabilities, self.manifest.labels, self.decision_spec, self.mode, self._site_threshold, inconclusive)

    def input_tensor(self, pixels: np.ndarray) -> np.ndarray:
        """Model pixels -> the ``[1, H, W, C]`` tensor this interpreter takes."""
        return self.runner.input_tensor(pixels)

    def invoke(self, tensor: np.ndarray, with_features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores (dequantized, before the temperature) and, if asked, the feature map (the runner's)."""
        return self.runner.invoke(tensor, with_features)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities: the manifest's temperature applied to the scores (the runner's rule)."""
        return probabilities(scores, self.manifest.temperature, self.manifest.outputs.scores_kind)

    def _heatmap(self, features: np.ndarray, class_index: int, p_class: float, placement: Placement, crop_shape: tuple[int, int]) -> np.ndarray:
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
        resized: np.ndarray = cv2.resize(inside, fit_within(crop_shape[1], crop_shape[0], HEATMAP_MAX_SIDE), interpolation=cv2.INTER_LINEAR)
        np.multiply(resized, 255.0, out=resized)
        np.clip(resized, 0, 255, out=resized)
        heat: np.ndarray = resized.astype(np.uint8)
        return heat


def heat_scale(p: np.ndarray | float) -> np.ndarray:
    """A probability on the heat map's fixed scale, 0..1: log10 from HEATMAP_FLOOR (0) to 1 (1)."""
    floor = np.log10(HEATMAP_FLOOR)
    scaled: np.ndarray = np.clip((np.log10(np.maximum(p, HEATMAP_FLOOR)) - floor) / -floor, 0.0, 1.0).astype(np.float32)
    return scaled


# --- running inference off the caller's thread --------------------------------------------------------


@dataclass
class _Request:
    frame: np.ndarray
    options: dict[str, Any]
    future: Future[Classification]


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

    def submit(self, frame: np.ndarray, **options: Any) -> Future[Classification]:
        request = _Request(frame, options, Future())
        with self._wakeup:
            self._requests.append(request)
            self._wakeup.notify()
        return request.future

    def submit_latest(self, frame: np.ndarray, **options: Any) -> Future[Classification]:
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
