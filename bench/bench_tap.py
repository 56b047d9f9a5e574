"""Tap-a-lesion benchmark (offscreen, real widgets; issue 16): on a frozen frame with an exam open, the time from
the finger lifting off a lesion (which seeds the region and analyses it, docs/ui.md "Tap a lesion") to the stored
result with its outline on the card, against tapping *Analyse* (the whole scan region) in the same run, alternated
tap by tap so the machine's load weighs on both alike. Prints figures and their ratios; asserts nothing.

    python -m bench.bench_tap [--taps 15] [--size 800x480] [--model DIR] [--outline BUNDLE ...] [--no-tiny-outline]

Bundles, each in its own window: the first is --model (default models/sonopi-lite0, which carries its outline model,
else the tiny test bundle); a first bundle without a segmentation model is followed by the same packed with the tiny
test segmentation model (tests/device/tiny_segmentation.py: 48 px, one convolution — the UI's cost of an outline, not
a real model's); then each --outline BUNDLE (a bundle with a segmentation model, e.g. packed by
``python -m model_build pack-segmentation``). Frames: BUSI
images from ../shared/datasets when present, else synthetic screens; the first image whose tapped analysis is
conclusive is kept for every tap (an inconclusive one has no outline to time).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5.QtWidgets import QApplication

from bench.bench_device import percentile
from bench.bench_ui import open_exam
from device.model.bundle import load_bundle
from ui.app import parse_size
from ui.live_screen import LiveScreen
from ui.screenshots import open_window, prepare_frames, prepare_model, screenshot_config, spin, spin_until
from ui.tap_screenshots import tap

log = logging.getLogger("bench.bench_tap")


@dataclass
class Figures:
    bundle: str
    analyse_ms: list[float] = field(default_factory=list)
    tap_ms: list[float] = field(default_factory=list)
    outline_ms: list[float] = field(default_factory=list)  # the segmentation's own time inside each tapped analysis
    outlined: int = 0
    inconclusive: int = 0


def _wait_result(live: LiveScreen, act) -> tuple[float, object]:
    shown: list[object] = []
    done: list[float] = []

    def record(outcome: object) -> None:
        done.append(time.perf_counter())
        shown.append(outcome)

    live.result_shown.connect(record)
    try:
        started = time.perf_counter()
        act()
        spin_until(lambda: bool(done), 60, "the result card")
    finally:
        live.result_shown.disconnect(record)
    return (done[0] - started) * 1000.0, shown[0]


def _tap_lesion(live: LiveScreen) -> None:
    """A finger's tap on the middle of the scan region (where a lesion is on most frames)."""
    view = live.view
    region = view.seed_region()
    assert region is not None  # a frame is on screen
    tap(view, view.to_view(region).center())


def _fresh_freeze(live: LiveScreen) -> None:
    """Live again, a moment of frames, the region cleared, Freeze: the state a clinician taps a lesion in."""
    live.set_frozen(False)
    spin(0.2)
    live.view.set_roi(None)
    live.freeze.click()
    spin(0.05)


def _pick_conclusive_frame(live: LiveScreen, images: int) -> None:
    """Next ▶ until a tapped analysis of the image is conclusive (an outline to time), at most ``images`` times."""
    for _ in range(images):
        _fresh_freeze(live)
        _, outcome = _wait_result(live, lambda: _tap_lesion(live))
        if not outcome.classification.inconclusive:  # type: ignore[attr-defined]
            return
        live.set_frozen(False)
        before = live.view.frame.origin if live.view.frame else None
        live.reader.step()
        spin_until(lambda: live.view.frame is not None and live.view.frame.origin != before, 10, "the next image")
    log.warning("no image gave a conclusive tapped result: timing inconclusive ones (no outline)")


def measure(bundle: Path, frames: Path, work: Path, size: tuple[int, int], taps: int) -> Figures:
    window = open_window(screenshot_config(work, bundle, frames), size)
    try:
        spin_until(lambda: window.services.analysis.ready, 120, "the model")
        spin_until(lambda: window.live.view.frame is not None, 20, "frames")
        window.first_run.close_overlay()
        window.go("Live")
        manifest = window.services.analysis.manifest
        figures = Figures(f"{bundle.name}: {manifest.version}" if manifest else str(bundle))
        open_exam(window, "BENCH01", "L")
        live = window.live
        _pick_conclusive_frame(live, 8)
        for _ in range(taps):
            _fresh_freeze(live)
            ms, _ = _wait_result(live, live.analyse.click)  # the baseline: Analyse, no region
            figures.analyse_ms.append(ms)
            _fresh_freeze(live)
            ms, outcome = _wait_result(live, lambda: _tap_lesion(live))
            figures.tap_ms.append(ms)
            lesion = outcome.classification.lesion  # type: ignore[attr-defined]
            if outcome.classification.inconclusive:  # type: ignore[attr-defined]
                figures.inconclusive += 1
            elif lesion is not None:
                figures.outline_ms.append(lesion.latency_ms)
                figures.outlined += int(lesion.found)
        return figures
    finally:
        window.shutdown()
        window.deleteLater()
        QApplication.processEvents()


def report(all_figures: list[Figures]) -> None:
    base = statistics.median(all_figures[0].analyse_ms)
    print(
        f"{'bundle (directory: version)':<44} {'Analyse p50':>11} {'tap p50':>8} {'tap p95':>8} {'tap max':>8} {'tap/Analyse':>11} "
        f"{'tap/base':>8} {'outline p50':>11} {'outlined':>8}"
    )
    for f in all_figures:
        analyse, tap = statistics.median(f.analyse_ms), statistics.median(f.tap_ms)
        outline = f"{statistics.median(f.outline_ms):.1f}" if f.outline_ms else "-"
        print(
            f"{f.bundle[:44]:<44} {analyse:>9.1f}ms {tap:>6.1f}ms {percentile(f.tap_ms, 95):>6.1f}ms {max(f.tap_ms):>6.1f}ms "
            f"{tap / analyse:>11.2f} {tap / base:>8.2f} {outline:>9}ms {f.outlined:>4}/{len(f.tap_ms)}"
            + (f" ({f.inconclusive} inconclusive)" if f.inconclusive else "")
        )
    print("tap/base: against the first bundle's Analyse p50 in this run (no region)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--taps", type=int, default=15)
    parser.add_argument("--size", type=parse_size, default=(800, 480))
    parser.add_argument("--model", type=Path, help="the classifier bundle (default: models/sonopi-lite0, else the tiny test bundle)")
    parser.add_argument("--outline", type=Path, action="append", default=[], help="a bundle with a segmentation model (repeatable)")
    parser.add_argument("--no-tiny-outline", action="store_true", help="skip the classifier packed with the tiny test segmentation model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841  (kept alive for the run)
    with tempfile.TemporaryDirectory(prefix="sonopi-bench-tap-") as tmp:
        work = Path(tmp)
        frames = work / "usb" / "frames"
        frames_from = prepare_frames(frames)
        classifier = prepare_model(work, args.model)
        bundles = [classifier]
        if load_bundle(classifier).manifest.segmentation is not None:
            print(f"{classifier} carries its outline model: no tiny test segmentation packed onto it")
        elif not args.no_tiny_outline:
            from tests.device.tiny_segmentation import build_tiny_segmentation_bundle

            build_tiny_segmentation_bundle(work / "tiny-seg-bundle", classifier, work / "tiny-seg")
            bundles.append(work / "tiny-seg-bundle")
        bundles.extend(args.outline)
        all_figures = []
        for index, bundle in enumerate(bundles):
            all_figures.append(measure(bundle, frames, work / f"run-{index}", args.size, args.taps))
    print(f"frames: {frames_from}; window {args.size[0]}x{args.size[1]}; {args.taps} taps each; {os.cpu_count()} CPUs")
    report(all_figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
