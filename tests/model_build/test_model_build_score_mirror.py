"""``python -m model_build score --mirror`` (model_build.operating_modes.score_sources): mirror averaging measured on
a source, with the shipped real int8 bundle (the tiny test model is nearly blind to such images). Proves the mirror
is the left-right one: an image and its left-right mirror get the same averaged probabilities (they differ without
``--mirror``), while an image and its up-down flip do not."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from device.model.bundle import load_bundle
from model_build.operating_modes import score_sources


def _source(root: Path, size: int) -> Path:
    """Class folders with asymmetric grey images that fill the frame, each with its left-right and up-down mirror."""
    rng = np.random.default_rng(7)
    for label in ("normal", "benign", "malignant"):
        folder = root / "src" / label
        folder.mkdir(parents=True)
        for i in range(2):
            image = (120 + 60 * rng.random((size, size))).astype(np.uint8)
            image[: size // 2, : size // 3] = 250  # a bright block in one corner: no symmetry either way
            Image.fromarray(image).save(folder / f"{i}-a.png")
            Image.fromarray(image[:, ::-1]).save(folder / f"{i}-lr.png")
            Image.fromarray(image[::-1, :]).save(folder / f"{i}-ud.png")
    return root / "src"


def _probabilities(path: Path) -> dict[str, np.ndarray]:
    with path.open(encoding="utf-8") as fh:
        return {
            f"{r['label']}/{Path(r['file']).name}": np.array([float(r[k]) for k in ("p_normal", "p_benign", "p_malignant")])
            for r in csv.DictReader(fh)
        }


def test_mirror_averaging_is_left_right(shipped_bundle_dir: Path, tmp_path: Path) -> None:
    size = load_bundle(shipped_bundle_dir).manifest.input.width  # no resampling: the mirror is exact
    source = _source(tmp_path, size)
    plain = _probabilities(score_sources(shipped_bundle_dir, [source], tmp_path / "plain"))
    mirrored = _probabilities(score_sources(shipped_bundle_dir, [source], tmp_path / "mirror", mirror=True))
    assert len(plain) == len(mirrored) == 18
    for label, i in itertools.product(("normal", "benign", "malignant"), range(2)):
        a, lr, ud = f"{label}/{i}-a.png", f"{label}/{i}-lr.png", f"{label}/{i}-ud.png"
        assert not np.allclose(plain[a], plain[lr], atol=1e-4)  # the model itself is not mirror-symmetric
        assert np.allclose(mirrored[a], mirrored[lr], atol=1e-6)
        assert np.allclose(mirrored[a], (plain[a] + plain[lr]) / 2, atol=1e-5)
        assert not np.allclose(mirrored[a], mirrored[ud], atol=1e-4)
