"""Model benchmark: a bundle's per-frame path against another bundle's and against the seeds' way of serving.

    python -m bench.bench_model [--model DIR] [--baseline DIR] [--outline DIR] [--frames N] [--repeats N] [--keras-repeats N]

Per frame, in one run and interleaved so every path sees the same machine state:

* ``model``: ``device.engine.Classifier.classify`` of the bundle without the outline (prepare -> int8 invoke ->
  probabilities: classification alone);
* ``baseline``: the same for a second bundle (by default the shipped one — pass the previous release);
* ``+close-up``: the model's classification with a clinician's region (the centre quarter of the frame): the region
  and the scan region are both classified (device/close_up.py), no outline — what the live score does per frame with
  a region drawn;
* ``+outline`` (``--outline DIR``, a bundle with a segmentation model; by default ``--model`` itself when it has one,
  as the shipped bundle does): the same analysis with the lesion outline (device/outline.py); its
  ``p50 / model`` is the extra time per frame of the segmentation (issue 16's goal: <= 2.5x), and ``outline only``
  the segmentation's own time inside it;
* ``keras-b7``: how the systems this product grew from serve (Keras EfficientNet-B7 at 600 px, random
  weights, ``model.predict`` on one frame at a time, as the Mammascope paper's web app does).

Prints p50 / p95 milliseconds, the ratios against the model, bundle sizes and peak RSS. Record the figures
in docs/performance.md; no figure is asserted anywhere.
"""

from __future__ import annotations

import argparse
import functools
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from bench.bench_device import frame_files, percentile

REPO = Path(__file__).resolve().parents[1]


def _bundle_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix == ".tflite") / 1e6


def _keras_b7():
    import keras

    model = keras.applications.EfficientNetB7(weights=None, input_shape=(600, 600, 3))
    return lambda frame: model.predict(_to_600(frame), verbose=0)


def _to_600(frame: np.ndarray) -> np.ndarray:
    import cv2

    rgb = frame if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
    return cv2.resize(rgb[..., :3], (600, 600)).astype(np.float32)[None]


def _time(fn, frame) -> float:
    start = time.perf_counter()
    fn(frame)
    return (time.perf_counter() - start) * 1000.0


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from device.crop import Box
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.model.bundle import load_bundle

    p = argparse.ArgumentParser(prog="python -m bench.bench_model")
    p.add_argument("--model", type=Path, default=REPO / "models" / "sonopi-lite0")
    p.add_argument("--baseline", type=Path, default=REPO / "models" / "sonopi-lite0")
    p.add_argument("--outline", type=Path, help="a bundle with a segmentation model: analysis with the outline")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--keras-repeats", type=int, default=6, help="EfficientNet-B7 at 600 px takes seconds per frame")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        frames = [decode_image_file(f) for f in frame_files(args.frames, Path(scratch))]
    model = Classifier(load_bundle(args.model), threads=args.threads)
    baseline = Classifier(load_bundle(args.baseline), threads=args.threads)
    paths = {  # classification alone: a bundle's outline, when it has one, is timed by +outline
        "model": functools.partial(model.classify, outline=False),
        "baseline": functools.partial(baseline.classify, outline=False),
    }

    def with_close_up(frame):  # the live score with a region drawn: the region and the scan region, no outline
        h, w = frame.shape[:2]
        return model.classify(frame, close_up=Box(w // 4, h // 4, w // 2, h // 2), outline=False)

    paths["+close-up"] = with_close_up
    outline_bundle = args.outline if args.outline is not None else (args.model if model.segmenter is not None else None)
    outline_ms: list[float] = []
    outliner = None
    if outline_bundle is not None:
        # the shipped bundle carries its outline model: time it on the model's own interpreters, not a second copy
        outliner = model if outline_bundle == args.model else Classifier(load_bundle(outline_bundle), threads=args.threads)
        if outliner.segmenter is None:
            p.error(f"--outline {outline_bundle}: the bundle has no segmentation model")

        def with_outline(frame):
            result = outliner.classify(frame)
            outline_ms.append(result.lesion.latency_ms if result.lesion is not None else float("nan"))
            return result

        paths["+outline"] = with_outline
    for fn in paths.values():  # warm-up
        for frame in frames[:3]:
            fn(frame)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(args.repeats):
        for name, fn in paths.items():
            times[name].append(_time(fn, frames[i % len(frames)]))
    keras_fn = _keras_b7()
    keras_fn(frames[0])  # warm-up (graph tracing)
    times["keras-b7"] = []
    for i in range(args.keras_repeats):  # interleaved with the model so both see the same load
        times["keras-b7"].append(_time(keras_fn, frames[i % len(frames)]))
        times["model"].append(_time(paths["model"], frames[i % len(frames)]))

    print(f"machine: {platform.machine()} {platform.platform()}, python {platform.python_version()}, threads {args.threads}")
    print(f"model    {args.model} ({_bundle_mb(args.model):.2f} MB tflite)")
    print(f"baseline {args.baseline} ({_bundle_mb(args.baseline):.2f} MB tflite)")
    if outliner is not None:
        seg = outliner.manifest.segmentation
        assert seg is not None  # checked above
        print(
            f"+outline {outline_bundle} ({_bundle_mb(outline_bundle):.2f} MB tflite; segmentation input "
            f"{seg.input.width}x{seg.input.height}, classifier {outliner.manifest.input.width} px)"
        )
    p50 = {name: percentile(v, 50) for name, v in times.items()}
    print(f"{'path':10s} {'n':>4s} {'p50 ms':>9s} {'p95 ms':>9s} {'p50 / model':>12s}")
    for name, values in times.items():
        print(f"{name:10s} {len(values):4d} {p50[name]:9.1f} {percentile(values, 95):9.1f} {p50[name] / p50['model']:12.2f}")
    if outline_ms:
        measured = outline_ms[-args.repeats :]  # the timed calls, after the warm-up
        print(f"outline only (inside +outline): p50 {percentile(measured, 50):.1f} ms, p95 {percentile(measured, 95):.1f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (all three paths in one process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
