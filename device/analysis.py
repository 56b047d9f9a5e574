"""Frame -> classification -> durably stored result: the one path shared by the CLI, the run loop and the UI.

How a frame is analysed is decided once from the configuration, ``AnalysisOptions.from_config``: the one door
from ``[source]`` (auto-crop, a manual ROI and its mode, the DICOM cine frame) to the classifier. ``device
classify``, ``device run``, ``device site-check``, ``device site-adapt`` and the touchscreen all take their
options here, so the same file under the same configuration is analysed the same way everywhere
(tests/device/test_analysis_options.py). A clinician's ROI drawn on the screen replaces the configured one.
:class:`Analyzer` then classifies and stores (``record`` stores a frame only under the exam it was captured in).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from device.clock import utc_now_iso
from device.config import DeviceConfig, ModelSection, QualitySection
from device.crop import Box, RoiMode
from device.decision import MALIGNANT, Mode, applied_threshold
from device.engine import Classification, Classifier
from device.errors import ConfigError, ImageDecodeError, SourceError
from device.lesion_record import LesionRecord
from device.model.bundle import Manifest, ModelBundle
from device.model.signing import load_verified_bundle
from device.quality import QualityLimits
from device.results import CapturedFrame, ExamDesk, ResultRecord, new_result_id
from device.site_choice import ModelChoice, choose_bundle
from device.source_state import SourceState, SourceStateReporter
from device.sources.base import Frame, FrameSource
from device.store import ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    auto_crop: bool = True
    roi: Box | None = None  # in source pixels
    roi_mode: RoiMode = RoiMode.OVERRIDE  # or REFINE: auto-crop inside the ROI
    dicom_frame: int | None = None  # a cine file: this frame only
    close_up: Box | None = None  # a clinician's ROI (drawn or tapped), checked against the scan region (device/close_up.py)

    @classmethod
    def from_config(cls, config: DeviceConfig) -> AnalysisOptions:
        source = config.source
        roi = Box.from_tuple(source.roi) if source.roi is not None else None
        return cls(auto_crop=source.auto_crop, roi=roi, roi_mode=RoiMode(source.roi_mode), dicom_frame=source.dicom_frame)

    def with_roi(self, roi: Box | None) -> AnalysisOptions:
        """These options with a clinician's ROI as the close-up (None: none). The configured ROI stays the scan
        region's: the close-up's decision is checked against it (device/close_up.py)."""
        return self if roi == self.close_up else dataclasses.replace(self, close_up=roi)

    def classify_kwargs(self, heatmap: bool = False) -> dict[str, Any]:
        """Keyword arguments of :meth:`device.engine.Classifier.classify`."""
        return {"auto_crop": self.auto_crop, "roi": self.roi, "roi_mode": self.roi_mode, "close_up": self.close_up, "heatmap": heatmap}


def quality_limits(section: QualitySection, manifest: Manifest) -> QualityLimits:
    """Config limits for image checks; confidence limits from the manifest unless the config overrides them."""
    return QualityLimits(
        min_side_px=section.min_side_px,
        blank_mean_max=section.blank_mean_max,
        blank_std_max=section.blank_std_max,
        saturated_fraction_max=section.saturated_fraction_max,
        colour_fraction_max=section.colour_fraction_max,
        min_confidence=section.min_confidence if section.min_confidence is not None else manifest.quality.min_confidence,
        max_entropy=section.max_entropy if section.max_entropy is not None else manifest.quality.max_entropy,
    )


def operating_mode(section: ModelSection, bundle: ModelBundle) -> Mode:
    """``[model] mode``, or the bundle's default mode when unset; a mode the bundle lacks is a ConfigError
    naming the key and the bundle."""
    spec = bundle.manifest.decision_spec()
    mode = Mode(section.mode) if section.mode is not None else Mode(spec.default_mode)
    if mode.value not in spec.modes:
        raise ConfigError(
            f"[model] mode = {mode.value!r}: model bundle {bundle.path} ({bundle.manifest.name} {bundle.manifest.version}) "
            f"has no such operating mode (it has {', '.join(spec.modes)})"
        )
    return mode


def site_thresholds(section: ModelSection, manifest: Manifest, mode: Mode | str | None = None) -> dict[str, float]:
    """``{"malignant": t}``: the operating mode's malignant threshold, or ``[model].malignant_threshold`` when set.
    A site may only make it stricter (lower): a higher one would trade away sensitivity the mode was validated for."""
    spec = manifest.decision_spec()
    mode = Mode(mode if mode is not None else section.mode or spec.default_mode)
    site = section.malignant_threshold
    model = f"model {manifest.name} {manifest.version}"
    if site is not None and manifest.decision is None and "malignant" not in manifest.thresholds:
        raise ConfigError(f"[model] malignant_threshold = {site}: {model} has no malignant threshold to lower")
    threshold = applied_threshold(spec, mode, site, model)
    if site is not None:
        log.warning(
            "site malignant threshold %.4f applied (%s was validated with %.4f in %s mode)",
            site,
            model,
            spec.mode(mode).malignant_threshold,
            mode.value,
        )
    return {MALIGNANT: threshold}


def load_configured(config: DeviceConfig, runtime: str | None = None) -> tuple[Classifier, ModelChoice]:
    """The classifier of the bundle the device runs without ``--model``: ``[model] path``, or the site bundle chosen
    on the device when it specialises exactly that bundle (device/site_choice.py), with what was chosen and why."""
    choice = choose_bundle(config)
    return build_classifier(config, choice.bundle, runtime), choice


def load_classifier(config: DeviceConfig, bundle_path: str | os.PathLike[str] | None = None, runtime: str | None = None) -> Classifier:
    """Load ``bundle_path`` (``--model``; the site-bundle record is ignored), else :func:`load_configured`'s — both
    verifying the signature when ``[model].public_key`` is set — and build its classifier in the configured
    operating mode with the site's threshold."""
    if bundle_path is None:
        return load_configured(config, runtime)[0]
    return build_classifier(config, load_verified_bundle(bundle_path, config.model.public_key), runtime)


def build_classifier(config: DeviceConfig, bundle: ModelBundle, runtime: str | None = None) -> Classifier:
    mode = operating_mode(config.model, bundle)
    return Classifier(
        bundle,
        threads=config.model.threads,
        limits=quality_limits(config.quality, bundle.manifest),
        runtime=runtime,
        thresholds=site_thresholds(config.model, bundle.manifest, mode),
        mode=mode,
    )


def encode_jpeg(image: np.ndarray, max_side: int, quality: int = 80) -> bytes:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def encode_png(image: np.ndarray) -> bytes:
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


class Analyzer:
    """Classifies frames and stores every result before returning it.

    A result is stored under exactly one exam: the one open on ``exams`` when its frame was captured
    (:meth:`ExamDesk.capture`), and only while that exam is still open — otherwise :meth:`record` raises an
    :class:`~device.results.ExamBindingError` and nothing is stored. The one exception is the headless
    ``device run`` (development, demos, benchmarks; never the touchscreen app), which stores *unattended*
    results with no exam and no patient through the explicitly named :meth:`record_unattended`."""

    def __init__(self, config: DeviceConfig, classifier: Classifier, store: ResultStore, exams: ExamDesk | None = None) -> None:
        self.config = config
        self.classifier = classifier
        self.store = store
        self.exams = exams if exams is not None else ExamDesk()
        self.options = AnalysisOptions.from_config(config)

    def classify(self, frame: Frame, *, roi: Box | None = None, heatmap: bool = False) -> Classification:
        """``roi``: a clinician's, classified as a close-up checked against the scan region (``AnalysisOptions.with_roi``,
        device/close_up.py). The frame's pixel
        spacing, when its source knows it, sizes the lesion outline in mm (device/outline.py)."""
        options = self.options.with_roi(roi)
        return self.classifier.classify(frame.image, spacing=frame.spacing, **options.classify_kwargs(heatmap))

    def analyse(self, captured: CapturedFrame, *, roi: Box | None = None, heatmap: bool = False) -> tuple[ResultRecord, Classification]:
        """Classify a captured frame and store it under the exam it was captured under."""
        self.exams.check(captured)  # refuse before spending the model's time on it
        result = self.classify(captured.frame, roi=roi, heatmap=heatmap)
        return self.record(captured, result), result

    def record(self, captured: CapturedFrame, result: Classification) -> ResultRecord:
        """Durably store a classification of ``captured`` under the exam open when it was captured.

        Raises :class:`~device.results.ExamBindingError` (nothing stored) when that exam is not the open one,
        :class:`StoreError` when the store cannot write."""
        if not isinstance(captured, CapturedFrame):
            raise TypeError(
                f"Analyzer.record takes a CapturedFrame (a frame with its exam token), not {type(captured).__name__}; "
                "capture it with ExamDesk.capture while its exam is open"
            )
        thumbnail, frame_png = self._images(captured.frame, result)
        with self.exams.bound(captured) as exam:  # the exam cannot close between this check and the write
            record = replace(
                self._record(captured.frame, result, thumbnail),
                exam_id=exam.exam_id,
                patient_ref=exam.patient_ref,
                side=exam.side,
                clock=exam.clock,
                age=exam.age,
            )
            return self.store.add(record, frame_png)

    def analyse_unattended(self, frame: Frame) -> tuple[ResultRecord, Classification]:
        """Headless ``device run`` only: classify and store with no exam and no patient."""
        result = self.classify(frame)
        return self.record_unattended(frame, result), result

    def record_unattended(self, frame: Frame, result: Classification) -> ResultRecord:
        """Headless ``device run`` and benchmarks only: store a result that belongs to no exam and no patient."""
        thumbnail, frame_png = self._images(frame, result)
        return self.store.add(self._record(frame, result, thumbnail), frame_png)

    def _images(self, frame: Frame, result: Classification) -> tuple[bytes, bytes | None]:
        crop = result.crop.apply(frame.image)
        thumbnail = encode_jpeg(crop if crop.size else frame.image, self.config.store.thumbnail_px)
        frame_png = encode_png(frame.image) if self.config.store.keep_images_days > 0 else None
        return thumbnail, frame_png

    def _record(self, frame: Frame, result: Classification, thumbnail: bytes) -> ResultRecord:
        manifest = self.classifier.manifest
        return ResultRecord(
            result_id=new_result_id(),
            created_at=utc_now_iso(),
            device_id=self.config.device.id,
            site=self.config.device.site,
            model_name=manifest.name,
            model_version=manifest.version,
            model_sha256=manifest.model_sha256,
            probabilities=result.probabilities,
            label=result.label,
            inconclusive=result.inconclusive,
            reasons=result.reasons,
            thresholds=result.thresholds,
            category=result.category.value if result.category else None,
            p_malignant=result.p_malignant,
            mode=result.mode.value if result.mode else None,
            crop=result.crop.as_tuple(),
            roi=result.roi.as_tuple() if result.roi else None,
            source=frame.origin,
            latency_ms=round(result.latency_ms, 3),
            lesion=LesionRecord.from_json(result.lesion.to_json(), f"lesion outline of {frame.origin}") if result.lesion is not None else None,
            close_up=result.close_up,
            thumbnail=thumbnail,
        )


@dataclass
class RunStats:
    frames: int = 0
    stored: int = 0
    inconclusive: int = 0
    errors: int = 0


def run_capture(
    source: FrameSource,
    analyzer: Analyzer,
    *,
    once: bool,
    stop: threading.Event,
    on_result: Callable[[ResultRecord], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    source_state: SourceStateReporter | None = None,
) -> RunStats:
    """Capture -> classify -> store until ``stop`` is set (or a finite source ends with ``once``).

    Headless (``device run``): results are stored unattended, with no exam and no patient.

    Per-frame problems (undecodable file, unplugged card) are reported and the loop goes on.
    A store failure stops the loop: results must not be produced that cannot be kept.
    """
    stats = RunStats()
    report_error = on_error or (lambda message: log.warning("%s", message))
    while not stop.is_set():
        try:
            frame = source.read()
        except ImageDecodeError as exc:
            stats.errors += 1
            report_error(str(exc))
            continue
        except SourceError as exc:
            stats.errors += 1
            report_error(str(exc))
            if source_state is not None:
                source_state.report(SourceState.LOST, str(exc))
            if source.finite:
                break
            stop.wait(0.5)
            continue
        if frame is None:
            if once or source.finite:
                break
            continue
        stats.frames += 1
        if source_state is not None:
            source_state.report(SourceState.OK, source.description)
        record, _ = analyzer.analyse_unattended(frame)  # no clinician, no exam; StoreError stops the run
        stats.stored += 1
        stats.inconclusive += int(record.inconclusive)
        if on_result:
            on_result(record)
        del frame, record  # before the next read: a frame near the decode limit cannot afford a second one beside it
    return stats


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` so the loop ends after the current frame is stored."""

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping after the current frame", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
