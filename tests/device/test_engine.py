"""Inference: runtime choice, decision rule, quality gate, heatmap, crop/ROI, the worker thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from device.crop import Box
from device.demo import scanner_screen
from device.engine import Classifier, InferenceWorker, decide_label
from device.errors import BundleError, RuntimeUnavailableError
from device.model.runtime import load_interpreter_class, softmax
from device.quality import QualityLimits
from tests.tiny_bundle import expected_label


def _speckle(level: float, shape=(200, 300), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 15, shape), 0, 255).astype(np.uint8)


@pytest.fixture()
def classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, threads=1)


def test_runtime_preference_order() -> None:
    _, name = load_interpreter_class()
    assert name == "ai_edge_litert"  # installed, and first in the order
    with pytest.raises(RuntimeUnavailableError, match="unknown TFLite runtime"):
        load_interpreter_class("onnx")


def test_tensorflow_lite_fallback_gives_the_same_answer(tiny_bundle) -> None:
    pytest.importorskip("tensorflow")
    litert = Classifier(tiny_bundle, threads=1, runtime="ai_edge_litert")
    tf = Classifier(tiny_bundle, threads=1, runtime="tensorflow")
    assert tf.runtime == "tensorflow"
    frame = _speckle(128)
    a, b = litert.classify(frame), tf.classify(frame)
    assert a.label == b.label
    assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-5


@pytest.mark.parametrize("level", [40, 128, 220])
def test_labels_follow_the_known_rule(classifier: Classifier, level: int) -> None:
    frame = _speckle(level)
    result = classifier.classify(frame, auto_crop=False)
    assert result.label == expected_label(frame.mean() / 255)
    assert not result.inconclusive and result.reasons == ()
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-6
    assert result.crop == Box(0, 0, 300, 200)


def test_decision_threshold_beats_argmax() -> None:
    labels = ("normal", "benign", "malignant")
    probs = np.array([0.05, 0.6, 0.35])
    assert decide_label(probs, labels, {}) == "benign"
    assert decide_label(probs, labels, {"malignant": 0.3}) == "malignant"
    assert decide_label(probs, labels, {"malignant": 0.4}) == "benign"


def test_temperature_softens() -> None:
    logits = np.array([2.0, 0.0, -1.0])
    assert softmax(logits, 2.0).max() < softmax(logits, 1.0).max()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (np.zeros((200, 300), np.uint8), "blank"),
        (np.full((200, 300), 255, np.uint8), "saturated"),
        (_speckle(128, shape=(40, 40)), "too_small"),
    ],
)
def test_quality_gate_marks_inconclusive(classifier: Classifier, frame: np.ndarray, reason: str) -> None:
    result = classifier.classify(frame, auto_crop=False)
    assert result.inconclusive and result.label is None
    assert any(r.startswith(reason) for r in result.reasons), result.reasons
    assert result.decision in result.probabilities  # the model's call is still reported


def test_colour_image_is_inconclusive(classifier: Classifier) -> None:
    grey = _speckle(128)
    doppler = np.repeat(grey[:, :, None], 3, axis=2)
    doppler[50:150, 100:200] = (200, 30, 30)  # a red/blue Doppler box
    result = classifier.classify(doppler, auto_crop=False)
    assert result.inconclusive and any(r.startswith("colour") for r in result.reasons)


def test_low_confidence_is_inconclusive(tiny_bundle) -> None:
    strict = Classifier(tiny_bundle, threads=1, limits=QualityLimits(min_confidence=0.9))
    # mean brightness at the normal/benign boundary (1/3): about 50/50
    result = strict.classify(_speckle(85), auto_crop=False)
    assert result.inconclusive and any(r.startswith("low_confidence") for r in result.reasons)


def test_heatmap_covers_the_crop_on_the_fixed_scale_for_suspicious_results_only(classifier: Classifier) -> None:
    frame = _speckle(200)
    frame[50:100, 200:260] = 250  # a bright patch drives the "malignant"-side feature
    result = classifier.classify(frame, auto_crop=False, heatmap=True)
    assert result.category == "suspicious", result.probabilities
    assert result.heatmap is not None and result.heatmap.shape == frame.shape
    assert result.heatmap.dtype == np.uint8
    from device.engine import heat_scale

    assert int(result.heatmap.max()) <= round(255 * float(heat_scale(result.p_malignant))) + 1  # never above p(malignant)
    dark = classifier.classify(_speckle(60), auto_crop=False, heatmap=True)
    assert dark.category != "suspicious" and dark.heatmap is None


def test_auto_crop_and_roi(classifier: Classifier) -> None:
    screen, (x, y, w, h) = scanner_screen(1)
    result = classifier.classify(screen)
    assert abs(result.crop.x - x) <= 4 and abs(result.crop.width - w) <= 8
    roi = Box(300, 150, 200, 200)
    manual = classifier.classify(screen, roi=roi)
    assert manual.crop == roi and manual.roi == roi
    refined = classifier.classify(screen, roi=Box(0, 0, 1280, 720), roi_mode="refine")
    assert abs(refined.crop.x - x) <= 4
    outside = classifier.classify(screen, roi=Box(5000, 5000, 10, 10))  # off-frame ROI: whole frame, not a crash
    assert outside.crop == Box(0, 0, 1280, 720)


def test_worker_runs_off_the_callers_thread(tiny_bundle) -> None:
    threads: list[str] = []

    def factory() -> Classifier:
        threads.append(threading.current_thread().name)
        return Classifier(tiny_bundle, threads=1)

    worker = InferenceWorker(factory)
    try:
        worker.wait_ready(30)
        futures = [worker.submit(_speckle(level)) for level in (40, 128, 220)]
        labels = [f.result(30).label for f in futures]
        assert labels == ["normal", "benign", "malignant"]
        assert threads == ["inference"] and threading.current_thread().name != "inference"
    finally:
        worker.close()


def test_worker_submit_latest_drops_stale_requests(tiny_bundle) -> None:
    release = threading.Event()

    class Slow(Classifier):
        def classify(self, frame, **options):
            release.wait(10)
            return super().classify(frame, **options)

    worker = InferenceWorker(lambda: Slow(tiny_bundle, threads=1))
    try:
        worker.wait_ready(30)
        first = worker.submit(_speckle(40))  # occupies the worker (explicit requests are served first)
        stale = worker.submit_latest(_speckle(128))
        latest = worker.submit_latest(_speckle(220))
        release.set()
        assert first.result(10).label == "normal"
        assert stale.cancelled()
        assert latest.result(10).label == "malignant"
    finally:
        worker.close()


def test_worker_reports_a_rejected_model(tmp_path) -> None:
    from device.model.bundle import load_bundle

    worker = InferenceWorker(lambda: Classifier(load_bundle(tmp_path / "missing"), threads=1))
    with pytest.raises(BundleError, match="not a directory"):
        worker.wait_ready(10)
    with pytest.raises(BundleError):
        worker.submit(_speckle(40)).result(10)
    worker.close()


def test_worker_serves_a_tap_before_the_live_frame_and_never_blocks(tiny_bundle) -> None:
    release = threading.Event()
    order: list[float] = []

    class Recording(Classifier):
        def classify(self, frame, **options):
            release.wait(10)
            order.append(float(frame.mean()))
            return super().classify(frame, **options)

    worker = InferenceWorker(lambda: Recording(tiny_bundle, threads=1))
    try:
        worker.wait_ready(30)
        busy = worker.submit(_speckle(40))
        live = [worker.submit_latest(_speckle(128)) for _ in range(20)]  # a live stream piling up
        fallback = threading.Timer(10, release.set)  # a blocking submit() would only return through this
        fallback.start()
        tap = worker.submit(_speckle(220))
        returned_while_busy = not release.is_set()
        fallback.cancel()
        release.set()
        assert tap.result(10).label == "malignant" and live[-1].result(10).label == "benign"
        assert all(f.cancelled() for f in live[:-1])
        assert busy.done() and order[1] > 200 and 100 < order[2] < 160  # tap served before the live frame
        assert returned_while_busy
    finally:
        worker.close()


def _frame_between_thresholds(classifier: Classifier, low: float, high: float) -> tuple[np.ndarray, float]:
    """A frame whose p(malignant) lies in [low, high) (the tiny model's p rises with brightness)."""
    for level in range(100, 230, 2):
        frame = _speckle(level)
        p = classifier.classify(frame, auto_crop=False).probabilities["malignant"]
        if low <= p < high:
            return frame, p
    raise AssertionError(f"no brightness gives p(malignant) in [{low}, {high})")


def test_a_sites_lower_malignant_threshold_is_applied_and_recorded(tiny_bundle) -> None:
    from device.analysis import site_thresholds
    from device.config import ModelSection

    validated = tiny_bundle.manifest.thresholds["malignant"]  # 0.4
    site = site_thresholds(ModelSection(malignant_threshold=0.1), tiny_bundle.manifest)
    assert site == {**tiny_bundle.manifest.thresholds, "malignant": 0.1}
    assert site_thresholds(ModelSection(), tiny_bundle.manifest) == tiny_bundle.manifest.thresholds
    plain, strict = Classifier(tiny_bundle, threads=1), Classifier(tiny_bundle, threads=1, thresholds=site)
    frame, p = _frame_between_thresholds(plain, 0.1, validated)
    assert plain.classify(frame, auto_crop=False).decision != "malignant"
    result = strict.classify(frame, auto_crop=False)
    assert result.decision == "malignant" and result.thresholds["malignant"] == 0.1, p


def test_a_site_may_not_raise_the_malignant_threshold(tiny_bundle) -> None:
    import dataclasses

    from device.analysis import site_thresholds
    from device.config import ModelSection
    from device.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"malignant_threshold = 0.5 is above the threshold model tiny-test-model 0.0.1 was validated with \(0.4000\)"
    ):
        site_thresholds(ModelSection(malignant_threshold=0.5), tiny_bundle.manifest)
    without = dataclasses.replace(tiny_bundle.manifest, thresholds={})
    with pytest.raises(ConfigError, match="has no malignant threshold to lower"):
        site_thresholds(ModelSection(malignant_threshold=0.1), without)
