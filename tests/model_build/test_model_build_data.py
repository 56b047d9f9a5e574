"""model_build loaders: class folders, CSV, bad files, strict mode, empty/single-class datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("imagehash")

from device.model.bundle import InputSpec
from model_build.data import DatasetError, load_sources, order_labels, scan_source

SPEC = InputSpec(height=32, width=32)


def _png(path: Path, value: int = 100, mode: str = "L", size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 4096, size[::-1]).astype(np.uint16)).save(path)
    elif mode == "RGB":
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3)).astype(np.uint8), "RGB").save(path)
    else:
        Image.fromarray(rng.integers(0, 255, size[::-1]).astype(np.uint8), "L").save(path)
    return path


def _class_folders(root: Path) -> Path:
    _png(root / "benign" / "a.png", 1)
    _png(root / "benign" / "a_mask.png", 2)
    _png(root / "malignant" / "b.png", 3, "RGB")
    _png(root / "malignant" / "c.png", 4, "I;16")
    _png(root / "normal" / "d.png", 5)
    (root / "normal" / "notes.txt").write_text("not an image")
    return root


def test_class_folders_drop_masks_and_normalise_all_pixel_kinds(tmp_path: Path) -> None:
    data = load_sources([_class_folders(tmp_path / "ds")], SPEC)
    names = sorted(s.path.name for s in data.samples)
    assert names == ["a.png", "b.png", "c.png", "d.png"]
    assert data.labels == ("normal", "benign", "malignant")
    assert data.pixels.shape == (4, 32, 32) and data.pixels.dtype == np.uint8
    assert all(s.source == "ds" and s.patient_id is None for s in data.samples)


def test_csv_layout_with_patient_ids_and_missing_files(tmp_path: Path) -> None:
    root = tmp_path / "bra"
    _png(root / "images" / "x1.png", 1)
    _png(root / "images" / "x2.png", 2)
    _png(root / "images" / "x3.png", 3)
    (root / "labels.csv").write_text(
        "filename,label,patient_id,device\nx1.png,benign,7,GE\nx2.png,Malignant,7,GE\nx3.png,benign,8,Toshiba\ngone.png,benign,9,GE\n"
    )
    data = load_sources([root], SPEC)
    assert [s.patient_id for s in data.samples] == ["7", "7", "8"]
    assert data.labels == ("benign", "malignant")
    assert data.samples[2].meta("device") == "Toshiba"
    assert [b.code for b in data.bad_files] == ["not_found"]
    with pytest.raises(DatasetError, match="strict"):
        load_sources([root], SPEC, strict=True)


def test_corrupt_image_is_skipped_and_listed_or_fails_with_strict(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "ds")
    (root / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "benign" / "empty.png").write_bytes(b"")
    data = load_sources([root], SPEC)
    bad = {Path(b.path).name: b.code for b in data.bad_files}
    assert set(bad) == {"broken.png", "empty.png"}
    assert bad["empty.png"] == "empty_file"
    assert len(data.samples) == 4
    with pytest.raises(DatasetError, match="broken.png|empty.png"):
        load_sources([root], SPEC, strict=True)


def test_several_sources_keep_their_own_label_sets(tmp_path: Path) -> None:
    a = _class_folders(tmp_path / "a")
    b = tmp_path / "b"
    _png(b / "images" / "y.png", 9)
    _png(b / "images" / "z.png", 10)
    (b / "labels.csv").write_text("filename,label\ny.png,benign\nz.png,malignant\n")
    data = load_sources([a, b], SPEC)
    assert data.source_labels == {"a": ("normal", "benign", "malignant"), "b": ("benign", "malignant")}
    assert data.labels == ("normal", "benign", "malignant")


def test_empty_and_single_class_datasets_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / "benign").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        load_sources([tmp_path / "empty"], SPEC)
    _png(tmp_path / "one" / "benign" / "a.png")
    _png(tmp_path / "one" / "benign" / "b.png", 2)
    with pytest.raises(DatasetError, match="only one class"):
        load_sources([tmp_path / "one"], SPEC)
    with pytest.raises(DatasetError, match="not a directory"):
        scan_source(tmp_path / "nowhere")
    (tmp_path / "allbad" / "benign").mkdir(parents=True)
    (tmp_path / "allbad" / "benign" / "x.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no readable"):
        load_sources([tmp_path / "allbad"], SPEC)


def test_csv_without_required_columns(tmp_path: Path) -> None:
    _png(tmp_path / "c" / "a.png")
    (tmp_path / "c" / "labels.csv").write_text("name,class\na.png,benign\n")
    with pytest.raises(DatasetError, match="'filename' and 'label'"):
        load_sources([tmp_path / "c"], SPEC)


def test_label_order_is_canonical() -> None:
    assert order_labels({"malignant", "benign", "normal"}) == ("normal", "benign", "malignant")
    assert order_labels({"zeta", "benign"}) == ("benign", "zeta")
