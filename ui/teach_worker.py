"""The teach screen's background work: ``device site-adapt`` on the marked frames (:class:`TeachJob`, with progress)
and the check that a site bundle loads before it is recorded as the one to run (:func:`use_site_bundle`). Both run on
their own thread with their own classifier, so the live view and the analysis never wait for them; outcomes reach
the GUI thread only through Qt signals."""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from PyQt5.QtCore import QObject, pyqtSignal

from device import site_adapt, site_choice
from device.analysis import AnalysisOptions, load_classifier
from device.config import DeviceConfig, ModelSection
from device.model.bundle import ModelBundle, load_bundle
from device.site_choice import SiteChoice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeachOutcome:
    adaptation: site_adapt.Adaptation
    bundle: ModelBundle


@dataclass(frozen=True)
class TeachFailure:
    message: str
    refused: bool  # a guard refused (too few, mixed scanners, forgetting): the clinician can act on it


def with_model(config: DeviceConfig, path: Path, threads: int | None = None) -> DeviceConfig:
    model = ModelSection(**{**config.model.model_dump(), "path": path, **({"threads": threads} if threads is not None else {})})
    return config.model_copy(update={"model": model})


def use_site_bundle(config: DeviceConfig, path: Path) -> SiteChoice:
    """*Use it*: load the site bundle as the app would (its signature when ``[model] public_key`` is set, the
    operating mode, the site threshold), then record it as the device's site bundle (device/site_choice.py: only
    when it was made from the configured bundle). The configuration is never written. Raises the load error."""
    load_classifier(with_model(config, config.model.path, threads=1), path)
    return site_choice.use_site_bundle(config, path)


def base_bundle_path(config: DeviceConfig, remembered: str | None) -> Path:
    """The bundle to teach from: the one remembered when the scanner was first taught, else ``[model] path`` —
    refused when that is itself a site bundle (its base is not known here)."""
    if remembered:
        return Path(remembered)
    path = config.model.path
    if load_bundle(path).manifest.head is not None:
        raise site_adapt.SiteAdaptError(
            f"the model in use ({path}) is a site bundle and the base it was made from is not "
            "recorded on this device; set [model] path to the base bundle first"
        )
    return path


class TeachJob(QObject):
    """One run of site-adapt: ``progress(done, total)`` while the frames are read through the model, ``fitting``
    when the head is being fitted, then ``finished(TeachOutcome | TeachFailure)``."""

    progress = pyqtSignal(int, int)
    fitting = pyqtSignal()
    finished = pyqtSignal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, config: DeviceConfig, base: Path, cases: Path, out: Path) -> None:
        if self.running:
            raise RuntimeError("a teach run is already under way")
        self._thread = threading.Thread(target=self._run, args=(config, base, cases, out), name="teach", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.progress.emit(done, total)
        if done == total:
            self.fitting.emit()

    def _run(self, config: DeviceConfig, base: Path, cases: Path, out: Path) -> None:
        try:
            classifier = load_classifier(with_model(config, base, threads=1), base)  # a core stays free for the UI
            adaptation, bundle = site_adapt.run(classifier, cases, out, options=AnalysisOptions.from_config(config), progress=self._progress)
        except site_adapt.SiteAdaptError as exc:
            shutil.rmtree(out, ignore_errors=True)
            self.finished.emit(TeachFailure(str(exc), refused=True))
            return
        except Exception as exc:  # BundleError, SiteCheckError, an unreadable teach folder: shown, never fatal
            log.exception("teach run failed")
            shutil.rmtree(out, ignore_errors=True)
            self.finished.emit(TeachFailure(f"{type(exc).__name__}: {exc}", refused=False))
            return
        self.finished.emit(TeachOutcome(adaptation, bundle))
