"""Lesion-removed images: a lesion scan with its lesion filled by the tissue beside it (model_build/lesion_removal.py).

Proves that the fill replaces the lesion, its margin and the column below it (posterior shadowing is a lesion
sign) and nothing else; that the breast's layers run through the filled band at their own depth; that the fill
keeps the tissue's speckle contrast rather than smoothing it; that a lesion too wide to fill, an empty mask, a
mask of another size and a sector scan (whose black surround would be mirrored into the tissue) give no image;
that a lesion-removed sample is labelled normal, keeps its image's patient, decodes with its lesion filled, is
only added when asked for, and is never scored (training only); on the real datasets, how many each gives and
that a share keeps that part of the same images whatever their order; and that the committed
study folds give the BUSI figure docs/model.md reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_build import lesion_removal as lr
from model_build.data import LoadedData, Sample, decode_sample, scan_source
from model_build.pipeline import _scored

H, W = 200, 300
LESION = (130, 60, 170, 100)  # x0, y0, x1, y1


def _layers(rng: np.random.Generator | None = None) -> np.ndarray:
    """Horizontal tissue layers: each band of 25 rows has its own grey level (plus speckle when ``rng``)."""
    rows = (60 + 20 * (np.arange(H) // 25)).astype(np.float32)
    img = np.repeat(rows[:, None], W, axis=1)
    if rng is not None:
        img = img * (1.0 + 0.2 * rng.standard_normal((H, W)).astype(np.float32))
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(box: tuple[int, int, int, int] = LESION, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def _with_lesion(img: np.ndarray, box: tuple[int, int, int, int] = LESION) -> np.ndarray:
    out = img.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = 5  # a dark (anechoic) lesion
    out[y1:, x0:x1] //= 3  # and its acoustic shadow
    return out


def test_the_fill_replaces_the_lesion_and_its_shadow_and_nothing_else() -> None:
    tissue = _layers()
    scan = _with_lesion(tissue)
    filled = lr.remove_lesion(scan, _mask())
    assert filled is not None
    band = lr.lesion_band(_mask())
    assert band is not None
    margin = int(np.ceil(lr.MARGIN_FRACTION * W))
    assert (band.x0, band.x1, band.y0) == (LESION[0] - margin, LESION[2] + margin, LESION[1] - margin)
    outside = np.ones((H, W), dtype=bool)
    outside[band.y0 :, band.x0 : band.x1] = False
    assert np.array_equal(filled[outside], scan[outside])
    # every layer runs through the band at its own depth: lesion and shadow gone
    below_feather = slice(band.y0 + band.feather, H)
    assert np.abs(filled[below_feather, band.x0 : band.x1].astype(int) - tissue[below_feather, band.x0 : band.x1]).max() <= 1
    assert filled[LESION[1] : LESION[3], LESION[0] : LESION[2]].min() > 50


def test_the_fill_keeps_the_speckle_contrast_of_the_tissue() -> None:
    tissue = _layers(np.random.default_rng(0))
    filled = lr.remove_lesion(_with_lesion(tissue), _mask())
    assert filled is not None
    band = lr.lesion_band(_mask())
    assert band is not None
    rows = slice(110, 125)  # inside one layer, below the lesion
    beside = tissue[rows, 20:100].astype(np.float32).std()
    across = filled[rows, band.x0 : band.x1].astype(np.float32).std()  # the mirrored sides and their cross-fade
    assert 0.85 * beside < across < 1.15 * beside


def test_no_image_when_it_cannot_be_filled() -> None:
    tissue = _layers()
    assert lr.remove_lesion(tissue, _mask((40, 60, 260, 100))) is None  # the lesion spans most of the width
    assert lr.remove_lesion(tissue, np.zeros((H, W), dtype=bool)) is None  # no lesion
    assert lr.remove_lesion(tissue, _mask(LESION, H + 1, W)) is None  # a mask of another image's size
    sector = tissue.copy()
    sector[:, :90] = 0  # a fan's black surround on both sides of a narrow field
    sector[:, 210:] = 0
    assert lr.remove_lesion(sector, _mask()) is None


def test_a_colour_frame_is_filled_the_same_way_per_channel() -> None:
    grey = _with_lesion(_layers())
    filled_grey = lr.remove_lesion(grey, _mask())
    filled_rgb = lr.remove_lesion(np.stack([grey] * 3, axis=-1), _mask())
    assert filled_grey is not None and filled_rgb is not None
    assert all(np.array_equal(filled_rgb[..., c], filled_grey) for c in range(3))


def _source(tmp_path: Path) -> Path:
    root = tmp_path / "scanner-x"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["filename,label,patient_id"]
    for i, box in enumerate([LESION, (40, 60, 260, 100)]):  # the second lesion is too wide to fill
        Image.fromarray(_with_lesion(_layers(), box)).save(root / "images" / f"bus_{i:04d}.png")
        Image.fromarray(_mask(box).astype(np.uint8) * 255).save(root / "masks" / f"mask_{i:04d}.png")
        rows.append(f"bus_{i:04d}.png,malignant,p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_a_lesion_removed_sample_is_normal_keeps_its_patient_and_is_only_added_when_asked(tmp_path: Path) -> None:
    root = _source(tmp_path)
    assert [s.view for s in scan_source(root, lesion_views=True)[0]].count(lr.LESION_REMOVED) == 0
    samples, _ = scan_source(root, lesion_removed=1.0)
    removed = [s for s in samples if s.view == lr.LESION_REMOVED]
    assert [(s.label, s.patient_id, s.path.name) for s in removed] == [("normal", "p0", "bus_0000.png")]


def test_a_lesion_removed_sample_decodes_with_its_lesion_filled(tmp_path: Path) -> None:
    from device.model.bundle import InputSpec, Normalization

    root = _source(tmp_path)
    samples, _ = scan_source(root, lesion_removed=1.0)
    removed = next(s for s in samples if s.view == lr.LESION_REMOVED)
    filled = lr.remove_lesion(np.asarray(Image.open(removed.path)), _mask())
    assert filled is not None
    filled_file = tmp_path / "filled.png"
    Image.fromarray(filled).save(filled_file)
    spec = InputSpec(height=64, width=64, dtype="uint8", color="grey3", resize="letterbox", normalization=Normalization(127.0, 128.0, True))
    assert np.array_equal(decode_sample(removed, spec), decode_sample(Sample(filled_file, "normal", "x"), spec))
    original = next(s for s in samples if s.view == "full" and s.path == removed.path)
    assert not np.array_equal(decode_sample(removed, spec), decode_sample(original, spec))


def test_a_lesion_removed_image_trains_and_is_never_scored(tmp_path: Path) -> None:
    root = _source(tmp_path)
    samples, _ = scan_source(root, lesion_removed=1.0)
    data = LoadedData(samples, np.zeros((len(samples), 8, 8), dtype=np.uint8), ("normal", "malignant"))
    everything = np.arange(len(samples))
    removed = {i for i, s in enumerate(samples) if s.view == lr.LESION_REMOVED}
    assert removed and removed <= set(_scored(data, everything, "train").tolist())
    for split_name in ("val", "test", "external"):
        assert not removed & set(_scored(data, everything, split_name).tolist())


@pytest.mark.data
def test_real_sources_yield_lesion_removed_images(datasets: Path) -> None:
    counts = {}
    for name in ("bus-bra", "breast-lesions-usg", "busi"):
        if not (datasets / name).is_dir():
            pytest.skip(f"{datasets / name} absent")
        samples, _ = scan_source(datasets / name, lesion_removed=1.0)
        counts[name] = sum(s.view == lr.LESION_REMOVED for s in samples)
    assert counts["busi"] == 0  # BUSI ships no masks here
    assert counts["bus-bra"] > 300 and counts["breast-lesions-usg"] > 80


@pytest.mark.data
def test_a_share_keeps_that_part_of_the_same_images_whatever_their_order(datasets: Path) -> None:
    root = datasets / "breast-lesions-usg"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    samples, _ = scan_source(root)
    every = lr.derive_lesion_removed(samples, root)
    half = lr.derive_lesion_removed(samples, root, 0.5)
    assert len(half) == round(0.5 * len(every)) and {s.path for s in half} <= {s.path for s in every}
    assert {s.path for s in lr.derive_lesion_removed(samples[::-1], root, 0.5)} == {s.path for s in half}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="share"):
            lr.derive_lesion_removed(samples, root, bad)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("study", "top_normal"), [("study-removed", 0.490), ("study-removed-0.3", 0.356)])
def test_the_committed_study_folds_give_the_documented_busi_normal_figure(study: str, top_normal: float) -> None:
    """docs/model.md, "Lesion-removed images": BUSI's normal scans whose top class is normal, 0.048 before."""
    from model_build.fold_compare import compare_folds

    result = compare_folds(REPO / "models" / "study-v2" / "out-busi", REPO / "models" / study / "out-busi", n_boot=20)
    assert result.normal_scans is not None
    assert (round(result.normal_scans.top_class_normal.baseline, 3), round(result.normal_scans.top_class_normal.candidate, 3)) == (0.048, top_normal)
