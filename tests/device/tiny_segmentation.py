"""A tiny, hand-weighted segmentation model with a known mask, built as ``model_build segment`` exports one
(Keras -> full-integer int8 TFLite, uint8 input, float outputs) and packed into a copy of the tiny classifier
bundle by ``model_build.segmentation_build.pack_segmentation`` (through ``write_bundle``).

Rule: a model-input pixel is lesion when its brightness is above mid-grey — mask = sigmoid(STEEPNESS * (b - 0.5))
with b in 0..1 — so on a dark frame with a bright ellipse the expected outline is that ellipse. The letterbox
padding is black (never lesion). The second output, the lesion logit ``[1, 1]``, is the mask's mean.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from device.model.bundle import DescriptorDisplay, Figure, InputSpec, ModelBundle
from tests.tiny_bundle import int8_tflite, output_names_by_rank

# The display rule the tiny model's bundles carry (segmentation.descriptors, format 6): NOT measured — its outlines
# are synthetic — but a rule under which shape is shown and margin is not, so the tests see both.
TEST_DISPLAY_RULE = DescriptorDisplay(
    min_kappa=0.40,
    kappa={"shape": Figure(0.5, (0.4, 0.6), 40), "margin": Figure(0.2, (0.0, 0.4), 40)},
    measured_on="test fixture, not measured: the tiny hand-weighted model's outlines are synthetic",
)
SEG_SIZE = 48  # the segmentation model's input: letterboxed, unlike the tiny classifier's 32 px stretch
STEEPNESS = 40.0
MIN_REGION_PX = 16


def seg_input_spec(size: int = SEG_SIZE, resize: str = "letterbox") -> InputSpec:
    return InputSpec(height=size, width=size, dtype="uint8", color="grey3", resize=resize)


def build_tiny_segmentation(out: Path, spec: InputSpec | None = None) -> Path:
    """``segmentation.tflite`` + ``segmentation.json`` in ``out``, as ``model_build segment`` writes them."""
    import keras

    from model_build.segmentation_build import segmentation_spec, write_segmentation

    spec = spec or seg_input_spec()
    inp = keras.Input((spec.height, spec.width, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(keras.ops.cast(inp, "float32"))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")
    mask = conv(x)
    logit = keras.layers.Dense(1, name="lesion")(keras.layers.GlobalAveragePooling2D()(mask))
    model = keras.Model(inp, [logit, mask])
    k = STEEPNESS / 3.0  # brightness = mean of the three (equal) channels
    conv.set_weights([np.full((1, 1, 3, 1), k, np.float32), np.array([-STEEPNESS / 2.0], np.float32)])

    def representative():
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[: spec.height, : spec.width]
        for level in np.linspace(0, 255, 24):
            image = np.clip(level + rng.integers(-20, 20, (spec.height, spec.width)), 0, 255)
            blob = (yy - spec.height / 2) ** 2 + (xx - spec.width / 2) ** 2 < (spec.height / 4) ** 2
            image = np.where(blob, 255 - image, image)  # both mask values in every calibration image
            yield [np.repeat(image[None, :, :, None], 3, axis=3).astype(np.uint8)]

    model_bytes = int8_tflite(model, representative)
    logit_name, mask_name = output_names_by_rank(model_bytes)
    section = segmentation_spec(spec, mask_name, logit_name, MIN_REGION_PX, model_bytes, {"note": "hand-weighted test model, not trained"})
    write_segmentation(out, model_bytes, dataclasses.replace(section, descriptors=TEST_DISPLAY_RULE))
    return out


def build_tiny_segmentation_bundle(out: Path, classifier_bundle: Path, seg_dir: Path, spec: InputSpec | None = None) -> ModelBundle:
    """A copy of ``classifier_bundle`` with the tiny segmentation model, through ``pack_segmentation``."""
    from model_build.segmentation_build import pack_segmentation

    build_tiny_segmentation(seg_dir, spec)
    return pack_segmentation(classifier_bundle, seg_dir, out)


def expected_mask(grey: np.ndarray) -> np.ndarray:
    """The rule on image pixels: above mid-grey is lesion."""
    return (np.asarray(grey) > 127).astype(np.uint8)


def lesion_frame(
    height: int, width: int, centre: tuple[int, int], axes: tuple[int, int], seed: int = 0, background: int = 50, lesion: int = 210
) -> np.ndarray:
    """A dark speckled grey frame with one bright ellipse (centre x, y; semi-axes x, y) where the lesion is."""
    import cv2

    rng = np.random.default_rng(seed)
    frame = np.clip(background + rng.normal(0, 6, (height, width)), 0, 255).astype(np.uint8)
    blob = np.zeros((height, width), np.uint8)
    cv2.ellipse(blob, centre, axes, 0, 0, 360, 1, -1)
    frame[blob > 0] = np.clip(lesion + rng.normal(0, 6, int(blob.sum())), 0, 255).astype(np.uint8)
    return frame
