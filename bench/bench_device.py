"""Device core benchmark: compute path vs bare invoke, decode and durable-store times, throughput, peak RSS.

    python -m bench.bench_device [--model DIR] [--frames N] [--threads T]

Figures are printed; record them in docs/performance.md. The compute path is
crop -> quality -> preprocess -> invoke -> postprocess on a frame already in memory (classification alone); it is
compared with bare ``interpreter.invoke()`` of the same model, same thread count, same run. A bundle with a
segmentation model (the shipped one) adds ``path + outline``, the analysis ``device run`` does, interleaved with it.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def frame_files(count: int, scratch: Path) -> list[Path]:
    """Real images from the shared datasets when present (BUS-BRA then BUSI), else synthetic screens."""
    from device.demo import write_demo_frames
    from device.sources.files import list_inputs

    files: list[Path] = []
    for folder in (DATASETS / "bus-bra" / "images", DATASETS / "busi" / "benign", DATASETS / "busi" / "malignant"):
        if folder.is_dir():
            files += list_inputs(folder)
    if len(files) < count:
        files += write_demo_frames(scratch / "demo", count - len(files))
    return files[:count]


def bench_compute(model: Path, threads: int, frames: list[np.ndarray], repeats: int) -> dict[str, float]:
    from device.engine import Classifier
    from device.model.bundle import load_bundle

    classifier = Classifier(load_bundle(model), threads=threads)
    interpreter = classifier.runner.interpreter
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], dtype=details["dtype"]))
    outlines = classifier.segmenter is not None
    for _ in range(10):
        interpreter.invoke()
        classifier.classify(frames[0])
    bare, path, outlined = [], [], []
    for i in range(repeats):  # interleaved so all see the same machine state
        bare += timed(interpreter.invoke, 1)
        frame = frames[i % len(frames)]
        path += timed(lambda: classifier.classify(frame, outline=False), 1)  # classification alone
        if outlines:
            outlined += timed(lambda: classifier.classify(frame), 1)  # what `device run` does: with the outline
    figures = {
        "runtime": classifier.runtime,
        "bare_p50": percentile(bare, 50),
        "bare_p95": percentile(bare, 95),
        "path_p50": percentile(path, 50),
        "path_p95": percentile(path, 95),
    }
    if outlines:
        figures.update(outline_p50=percentile(outlined, 50), outline_p95=percentile(outlined, 95))
    return figures


def bench_prepare(model: Path, frames: list[np.ndarray], repeats: int) -> dict[str, float]:
    """``preprocess.prepare`` alone with the bundle's spec, platform-exact vs OpenCV resampling, interleaved."""
    import dataclasses

    from device.model.bundle import Resampling, load_bundle
    from device.model.preprocess import prepare
    from device.selftest import synthetic_suite

    spec = load_bundle(model).manifest.input
    specs = {r: dataclasses.replace(spec, resampling=r.value) for r in Resampling}
    times: dict[Resampling, list[float]] = {r: [] for r in Resampling}
    for i in range(repeats):
        frame = frames[i % len(frames)]
        for r in Resampling:
            times[r] += timed(lambda: prepare(frame, specs[r]), 1)
    capture = next(frame for name, frame, _ in synthetic_suite() if name == "capture-1080p-colour")  # a capture card's frame
    hd = {r: timed(lambda: prepare(capture, specs[r]), 30) for r in Resampling}
    return {
        f"{r.value}_{k}": v
        for r in Resampling
        for k, v in (("p50", percentile(times[r], 50)), ("p95", percentile(times[r], 95)), ("hd_p50", percentile(hd[r], 50)))
    }


def bench_decode_and_store(model: Path, files: list[Path], scratch: Path) -> dict[str, float]:
    from device.analysis import Analyzer
    from device.config import parse_config
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.model.bundle import load_bundle
    from device.sources.base import Frame
    from device.store import ResultStore

    decode = []
    images = []
    for path in files[:200]:
        start = time.perf_counter()
        images.append(decode_image_file(path))
        decode.append((time.perf_counter() - start) * 1000.0)
    config = parse_config({"device": {"data_dir": str(scratch / "data")}, "model": {"path": str(model)}})
    classifier = Classifier(load_bundle(model), threads=config.model.threads)
    store_ms = []
    with ResultStore(config.store_path) as store:
        analyzer = Analyzer(config, classifier, store)
        results = [(Frame(img, str(p), i), classifier.classify(img)) for i, (img, p) in enumerate(zip(images, files))]
        start_all = time.perf_counter()
        for frame, result in results:
            start = time.perf_counter()
            analyzer.record_unattended(frame, result)
            store_ms.append((time.perf_counter() - start) * 1000.0)
        total_s = time.perf_counter() - start_all
    return {
        "decode_p50": percentile(decode, 50),
        "decode_p95": percentile(decode, 95),
        "store_p50": percentile(store_ms, 50),
        "store_p95": percentile(store_ms, 95),
        "stored_per_s": len(results) / total_s,
    }


def bench_run_process(model: Path, files: list[Path], scratch: Path) -> dict[str, float]:
    folder = scratch / "run-frames"
    folder.mkdir()
    for i, path in enumerate(files):
        (folder / f"{i:05d}{path.suffix}").symlink_to(path.resolve())
    config = scratch / "device.toml"
    config.write_text(f'[device]\ndata_dir = "{scratch / "run-data"}"\n[model]\npath = "{model}"\n')
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "device", "--config", str(config), "run", "--source", f"folder:{folder}", "--once", "--headless"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"device run failed: {proc.stderr[-2000:]}")
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"frames": len(files), "wall_s": wall, "frames_per_s": len(files) / wall, "peak_rss_mb": peak_rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "sonopi-lite0")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    from device.model.bundle import load_bundle

    manifest = load_bundle(args.model).manifest
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print(f"model: {manifest.name} {manifest.version} ({args.model}), input {manifest.input.width}x{manifest.input.height}, threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        files = frame_files(args.frames, scratch)
        from device.imageio import decode_image_file

        frames = [decode_image_file(p) for p in files[:50]]
        compute = bench_compute(args.model, args.threads, frames, args.repeats)
        print(f"runtime: {compute['runtime']}")
        print(f"bare invoke       p50 {compute['bare_p50']:7.2f} ms   p95 {compute['bare_p95']:7.2f} ms")
        print(f"compute path      p50 {compute['path_p50']:7.2f} ms   p95 {compute['path_p95']:7.2f} ms")
        print(f"ratio path/bare   p50 {compute['path_p50'] / compute['bare_p50']:7.3f}   (goal <= 1.25)")
        if "outline_p50" in compute:
            print(f"path + outline    p50 {compute['outline_p50']:7.2f} ms   p95 {compute['outline_p95']:7.2f} ms")
            print(f"ratio +outline/path p50 {compute['outline_p50'] / compute['path_p50']:5.2f}   (issue 16's goal <= 2.5)")
        prep = bench_prepare(args.model, frames, args.repeats)
        for kind in ("exact", "opencv"):
            print(
                f"prepare {kind:9s} p50 {prep[f'{kind}_p50']:7.2f} ms   p95 {prep[f'{kind}_p95']:7.2f} ms   "
                f"1080p capture p50 {prep[f'{kind}_hd_p50']:6.2f} ms"
            )
        print(
            f"ratio exact/opencv p50 {prep['exact_p50'] / prep['opencv_p50']:6.2f}   1080p {prep['exact_hd_p50'] / prep['opencv_hd_p50']:.2f}"
            "   (opencv: format-1 bundles only; not the same pixels on aarch64)"
        )
        store = bench_decode_and_store(args.model, files, scratch)
        print(f"decode file       p50 {store['decode_p50']:7.2f} ms   p95 {store['decode_p95']:7.2f} ms")
        print(f"durable store     p50 {store['store_p50']:7.2f} ms   p95 {store['store_p95']:7.2f} ms  (thumbnail + frame PNG + fsync'd commit)")
        print(f"results durably stored per second: {store['stored_per_s']:.0f}")
        run = bench_run_process(args.model, files, scratch)
        print(
            f"`device run --once` on {run['frames']} frames: {run['wall_s']:.1f} s, {run['frames_per_s']:.1f} frames/s "
            f"(decode + classify + store), peak RSS {run['peak_rss_mb']:.0f} MB (goal <= 250)"
        )
        print(f"frames from: {'shared datasets' if DATASETS.is_dir() else 'synthetic screens'}")


if __name__ == "__main__":
    main()
