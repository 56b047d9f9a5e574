"""The v1 bundle's re-validation on platform-exact pixels, reproduced (models/sonopi-lite0-v1, shipped until model v2).

Proves that the device's runner (``device.engine.Classifier`` on ``device.model.preprocess.prepare``), re-scoring the
v1 bundle's test images, gives exactly the as-built test figures on OpenCV-resampled pixels (the workstation
build's own runner measured those: the two runners agree) and exactly the stored re-validated figures on exact
pixels; and that the manifest says what was done.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.engine import Classifier
from device.model.bundle import Resampling, load_bundle


@pytest.mark.data
def test_v1_bundle_revalidation_is_reproduced(v1_bundle_dir: Path, datasets: Path) -> None:
    from model_build import evaluate
    from model_build.revalidate import score_split

    bundle = load_bundle(v1_bundle_dir)
    m = bundle.manifest
    assert m.input.resampling == Resampling.EXACT and m.version.endswith("+exact") and m.reference is not None
    stored = json.loads((v1_bundle_dir / "report" / "metrics.json").read_text())["evaluations"]
    classifier = Classifier(bundle)
    roots = [datasets / "busi", datasets / "bus-bra"]
    scored_by = score_split(classifier, roots, "test", [r.value for r in Resampling])
    for resampling, key in ((Resampling.OPENCV, "test_int8_as_built"), (Resampling.EXACT, "test_int8")):
        scored = scored_by[resampling.value]
        fresh = evaluate.headline(scored.y, scored.probs, m.labels, m.thresholds["malignant"])
        expected = {k: v["value"] for k, v in stored[key]["all"]["headline"].items()}
        # 1e-6: the build computed its softmax in float32 (model_build.calibrate), the device in float64 (ECE moves
        # by ~1e-8); every decision-level figure (accuracy, AUC, sensitivity, specificity) is identical.
        assert fresh == pytest.approx(expected, abs=1e-6), f"{resampling}: {fresh} vs stored {key} {expected}"
        assert len(scored.y) == stored[key]["all"]["n"]
    assert np.isclose(m.metrics["accuracy"]["value"], stored["test_int8"]["all"]["headline"]["accuracy"]["value"])


@pytest.mark.parametrize(("kept", "says"), [(0.0286, "it is lower, so more sensitive"), (0.04, "consider lowering it")])
def test_the_card_says_how_the_kept_threshold_compares_with_the_rule_on_the_new_pixels(kept: float, says: str) -> None:
    from model_build.card import revalidation_section

    changes = {"n": 1, "images_with_any_change": 0, "max_prob_diff": 0.0, "mean_prob_diff": 0.0, "label_flips": [], "inconclusive_flips": 0}
    result = {
        "from": "opencv",
        "to": "exact",
        "thresholds": {"malignant": kept},
        "val_changes": changes,
        "test_changes": changes,
        "rule_threshold_on_val_int8_opencv": {"threshold": 0.0285},
        "rule_threshold_on_val_int8_exact": {"threshold": 0.0312},
    }
    assert says in "\n".join(revalidation_section(result))
