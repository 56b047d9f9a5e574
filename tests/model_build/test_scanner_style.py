"""The scanner-style augmentation (model_build/augment.py, ``--style-aug``): each part changes what a vendor's
processing changes and nothing else — the grey map is monotone and keeps black and white, the depth gain scales
whole rows by a smooth factor within its range, resampling coarsens the speckle grain, black surroundings stay
black through every part — and the build's flag refuses a share outside 0..1, naming it; the outline model's
`segment` takes the flag too, its masks untouched by the style."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model_build.__main__ import _parser
from model_build.augment import AugmentConfig, augment, depth_gain, grey_map, resample, scanner_style


def _speckle_image(size: int = 224, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(20.0, 235.0, size=(size, size)).astype(np.float32)


@pytest.mark.parametrize("seed", range(20))
def test_grey_map_is_monotone_and_keeps_black_and_white(seed: int) -> None:
    ramp = np.linspace(0.0, 255.0, 256, dtype=np.float32)
    mapped = grey_map(ramp, np.random.default_rng(seed))
    assert np.all(np.diff(mapped) >= 0)
    assert mapped[0] == pytest.approx(0.0) and mapped[-1] == pytest.approx(255.0, abs=1e-3)


@pytest.mark.parametrize("seed", range(20))
def test_depth_gain_scales_whole_rows_smoothly(seed: int) -> None:
    image = _speckle_image(seed=seed)
    ratio = depth_gain(image, np.random.default_rng(seed)) / image
    per_row = ratio[:, 0]
    assert np.allclose(ratio, per_row[:, None], rtol=1e-5)  # one gain per depth
    assert np.all((per_row > np.exp(-0.56)) & (per_row < np.exp(0.56)))  # slope ±0.25 plus bump ±0.3 at most
    assert np.max(np.abs(np.diff(np.log(per_row)))) < 0.02  # smooth: no step between neighbouring rows


def test_resampling_coarsens_the_speckle_grain() -> None:
    image = _speckle_image()
    out = resample(image, np.random.default_rng(1))
    assert out.shape == image.shape
    detail_in = np.abs(np.diff(image, axis=1)).mean()
    detail_out = np.abs(np.diff(out, axis=1)).mean()
    assert detail_out < 0.6 * detail_in


@pytest.mark.parametrize("seed", range(30))
def test_black_surroundings_stay_black(seed: int) -> None:
    image = np.zeros((224, 224), np.float32)
    image[:, 40:184] = _speckle_image(seed=seed)[:, 40:184]
    out = scanner_style(image, np.random.default_rng(seed))
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.all(out[:, :30] < 1.0) and np.all(out[:, 194:] < 1.0)  # a band 10 px clear of the tissue's edge


def test_style_share_is_applied_only_when_asked() -> None:
    image = _speckle_image().astype(np.uint8)
    plain = AugmentConfig(flip=0.0, speckle_p=0.0, blur_p=0.0, marks_p=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0), max_translate=0.0)
    styled = dataclasses.replace(plain, style_p=1.0)
    differs = [
        not np.array_equal(augment(image, np.random.default_rng(s), plain), augment(image, np.random.default_rng(s), styled)) for s in range(10)
    ]
    assert sum(differs) >= 8  # each of the four parts is drawn with probability 1/2: all four skipped in 1 of 16


@pytest.mark.parametrize("value", ["-0.1", "1.5", "lots"])
def test_build_refuses_a_style_share_outside_0_to_1(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["build", "--data", "d", "--out", "o", "--style-aug", value])
    assert "--style-aug" in capsys.readouterr().err


def test_build_takes_a_style_share() -> None:
    args = _parser().parse_args(["build", "--data", "d", "--out", "o", "--style-aug", "0.5"])
    assert args.style_aug == 0.5


def test_segmentation_takes_a_style_share_and_leaves_the_mask_alone() -> None:
    from model_build.segmentation import augment_pair

    args = _parser().parse_args(["segment", "--data", "d", "--out", "o", "--style-aug", "1"])
    assert args.style_aug == 1.0
    image = _speckle_image().astype(np.uint8)
    mask = np.zeros(image.shape, np.uint8)
    mask[80:140, 60:120] = 1
    geometry_off = AugmentConfig(flip=0.0, max_rotate_deg=0.0, scale_range=(1.0, 1.0), max_translate=0.0, style_p=1.0)
    for seed in range(10):
        _, out_mask = augment_pair(image, mask, np.random.default_rng(seed), geometry_off)
        assert np.array_equal(out_mask, mask)
