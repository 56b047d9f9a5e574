"""Frame -> classification -> durably stored result: the one path shared by the CLI, the run loop and the UI."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from device.bundle import Manifest, ModelBundle
from device.config import DeviceConfig, ModelSection, QualitySection
from device.crop import Box
from device.engine import Classification, Classifier
from device.errors import ConfigError, ImageDecodeError, SourceError
from device.quality import QualityLimits
from device.results import Exam, ResultRecord, new_result_id, utc_now_iso
from device.signing import load_verified_bundle
from device.sources.base import Frame, FrameSource
from device.store import ResultStore

log = logging.getLogger(__name__)


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


def site_thresholds(section: ModelSection, manifest: Manifest) -> dict[str, float]:
    """The bundle's thresholds, with ``[model].malignant_threshold`` applied. A site may only make the malignant
    threshold stricter (lower): a higher one would trade away sensitivity the bundle was validated for."""
    thresholds = dict(manifest.thresholds)
    site = section.malignant_threshold
    if site is None:
        return thresholds
    validated = thresholds.get("malignant")
    if validated is None:
        raise ConfigError(f"[model] malignant_threshold = {site}: model {manifest.name} {manifest.version} has no malignant threshold to lower")
    if site > validated:
        raise ConfigError(
            f"[model] malignant_threshold = {site} is above the threshold model {manifest.name} {manifest.version} was "
            f"validated with ({validated:.4f}); a site may only lower it (more sensitive), never raise it"
        )
    log.warning("site malignant threshold %.4f applied (model %s %s was validated with %.4f)", site, manifest.name, manifest.version, validated)
    thresholds["malignant"] = site
    return thresholds


def load_classifier(config: DeviceConfig, bundle_path=None, runtime: str | None = None) -> Classifier:
    """Load the configured bundle — verifying its signature when ``[model].public_key`` is set —
    and build its classifier with the site's thresholds."""
    bundle: ModelBundle = load_verified_bundle(bundle_path or config.model.path, config.model.public_key)
    return Classifier(bundle, threads=config.model.threads, limits=quality_limits(config.quality, bundle.manifest),
                      runtime=runtime, thresholds=site_thresholds(config.model, bundle.manifest))


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
    """Classifies frames and stores every result before returning it."""

    def __init__(self, config: DeviceConfig, classifier: Classifier, store: ResultStore) -> None:
        self.config = config
        self.classifier = classifier
        self.store = store

    def analyse(self, frame: Frame, *, exam: Exam | None = None, roi: Box | None = None, heatmap: bool = False) -> tuple[ResultRecord, Classification]:
        source = self.config.source
        if roi is None and source.roi is not None:
            roi = Box.from_tuple(source.roi)
        result = self.classifier.classify(frame.image, auto_crop=source.auto_crop, roi=roi, roi_mode=source.roi_mode, heatmap=heatmap)
        return self.record(frame, result, exam), result

    def record(self, frame: Frame, result: Classification, exam: Exam | None = None) -> ResultRecord:
        """Durably store a classification of ``frame`` (raises :class:`StoreError` if it cannot)."""
        manifest = self.classifier.manifest
        crop = result.crop.apply(frame.image)
        record = ResultRecord(
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
            exam_id=exam.exam_id if exam else None,
            patient_ref=exam.patient_ref if exam else None,
            side=exam.side if exam else None,
            crop=result.crop.as_tuple(),
            roi=result.roi.as_tuple() if result.roi else None,
            source=frame.origin,
            latency_ms=round(result.latency_ms, 3),
            thumbnail=encode_jpeg(crop if crop.size else frame.image, self.config.store.thumbnail_px),
        )
        frame_png = encode_png(frame.image) if self.config.store.keep_images_days > 0 else None
        return self.store.add(record, frame_png)


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
) -> RunStats:
    """Capture -> classify -> store until ``stop`` is set (or a finite source ends with ``once``).

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
            if source.finite:
                break
            stop.wait(0.5)
            continue
        if frame is None:
            if once or source.finite:
                break
            continue
        stats.frames += 1
        record, _ = analyzer.analyse(frame)  # StoreError propagates: stop rather than lose results
        stats.stored += 1
        stats.inconclusive += int(record.inconclusive)
        if on_result:
            on_result(record)
    return stats


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` so the loop ends after the current frame is stored."""

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping after the current frame", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)

