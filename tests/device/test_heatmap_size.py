"""The heat map of a big crop is at most ``HEATMAP_MAX_SIDE`` long, so asking for it costs no crop-sized floats.

The heat map came from a 7 x 7 class-activation map resized to the crop: on a 5015 x 5015 frame the float resize,
its scaling and clipping took the classifier to 436 MB and the touchscreen's overlay (colour, alpha, RGBA at the
same size) to 483 MB, against the device's 250 MB. The touchscreen draws the map scaled into the crop's box, so it
needs no more pixels than the screen. Here, with the tiny real bundle: a crop up to the limit still gets a map its
own size (the values as before), a 4000 x 3000 and a 5000 x 5000 crop get one 1024 px long with the crop's aspect,
holding the same heat as the full-size map (its peak and its mean within a grey level); and classifying a 5000 x
5000 frame with the heat map raises a fresh process's high-water mark by less than twice the frame's bytes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.engine import HEATMAP_MAX_SIDE, Classifier
from tests.mqtt_broker import REPO


def _bright(rows: int, columns: int) -> np.ndarray:
    """A bright speckled frame: the tiny bundle calls it suspicious, so it gets a heat map."""
    rng = np.random.default_rng(1)
    small = np.clip(200 + rng.normal(0, 15, (120, 160)), 0, 255).astype(np.uint8)
    small[30:60, 100:130] = 250
    return cv2.resize(small, (columns, rows), interpolation=cv2.INTER_NEAREST)


@pytest.fixture()
def classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, threads=1)


def test_a_crop_up_to_the_limit_gets_a_map_its_own_size(classifier: Classifier) -> None:
    frame = _bright(600, HEATMAP_MAX_SIDE)
    result = classifier.classify(frame, auto_crop=False, heatmap=True)
    assert result.category == "suspicious", result.probabilities
    assert result.heatmap is not None and result.heatmap.shape == frame.shape


@pytest.mark.parametrize(("rows", "columns", "shape"), [(3000, 4000, (768, 1024)), (5000, 5000, (1024, 1024))])
def test_a_big_crop_gets_a_map_1024_long_with_the_same_heat(
    classifier: Classifier, monkeypatch: pytest.MonkeyPatch, rows: int, columns: int, shape: tuple[int, int]
) -> None:
    frame = _bright(rows, columns)
    result = classifier.classify(frame, auto_crop=False, heatmap=True)
    assert result.category == "suspicious", result.probabilities
    assert result.heatmap is not None and result.heatmap.shape == shape and result.heatmap.dtype == np.uint8
    # the same frame's map at the crop's size: the engine's own rule with the cap lifted
    monkeypatch.setattr("device.engine.HEATMAP_MAX_SIDE", 10**6)
    full = classifier.classify(frame, auto_crop=False, heatmap=True).heatmap
    assert full is not None and full.shape == (rows, columns)
    assert abs(int(result.heatmap.max()) - int(full.max())) <= 1
    assert abs(float(result.heatmap.mean()) - float(full.mean())) < 1.0


_HEAT_PEAK = """
import sys
import cv2
import numpy as np
from device.engine import Classifier
from device.model.bundle import load_bundle
from tests.device.test_heatmap_size import _bright

def hwm():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]) * 1024

classifier = Classifier(load_bundle(sys.argv[1]), threads=1)
classifier.classify(_bright(200, 300), auto_crop=False, heatmap=True)  # warm: tensors allocated
frame = _bright(5000, 5000)
before = hwm()
result = classifier.classify(frame, auto_crop=False, heatmap=True)
print(hwm() - before, result.category, *result.heatmap.shape)
"""


def test_classifying_a_5000_px_frame_with_its_heat_map_takes_under_twice_the_frame(tiny_bundle_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _HEAT_PEAK, str(tiny_bundle_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, category, *shape = done.stdout.split()
    assert category == "suspicious" and [int(v) for v in shape] == [1024, 1024]
    frame_bytes = 5000 * 5000
    assert int(grown) < 2 * frame_bytes, f"classify with a heat map raised the high-water mark by {int(grown) / 2**20:.0f} MiB"
