"""Lesion-free and lesion-centred views cut from lesion images by their masks (model_build/lesion_views.py).

Proves that a lesion-free view never touches the lesion, its margin or the tissue below it (posterior shadowing
is a lesion sign); that views too small to be a scan, empty or unreadable masks give no view; that a view keeps
its image's patient (so a split cannot put a patient's lesion and its normal view on two sides); that a view
decodes to the region it names; and, on the real datasets, how many views each source yields.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_build import lesion_views as lv
from model_build.data import Sample, decode_sample, scan_source
from model_build.split import relative_name


def _mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_lesion_free_region_avoids_lesion_margin_and_shadow() -> None:
    mask = _mask(400, 300, (60, 80, 110, 130))  # a lesion left of centre
    region = lv.lesion_free_region(mask)
    assert region is not None
    margin = int(lv.MARGIN_FRACTION * 400)
    # nothing of the lesion's column span below its top edge, and not within the margin of it
    assert region.x0 >= 110 + margin - 8 or region.x1 <= 60 - margin + 8
    view = mask[region.y0 : region.y1, region.x0 : region.x1]
    assert not view.any()
    assert region.area() >= lv.MIN_AREA_FRACTION * mask.size


def test_no_view_when_the_lesion_fills_the_image_or_mask_is_empty() -> None:
    assert lv.lesion_free_region(_mask(300, 300, (20, 20, 280, 280))) is None
    assert lv.lesion_free_region(np.zeros((300, 300), dtype=bool)) is None
    assert lv.lesion_free_region(np.zeros((4, 4), dtype=bool)) is None


def test_unreadable_mask_gives_none(tmp_path: Path) -> None:
    bad = tmp_path / "mask_x.png"
    bad.write_bytes(b"not a png")
    assert lv.read_mask(bad) is None


def test_lesion_centred_region_holds_the_lesion_and_has_the_free_views_size() -> None:
    mask = _mask(400, 300, (60, 80, 110, 130))
    free = lv.lesion_free_region(mask)
    assert free is not None
    centred = lv.lesion_centred_region(mask, free)
    assert mask[centred.y0 : centred.y1, centred.x0 : centred.x1].sum() == mask.sum()
    assert (centred.x1 - centred.x0, centred.y1 - centred.y0) == (free.x1 - free.x0, free.y1 - free.y0)
    assert 0 <= centred.x0 and centred.x1 <= 300 and 0 <= centred.y0 and centred.y1 <= 400


def _source(tmp_path: Path) -> Path:
    root = tmp_path / "scanner-x"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["filename,label,patient_id"]
    for i, box in enumerate([(60, 80, 110, 130), (20, 20, 280, 380)]):
        Image.fromarray(rng.integers(30, 200, (400, 300), dtype=np.uint8)).save(root / "images" / f"bus_{i:04d}.png")
        Image.fromarray(_mask(400, 300, box).astype(np.uint8) * 255).save(root / "masks" / f"mask_{i:04d}.png")
        rows.append(f"bus_{i:04d}.png,malignant,p{i}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_scan_source_adds_views_with_the_images_patient(tmp_path: Path) -> None:
    root = _source(tmp_path)
    plain, _ = scan_source(root)
    with_views, _ = scan_source(root, lesion_views=True)
    assert len(plain) == 2
    views = [s for s in with_views if s.view != "full"]
    # image 0 has room for a lesion-free view; image 1's lesion fills it
    assert sorted(s.view for s in views) == [lv.LESION_CENTRED, lv.LESION_FREE]
    assert {s.patient_id for s in views} == {"p0"}
    assert [s.label for s in views if s.view == lv.LESION_FREE] == ["normal"]
    assert {relative_name(s) for s in views} == {f"images/bus_0000.png#{lv.LESION_FREE}", f"images/bus_0000.png#{lv.LESION_CENTRED}"}


def test_a_view_decodes_to_its_region(tmp_path: Path) -> None:
    from device.model.bundle import InputSpec, Normalization

    root = _source(tmp_path)
    samples, _ = scan_source(root, lesion_views=True)
    view = next(s for s in samples if s.view == lv.LESION_FREE)
    assert view.region is not None
    x0, y0, x1, y1 = view.region
    spec = InputSpec(height=64, width=64, dtype="uint8", color="grey3", resize="letterbox", normalization=Normalization(127.0, 128.0, True))
    full = np.asarray(Image.open(view.path))
    cut_file = tmp_path / "cut.png"
    Image.fromarray(np.ascontiguousarray(full[y0:y1, x0:x1])).save(cut_file)
    expected = decode_sample(Sample(cut_file, "normal", "x"), spec)
    assert np.array_equal(decode_sample(view, spec), expected)


@pytest.mark.data
def test_real_sources_yield_views(datasets: Path) -> None:
    counts = {}
    for name in ("bus-bra", "breast-lesions-usg", "busi"):
        if not (datasets / name).is_dir():
            pytest.skip(f"{datasets / name} absent")
        samples, _ = scan_source(datasets / name, lesion_views=True)
        counts[name] = sum(s.view == lv.LESION_FREE for s in samples)
    assert counts["busi"] == 0  # BUSI ships no masks here
    assert counts["bus-bra"] > 200 and counts["breast-lesions-usg"] > 50
