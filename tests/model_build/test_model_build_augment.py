"""The training augmentation (model_build/augment.py) on any image size it may meet: sonographer marks drawn on
images from 32 px up (a 64-px segmentation smoke build crashed in ``draw_marks``: ``integers(12, h // 5)`` with
low >= high below 65 px), the output keeps the input's shape and dtype, and a seeded generator repeats itself."""

from __future__ import annotations

import numpy as np
import pytest

from model_build.augment import augment, draw_marks


@pytest.mark.parametrize("size", [32, 48, 64, 65, 96, 224])
def test_marks_and_augment_on_small_and_large_images(size: int) -> None:
    image = np.full((size, size), 90, np.uint8)
    for seed in range(40):  # every mark kind, several times
        marked = draw_marks(image, np.random.default_rng(seed))
        assert marked.shape == image.shape and marked.dtype == np.uint8
    out = augment(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8


def test_seeded_augmentation_repeats() -> None:
    image = (np.arange(224 * 224) % 251).astype(np.uint8).reshape(224, 224)
    assert np.array_equal(augment(image, np.random.default_rng(3)), augment(image, np.random.default_rng(3)))
