"""Peak RSS of ``device run --once`` on the largest frames the device accepts, against one ordinary frame.

    python -m bench.bench_large_frame [--model DIR]

Each case is its own ``python -m device run --source folder:... --headless --once`` process with the shipped
bundle (classify, outline, store), its peak RSS read from the child (``ru_maxrss`` of a fresh ``wait4``). The
cases are one frame each, just under the decode limit (``device/imageio.py`` MAX_DECODED_BYTES): a 16-bit grey
PNG, an 8-bit grey PNG and a 4K RGB PNG, made by scaling up a malignant BUSI image (so the outline model draws a
lesion) or, without the datasets, a demo frame. Printed: each peak, and its increment over the ordinary frame
(a 512 x 512 version of the same image). The device's goal is 250 MB in all. Figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


def source_image(scratch: Path) -> tuple[Image.Image, str]:
    """A grey ultrasound image with a lesion when the datasets are here, else a demo frame."""
    lesion = DATASETS / "busi" / "malignant" / "malignant (1).png"
    if lesion.is_file():
        return Image.open(lesion).convert("L"), str(lesion.relative_to(DATASETS))
    from device.demo import write_demo_frames

    (path,) = write_demo_frames(scratch / "demo", count=1)
    return Image.open(path).convert("L"), "demo frame"


def cases(image: Image.Image, limit: int) -> dict[str, Image.Image]:
    """One frame per case, each just under ``limit`` bytes of decoded pixels."""
    grey16_side = int((limit // 2) ** 0.5)
    grey8_side = int(limit**0.5) - 1
    big16 = np.asarray(image.resize((grey16_side, grey16_side), Image.Resampling.BICUBIC), dtype=np.uint16) * 16  # 12-bit
    return {
        "ordinary 512 x 512 grey": image.resize((512, 512), Image.Resampling.BICUBIC),
        f"16-bit grey {grey16_side} x {grey16_side}": Image.fromarray(big16),
        f"8-bit grey {grey8_side} x {grey8_side}": image.resize((grey8_side, grey8_side), Image.Resampling.BICUBIC),
        "RGB 3840 x 2160": image.resize((3840, 2160), Image.Resampling.BICUBIC).convert("RGB"),
    }


def peak_rss_mb(model: Path, frame: Image.Image, scratch: Path) -> tuple[float, str]:
    """Peak RSS of one ``device run --once`` over a folder holding ``frame``, and its last line of output."""
    folder = scratch / "frames"
    folder.mkdir(parents=True)
    frame.save(folder / "frame.png")
    config = scratch / "device.toml"
    config.write_text(f'[device]\ndata_dir = "{scratch / "data"}"\n[model]\npath = "{model}"\n')
    with open(scratch / "stdout", "w") as out, open(scratch / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "--config", str(config), "run", "--source", f"folder:{folder}", "--once", "--headless"],
            cwd=REPO,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak (RUSAGE_CHILDREN keeps the largest so far)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"device run failed: {(scratch / 'stderr').read_text()[-2000:]}")
    output = (scratch / "stdout").read_text() + (scratch / "stderr").read_text()
    lines = [line for line in output.splitlines() if line.startswith("[folder:")]
    return usage.ru_maxrss / 1024.0, (lines[-1] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "sonopi-lite0")
    args = parser.parse_args()
    from device.imageio import MAX_DECODED_BYTES

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        image, origin = source_image(scratch)
        print(f"model: {args.model}; frames scaled from {origin}; decode limit {MAX_DECODED_BYTES / 2**20:.0f} MiB")
        baseline = None
        for n, (name, frame) in enumerate(cases(image, MAX_DECODED_BYTES).items()):
            peak, line = peak_rss_mb(args.model, frame, scratch / f"case-{n}")
            baseline = peak if baseline is None else baseline
            print(f"{name:28s} peak RSS {peak:6.1f} MB   +{peak - baseline:5.1f} MB over the ordinary frame   {line.split(' — ', 1)[-1]}")
        print("goal: <= 250 MB")


if __name__ == "__main__":
    main()
