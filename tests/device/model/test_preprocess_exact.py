"""Platform-exact preprocessing: what the Pi feeds the model is, pixel for pixel, what the workstation
validated.

Proves that ``device.model.resample`` is an area filter when shrinking and a linear one when growing (within
one grey level of OpenCV's, far from the aliasing of plain bilinear), that a flat image stays flat,
that the grey conversion keeps this workstation's figures, and — with checksums pinned here — that the
prepared pixels of a synthetic suite and of real images cannot change without this file failing: a
platform, OpenCV or numpy release, or a code change that alters one pixel is caught. ``device
selftest`` checks the same synthetic checksum on the device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.imageio import decode_image_file, to_grey
from device.model import resample
from device.model.bundle import InputSpec, Resampling
from device.model.preprocess import prepare
from device.selftest import (
    PREPROCESSING_CHECKSUM,
    preprocessing_checksum,
)

SHIPPED_SPEC = InputSpec(height=288, width=288)  # models/sonopi-lite0: 288 px, letterbox, grey3, exact

# sha256 of (crop box, prepared pixels) with SHIPPED_SPEC and auto-crop: recompute only for a deliberate change
# of the preprocessing, and then re-validate the shipped bundle (python -m model_build revalidate).
REAL_IMAGE_CHECKSUMS = (
    ("busi/normal/normal (1).png", "9f11a975a4af3d5d7ba38ab1838c7f3d4b9d2687ba7ee5e22706a84f287ee524"),  # 256x256
    ("busi/normal/normal (10).png", "629625cff00a76dce6c29eecbfe4e24e15a693055ac88bdd8c982fda06cd8f46"),  # 256x256
    ("busi/benign/benign (10).png", "91fdcc95edfa1cd729c609a536de39e2dc8517a80d39fbedcf35f7e8ce99366b"),  # 256x256
    ("busi/benign/benign (100).png", "2a652b6a6be9fbad14722abea4394b279474abb687e135c0b897c013e7c2e604"),  # 256x256
    ("busi/benign/benign (101).png", "bb1bc3e9da110000f2d909d06eb0e2aeb5f5e7b4c720003bf482013349a17a04"),  # 256x256
    ("busi/malignant/malignant (1).png", "92ee60443177ba91bc621a50cdee057654c5a30261e2f60484baca1603844167"),  # 256x256
    ("busi/malignant/malignant (10).png", "8b01147996ffec5ddebe29404a958ad7f198688975cb89378007dbc90b8d4516"),  # 256x256
    ("busi/malignant/malignant (100).png", "799bbf6748d38fc790d867bca8557dba9c47e69c8df42a73ca036177b23a5ab2"),  # 256x256
    ("bus-bra/images/bus_0001-l.png", "ef56077dce3b633d8161860b6bd2eab5f026a8144d956a49dd7a4ab9aef5dd55"),  # 274x353
    ("bus-bra/images/bus_0001-r.png", "b7df0a0dabad12d7f7ff1569b151b0ef55520c40e0531091a94a01bc18144942"),  # 275x353
    ("bus-bra/images/bus_0002-l.png", "b11cfbbff2435665080ecdcfa7078cd222c5163ea867e801a469bdf0ba0e4001"),  # 274x371
    ("bus-bra/images/bus_0002-r.png", "12a630f8875aa524e79b683decb71fa8b3034d4b3e1a2577e6599a82b49044f0"),  # 276x371
    ("bus-bra/images/bus_0003-l.png", "512e8ff3bfb89f8d83269a5b2454463b4ff383a27dc6b47c3e1dfe45b8ad6b3a"),  # 275x372
    ("bus-bra/images/bus_0003-r.png", "9ada3100a6356a2e12b98548f8d132c9fbca4ef7c922c896402beccc7653ea21"),  # 274x372
    ("bus-bra/images/bus_0006-s.png", "61661468817e852c7ceca3773cedd87eaaa60344fde05fb4070e5540cbe0dd49"),  # 407x389
    ("bus-bra/images/bus_0007-l.png", "0623b646ae6de8e53b23566ac38f6fa8b6c78933261bd11e40ec8ecc041a8913"),  # 274x351
    ("breast-lesions-usg/images/case001.png", "0a38a9c811229832a4189efc99fa542c522fd9d00c48ebe85134bb3c4f8f087c"),  # 485x537
    ("breast-lesions-usg/images/case002.png", "801c96d498adb5d48c252957cc1f8cc82efb9046c2f961d74102e4427a43f240"),  # 761x572
    ("breast-lesions-usg/images/case003.png", "e4e875181852c3422edd243271eefa14b70a1b1831526c2c1f38144532f8b379"),  # 545x532
    ("breast-lesions-usg/images/case004.png", "4ab410fe21eb328cde4b216854e32722ede6b2d3b0dd8c021f15dc531cf93b7c"),  # 485x537
    ("breast-lesions-usg/images/case005.png", "a3ae7d6f021b087c9135a8db54f142713f6e62cb0c5cfc767e8a5ab0ca8754fd"),  # 831x538
    ("breast-lesions-usg/images/case006.png", "03ce2efc5283f54e6ae680be62163661ffd009202fd8fc9c9ee75014fff2eb4a"),  # 485x537
)


def _digest(prepared) -> str:
    return hashlib.sha256(np.asarray(prepared.crop.as_tuple(), dtype="<i8").tobytes() + prepared.pixels.tobytes()).hexdigest()


# --- the resampler ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(1, 400), st.integers(1, 400), st.integers(0, 255))
def test_a_flat_image_stays_flat_at_any_size(src_h: int, src_w: int, height: int, width: int, level: int) -> None:
    """The fixed-point weights of every output pixel sum to exactly one: no drift in brightness, no overflow."""
    out = resample.resize(np.full((src_h, src_w), level, dtype=np.uint8), width, height)
    assert out.shape == (height, width) and out.dtype == np.uint8
    assert np.all(out == level)


@pytest.mark.parametrize(("source", "target"), [(1000, 288), (353, 288), (256, 288), (7, 3), (3, 7), (288, 288)])
def test_axis_weights_sum_to_one_in_fixed_point(source: int, target: int) -> None:
    weights = resample.axis_weights(source, target)
    assert np.all(weights.weights.sum(axis=1) == 1 << resample.WEIGHT_BITS)
    assert weights.index.min() >= 0 and weights.index.max() < source


def _scan_like(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    speckle = rng.rayleigh(40.0, size=shape)
    return cv2.GaussianBlur(np.clip(speckle, 0, 255).astype(np.uint8), (3, 3), 0)


@pytest.mark.parametrize(("shape", "size"), [((353, 274), (288, 224)), ((1080, 1440), (216, 288)), ((600, 900), (192, 288))])
def test_shrinking_is_an_area_filter(shape: tuple[int, int], size: tuple[int, int]) -> None:
    """Within one grey level of OpenCV's INTER_AREA; plain bilinear (INTER_LINEAR_EXACT) aliases speckle far more."""
    image = _scan_like(1, shape)
    height, width = size
    ours = resample.resize(image, width, height).astype(int)
    area = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).astype(int)
    bilinear = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR_EXACT).astype(int)
    assert np.abs(ours - area).max() <= 1
    assert np.abs(bilinear - area).mean() > 10 * max(np.abs(ours - area).mean(), 1e-3)


def test_growing_is_linear_interpolation() -> None:
    image = _scan_like(2, (256, 256))
    ours = resample.resize(image, 288, 288).astype(int)
    linear = cv2.resize(image, (288, 288), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.abs(ours - linear).max() <= 1


def test_only_grey_uint8_images_are_resampled() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        resample.resize(np.zeros((4, 4, 3), dtype=np.uint8), 2, 2)
    with pytest.raises(ValueError, match="2-D uint8"):
        resample.resize(np.zeros((4, 4), dtype=np.float32), 2, 2)


# --- grey conversion ----------------------------------------------------------------------------------------


def test_grey_conversion_is_bt601_and_keeps_grey_pixels() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    reference = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(to_grey(rgb).astype(float) - reference).max() <= 1.0
    grey = np.random.default_rng(4).integers(0, 256, (32, 32), dtype=np.uint8)
    assert np.array_equal(to_grey(np.repeat(grey[:, :, None], 3, axis=2)), grey)


@pytest.mark.skipif(int(cv2.__version__.split(".")[0]) < 5, reason=f"OpenCV {cv2.__version__}: 4.x used 14-bit weights")
def test_grey_conversion_equals_the_workstations_opencv() -> None:
    """The integer weights are OpenCV 5's on x86, so colour frames scored on a workstation keep their figures."""
    rgb = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert np.array_equal(to_grey(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


# --- pinned checksums ---------------------------------------------------------------------------------------


def test_synthetic_suite_checksum_is_pinned() -> None:
    """The value `device selftest` compares on the Pi: generated by integer arithmetic, so only the
    preprocessing can change it."""
    assert preprocessing_checksum() == PREPROCESSING_CHECKSUM


def test_the_checksum_sees_opencv_resampling() -> None:
    """Format-1 (OpenCV) resampling prepares other pixels: the same checksum, computed the same way, differs."""
    assert preprocessing_checksum(Resampling.OPENCV) != PREPROCESSING_CHECKSUM


@pytest.mark.data
def test_real_images_prepare_to_pinned_pixels(datasets: Path) -> None:
    """BUSI (256 px, grown), BUS-BRA and BrEaST-Lesions-USG (shrunk, auto-cropped) through the shipped spec."""
    changed = [name for name, expected in REAL_IMAGE_CHECKSUMS if _digest(prepare(decode_image_file(datasets / name), SHIPPED_SPEC)) != expected]
    assert not changed, f"prepared pixels changed for {len(changed)} of {len(REAL_IMAGE_CHECKSUMS)} images: {changed}"
