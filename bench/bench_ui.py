"""UI benchmark (offscreen, real widgets): live-view frames per second while the model analyses the
stream back to back (live analysis on), and the time from tapping Analyse to the stored result on the
card. Prints figures; asserts nothing.

    python -m bench.bench_ui [--seconds 10] [--taps 10] [--model DIR] [--size 800x480]

Source: a replayed capture card (frames decoded up front, delivered at --source-fps like a USB
capture card), so the figure measures the UI and the model, not PNG decoding. Model: models/sonopi-lite0
when present, else the tiny test bundle (built with TensorFlow).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5.QtWidgets import QApplication

from device.sources.base import Frame, FrameSource
from device.sources.files import folder_source
from ui.app import build_window, parse_size, start
from ui.screenshots import prepare_frames, prepare_model, screenshot_config, spin, spin_until

log = logging.getLogger("bench.ui")


class ReplayCard(FrameSource):
    """A live source replaying decoded frames at a fixed rate (what a capture card does)."""

    finite = False

    def __init__(self, images: list, fps: float) -> None:
        super().__init__("replay")
        self.images, self.period, self.index = images, 1.0 / fps, 0
        self._next = time.monotonic()

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self) -> Frame | None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next + self.period, time.monotonic() - self.period)
        image = self.images[self.index % len(self.images)]
        self.index += 1
        return Frame(image, f"replay#{self.index}", self.index)


def build_stand_in(out: Path) -> Path:
    """An EfficientNet-B0-sized int8 model with RANDOM weights (224x224, 3 classes): it measures
    speed only, its outputs mean nothing. Cached in ``out``; built with TensorFlow (~1-2 min)."""
    if (out / "manifest.json").is_file():
        return out
    import keras
    import numpy as np

    from device.model.bundle import InputSpec, Manifest, OutputSpec, QualitySpec, write_bundle
    from model_build.export import convert_int8

    inp = keras.Input((224, 224, 3), dtype="float32", name="image")
    net = keras.applications.EfficientNetB0(weights=None, input_tensor=inp, classes=3, classifier_activation=None)
    representative = np.random.default_rng(0).uniform(0, 255, (8, 224, 224)).astype(np.float32)  # grey, like grey3 input
    model_bytes = convert_int8(net, representative)  # the shipped model's export: uint8 input, float output
    from ai_edge_litert.interpreter import Interpreter

    scores = Interpreter(model_content=model_bytes).get_output_details()[0]["name"]
    manifest = Manifest(
        name="bench-stand-in-b0",
        version="random-weights",
        created="2026-01-01T00:00:00Z",
        labels=("normal", "benign", "malignant"),
        input=InputSpec(height=224, width=224, dtype="uint8", color="grey3", resize="letterbox"),
        outputs=OutputSpec(scores=scores, scores_kind="logits"),
        model_sha256="0" * 64,
        thresholds={"malignant": 0.35},
        quality=QualitySpec(min_confidence=0.0),
        intended_use="Benchmark stand-in only: random weights.",
    )
    write_bundle(out, model_bytes, manifest)
    return out


def load_images(folder: Path) -> list:
    source = folder_source(folder)
    source.open()
    return [frame.image for frame in source]


def measure_live(window, seconds: float) -> dict[str, float]:
    live = window.live
    results = []
    window.services.analysis.live_result.connect(lambda outcome: results.append(outcome.classification.latency_ms))
    live.live_toggle.click()
    spin(1.0)  # warm up
    results.clear()
    reader = window.services.reader
    sent0, dropped0 = reader.sent, reader.dropped
    t0 = time.monotonic()
    frames_shown = 0
    last = live.view.frame
    while time.monotonic() - t0 < seconds:
        QApplication.instance().processEvents()
        if live.view.frame is not last:
            frames_shown += 1
            last = live.view.frame
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    live.live_toggle.click()
    return {
        "preview_fps": frames_shown / elapsed,
        "analyses_per_s": len(results) / elapsed,
        "model_latency_ms_median": statistics.median(results) if results else float("nan"),
        "reader_dropped": reader.dropped - dropped0,
        "reader_sent": reader.sent - sent0,
    }


def open_exam(window, patient: str, side: str) -> None:
    """Through the form, as a clinician does (the window refuses an exam it did not ask for): the ID on the
    keyboard, the side, Start, and *Start exam* in the readback."""
    window.nav["Exam"].click()
    form = window.exam.form
    form.field_buttons["patient"].click()
    keyboard = window.id_entry.keypad
    while keyboard.value:
        keyboard.keys["⌫"].click()
    for key in patient:
        keyboard.keys[key].click()
    keyboard.keys["OK"].click()
    form.side_buttons[side].click()
    form.start.click()
    window.confirm.accept_button.click()
    spin_until(lambda: window.session.exam is not None, 10, "the exam")


def measure_taps(window, taps: int) -> list[float]:
    live = window.live
    times = []
    done = []
    live.result_shown.connect(lambda outcome: done.append(time.perf_counter()))
    if window.session.exam is None:  # results are stored only under an open exam (docs/ui.md)
        open_exam(window, "BENCH01", "L")
    for _ in range(taps):
        live.set_frozen(False)
        spin(0.3)
        done.clear()
        tapped = time.perf_counter()
        live.analyse.click()
        spin_until(lambda: bool(done), 60, "the result card")
        times.append((done[0] - tapped) * 1000.0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--taps", type=int, default=10)
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--model", type=Path)
    parser.add_argument(
        "--stand-in",
        action="store_true",
        help="use an EfficientNet-B0-sized int8 model with random weights (cached in build/) for "
        "realistic compute load when the shipped model is absent",
    )
    parser.add_argument("--size", type=parse_size, default=(800, 480))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841  (kept alive for the run)
    with tempfile.TemporaryDirectory(prefix="sonopi-bench-") as tmp:
        work = Path(tmp)
        frames_dir = work / "frames"
        frames_from = prepare_frames(frames_dir)
        model = args.model
        if model is None and args.stand_in:
            model = build_stand_in(Path("build") / "bench-ui-stand-in")
        bundle = prepare_model(work, model)
        images = load_images(frames_dir)
        config = screenshot_config(work, bundle, frames_dir)
        window = build_window(config, args.size, opener=lambda spec: ReplayCard(images, args.source_fps))
        window.setFixedSize(*args.size)
        window.show()
        start(window)
        try:
            window.first_run.close_overlay()
            spin_until(lambda: window.live.live_toggle.isEnabled(), 120, "the model")
            spin_until(lambda: window.live.view.frame is not None, 20, "frames")
            manifest = window.services.analysis.manifest
            live = measure_live(window, args.seconds)
            taps = sorted(measure_taps(window, args.taps))
        finally:
            window.shutdown()
    print(f"model: {manifest.name} {manifest.version} ({bundle})")
    print(
        f"frames: {frames_from}, {len(images)} images replayed at {args.source_fps:.0f} fps; window {args.size[0]}x{args.size[1]}; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"live view while analysing back to back: {live['preview_fps']:.1f} fps shown "
        f"({live['reader_sent']} sent, {live['reader_dropped']} dropped by the reader because the view was busy)"
    )
    print(f"live analyses: {live['analyses_per_s']:.1f} per second, model latency median {live['model_latency_ms_median']:.1f} ms")
    print(
        f"tap Analyse -> stored result on the card ({len(taps)} taps): median {statistics.median(taps):.0f} ms, "
        f"min {taps[0]:.0f} ms, max {taps[-1]:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
