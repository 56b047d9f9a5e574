"""The lesion-segmentation build, for real: images and masks stay aligned through the device's crop + letterbox
(a synthetic bright disc and its mask; the paired augmentation), the scores mean what they say on known shapes,
a held-out source shares no patient with training, and a tiny real run of ``python -m model_build segment`` on
real images writes an int8 model the device's ``ModelRunner`` runs, Dice/IoU in [0, 1], and the montage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from device.model.bundle import InputSpec
from device.model.preprocess import prepare
from model_build.segmentation_data import prepare_pair

SPEC = InputSpec(height=64, width=64)


def _disc_frame(centre: tuple[int, int] = (300, 150), radius: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A 480x360 'screen': black border, a textured scan region (x 100..460, y 40..320), a bright disc inside."""
    rng = np.random.default_rng(0)
    frame = np.zeros((360, 480), np.uint8)
    frame[40:320, 100:460] = rng.integers(60, 110, size=(280, 360), dtype=np.uint8)
    yy, xx = np.mgrid[:360, :480]
    disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2
    frame[disc] = 250
    return frame, disc


def test_the_mask_goes_through_the_images_crop_and_letterbox() -> None:
    frame, disc = _disc_frame()
    pair = prepare_pair(frame, disc, SPEC)
    crop = pair.prepared.crop
    assert crop.x > 50 and crop.width < 400  # the black border was cropped away: the geometry is not the identity
    assert pair.prepared.placement.y > 0  # a wide crop: letterbox bands top and bottom
    ys, xs = np.nonzero(pair.mask)
    assert len(ys) > 20
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    assert pair.pixels[cy, cx] > 200  # the mask's centroid is on the disc
    bright = pair.pixels > 180
    overlap = np.logical_and(bright, pair.mask > 0).sum() / np.logical_or(bright, pair.mask > 0).sum()
    assert overlap > 0.8, overlap
    # the same geometry as the device's prepare of the image alone
    np.testing.assert_array_equal(pair.pixels, prepare(frame, SPEC).pixels[:, :, 0])


def test_a_mask_of_another_size_is_refused_naming_both_sizes() -> None:
    frame, disc = _disc_frame()
    with pytest.raises(ValueError, match="mask is 240x360 px, its image 480x360"):
        prepare_pair(frame, disc[:, :240], SPEC)


def test_paired_augmentation_moves_image_and_mask_together() -> None:
    from model_build.segmentation import augment_pair

    frame, disc = _disc_frame()
    pair = prepare_pair(frame, disc, InputSpec(height=128, width=128))
    rng = np.random.default_rng(3)
    for _ in range(10):
        image, mask = augment_pair(pair.pixels, pair.mask, rng)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and mask.any()
        inside, outside = image[mask > 0].mean(), image[(mask == 0) & (image > 0)].mean()
        assert inside > outside + 40, (inside, outside)  # the disc is still under its mask after flip/affine/gain


def test_scores_on_known_shapes() -> None:
    from model_build.segmentation_eval import contour_distance, dice, iou, outline_mask

    yy, xx = np.mgrid[:64, :64]
    a = ((xx - 30) ** 2 + (yy - 30) ** 2 <= 100).astype(np.uint8)
    b = ((xx - 33) ** 2 + (yy - 30) ** 2 <= 100).astype(np.uint8)  # shifted 3 px
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0 and contour_distance(a, a) == 0.0
    assert 0.7 < dice(a, b) < 0.95 and iou(a, b) < dice(a, b)
    assert 1.0 < contour_distance(a, b) < 3.0
    assert np.isnan(contour_distance(a, np.zeros_like(a)))
    prob = a * 0.9 + ((xx - 55) ** 2 + (yy - 55) ** 2 <= 4) * 0.9  # the lesion and a 13-px speck
    whole = (0, 0, 64, 64)
    assert outline_mask(prob, 16, whole).sum() == a.sum()  # only the largest region is drawn
    assert not outline_mask(prob * (xx > 50), 16, whole).any()  # a region under the minimum is no outline


def test_the_letterbox_bands_are_never_outlined_as_on_the_device() -> None:
    """The device cuts the letterbox padding away before it picks the largest region (device/outline.py
    ``crop_mask``); the build's scores must draw what the device draws. A large dark region in the band above a
    wide image outscored the real, smaller lesion inside it, and a band region on a lesion-free view counted as a
    false outline the device never shows."""
    from model_build.segmentation_eval import score

    yy, xx = np.mgrid[:64, :64]
    image = np.array([[0, 16, 64, 32]])  # x, y, w, h: the image inside the 64 x 64 input, bands above and below
    band = ((xx - 32) ** 2 + (yy - 6) ** 2 <= 40) & (yy < 16)  # 60-odd px, all in the top band
    lesion = ((xx - 20) ** 2 + (yy - 32) ** 2 <= 16).astype(np.uint8)  # 49 px, inside the image
    prob = np.where(band | lesion.astype(bool), 0.9, 0.0)[None]
    assert band.sum() > lesion.sum()
    drawn = score(prob, lesion[None], np.ones(1), 16, image_boxes=image)
    assert drawn.dice[0] == 1.0 and drawn.drawn_px[0] == lesion.sum()
    free = score(np.where(band, 0.9, 0.0)[None], np.zeros((1, 64, 64), np.uint8), np.ones(1), 16, image_boxes=image)
    assert free.drawn_px[0] == 0  # no false outline: the device would draw nothing


def test_skip_connections_are_the_last_block_of_each_stride() -> None:
    from model_build.segmentation import skip_layer_names

    assert skip_layer_names("lite0") == {4: "block2_add", 8: "block4_add", 16: "block10_add", 32: "block15_project_bn"}


@pytest.mark.data
def test_a_held_out_source_shares_no_patient_with_the_split(datasets: Path) -> None:
    pytest.importorskip("imagehash")
    from model_build.segmentation_data import load_segmentation, split_segmentation
    from model_build.split import HoldOutRule

    data = load_segmentation([datasets / "busi", datasets / "breast-lesions-usg"], SPEC, limit=10)
    assert data.left_out == {"busi": 517}  # BUSI's lesion images have no masks in the shared copy
    assert {s.source for s in data.samples} >= {"busi", "breast-lesions-usg", "breast-lesions-usg#lesion_free"}
    assert not data.masks[[s.mask is None for s in data.samples]].any()  # normals and lesion-free views: empty
    split = split_segmentation(data, external=HoldOutRule.parse("source=breast-lesions-usg"))
    held = {data.samples[i].sample.source for i in split.external}
    assert held == {"breast-lesions-usg"} and len(split.external) > 10  # its lesion-free views go with their patients
    kept_groups = {split.groups[i] for i in split.kept}
    assert not kept_groups & {split.groups[i] for i in split.external}


# --- a tiny real build -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_segment(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    pytest.importorskip("imagehash")
    from model_build.__main__ import main

    out = tmp_path_factory.mktemp("segment") / "seg"
    argv = [
        "segment",
        "--data",
        str(datasets / "busi"),
        "--data",
        str(datasets / "breast-lesions-usg"),
        "--out",
        str(out),
        "--resolution",
        "64",
        "--limit",
        "12",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--representative-steps",
        "8",
        "--bootstrap",
        "20",
    ]
    assert main(argv) == 0
    return out


@pytest.mark.data
@pytest.mark.slow
def test_the_build_writes_model_report_and_montage(tiny_segment: Path) -> None:
    for rel in (
        "segmentation.tflite",
        "segmentation.json",
        "segmentation-float.weights.h5",
        "report/metrics.json",
        "report/split.csv",
        "report/montage_test.png",
        "report/REPORT.md",
    ):
        assert (tiny_segment / rel).is_file(), rel
    import cv2

    montage = cv2.imread(str(tiny_segment / "report/montage_test.png"))
    assert montage is not None and montage.shape[1] == 6 * 192 and montage.shape[0] > 192
    assert "Held-out test patients (int8 model, device runner)" in (tiny_segment / "report/REPORT.md").read_text()
    rows = list(csv.DictReader(open(tiny_segment / "report/split.csv", newline="")))
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())  # no patient in two splits


@pytest.mark.data
@pytest.mark.slow
def test_dice_and_iou_are_fractions_and_int8_is_compared_with_float(tiny_segment: Path) -> None:
    metrics = json.loads((tiny_segment / "report/metrics.json").read_text())
    test = metrics["test"]["int8"]
    assert test["all"]["n_lesion"] >= 1 and test["all"]["n_empty"] >= 1
    for subset in test.values():
        for key in ("dice_mean", "dice_median", "iou_mean", "false_outline_rate", "missed"):
            value, (lo, hi) = subset[key]["value"], subset[key]["ci95"]
            if value is not None and np.isfinite(value):
                assert 0.0 <= lo <= value <= hi <= 1.0 or lo == value == hi, (key, subset[key])
    assert test["all"]["iou_mean"]["value"] <= test["all"]["dice_mean"]["value"]
    parity = metrics["test"]["parity_int8_vs_float"]
    assert parity["n"] == test["all"]["n_lesion"] and 0.0 <= parity["dice_float"] <= 1.0
    assert parity["dice_difference"] == pytest.approx(parity["dice_int8"] - parity["dice_float"])
    assert metrics["pretrained"] is True and len(metrics["train"]["history"]["loss"]) == 1


@pytest.mark.data
@pytest.mark.slow
def test_the_int8_model_runs_on_the_devices_runner(tiny_segment: Path, datasets: Path) -> None:
    from device.imageio import decode_image_file
    from device.model.runtime import ModelRunner, TensorNames

    desc = json.loads((tiny_segment / "segmentation.json").read_text())
    assert (desc["input"]["height"], desc["input"]["dtype"], desc["input"]["resampling"]) == (64, "uint8", "exact")
    runner = ModelRunner(
        tiny_segment / desc["model"],
        SPEC,
        TensorNames(desc["outputs"]["lesion_logit"], desc["outputs"]["mask"]),
        1,
        where="the tiny segmentation model",
        threads=1,
    )
    assert runner.input["dtype"] == np.uint8
    frame = decode_image_file(datasets / "breast-lesions-usg" / "images" / "case001.png")
    logit, mask = runner.invoke(runner.input_tensor(prepare(frame, SPEC).pixels), with_features=True)
    assert logit.shape == (1,) and np.isfinite(logit).all()
    assert mask is not None and mask.shape == (64, 64, 1) and mask.dtype == np.float32
    assert 0.0 <= mask.min() <= mask.max() <= 1.0


def test_a_bad_resolution_stops_the_build_naming_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from model_build.__main__ import main

    assert main(["segment", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--resolution", "70"]) == 2
    assert "segmentation resolution 70: must be a multiple of 32" in caplog.text
