"""Training options: weight averaging over the last fine-tuning epochs (the arithmetic; the wiring is
in the e2e build), the input-resolution override and the auxiliary BI-RADS head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_build.train import WeightAverage


def test_float_arrays_are_averaged_and_integer_arrays_keep_their_last_value() -> None:
    average = WeightAverage()
    snapshots = [
        [np.array([1.0, 2.0], np.float32), np.array([[0.0]], np.float32), np.array(7, np.int64)],
        [np.array([3.0, 6.0], np.float32), np.array([[3.0]], np.float32), np.array(8, np.int64)],
        [np.array([5.0, 1.0], np.float32), np.array([[-6.0]], np.float32), np.array(9, np.int64)],
    ]
    for epoch, weights in enumerate(snapshots, start=10):
        average.add(weights, epoch)
    assert average.count == 3 and average.epochs == [10, 11, 12]
    np.testing.assert_allclose(average.mean[0], [3.0, 3.0])
    np.testing.assert_allclose(average.mean[1], [[-1.0]])
    assert average.mean[2] == 9
    assert average.mean[0].dtype == np.float32


def test_the_first_snapshot_is_copied_not_aliased() -> None:
    weights = [np.array([1.0, 1.0])]
    average = WeightAverage()
    average.add(weights, 1)
    weights[0][:] = 100.0  # the model's buffers change in place as training goes on
    assert average.mean[0].tolist() == pytest.approx([1.0, 1.0])


def test_input_resolution_override_is_validated() -> None:
    from model_build.classifier import ArchitectureError, input_resolution

    assert input_resolution("lite0") == 224
    assert input_resolution("lite0", 288) == 288
    for bad in (100, 64, 0):
        with pytest.raises(ArchitectureError, match=str(bad)):
            input_resolution("lite0", bad)


def test_build_refuses_a_bad_resolution_before_reading_data(tmp_path, caplog) -> None:
    from model_build.__main__ import main

    code = main(["build", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--resolution", "250"])
    assert code == 2
    assert "input resolution 250 must be a multiple of 32" in caplog.text


def test_birads_values_map_to_the_auxiliary_heads_classes() -> None:
    from model_build.train import BIRADS_CLASSES, birads_targets

    assert BIRADS_CLASSES == (2, 3, 4, 5)
    assert birads_targets([2.0, 4.5, None, 5.0, 1.0, 3.0]).tolist() == [0, 2, -1, 3, -1, 1]


@pytest.fixture(scope="module")
def small_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One set of starting weights (ImageNet backbone, random head) for every small training below."""
    from model_build.classifier import build_classifier

    path = tmp_path_factory.mktemp("init") / "lite0-96.weights.h5"
    build_classifier("lite0", 3, resolution=96).model.save_weights(path)
    return path


def _small_training(init: Path, aux_weight: float, birads: np.ndarray | None):
    from model_build.classifier import build_classifier
    from model_build.train import TrainConfig, train

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (16, 96, 96), dtype=np.uint8)
    y = np.array([0, 1, 2, 1] * 4)
    clf = build_classifier("lite0", 3, resolution=96)
    clf.model.load_weights(init)
    cfg = TrainConfig(epochs_frozen=0, epochs=1, average_last=0, grid_epochs=0, batch_size=8, aux_birads_weight=aux_weight)
    history = train(clf, pixels, y, pixels[:4], y[:4], ("normal", "benign", "malignant"), cfg, birads)
    return clf, history


def test_the_birads_head_trains_the_backbone_and_never_reaches_the_classifier(small_init: Path) -> None:
    birads = np.array([0, 1, 2, 3, -1, -1, 2, 3] * 2)
    plain, plain_history = _small_training(small_init, 0.0, birads)  # weight 0: the BI-RADS values are ignored
    with_head, history = _small_training(small_init, 0.5, birads)
    names = [layer.name for layer in with_head.model.layers]
    assert "birads_aux" not in names and names == [layer.name for layer in plain.model.layers]
    assert len(with_head.export_model().outputs) == 2  # logits and CAM features, as always
    assert plain_history.train_birads_loss == [] and len(history.train_birads_loss) == 1
    # the optimised objective is the classifier's loss plus half the BI-RADS head's
    objective = history.train_classifier_loss[0] + 0.5 * history.train_birads_loss[0]
    assert history.train_birads_loss[0] > 0.1 and history.train_loss[0] == pytest.approx(objective, rel=1e-3)


def test_the_birads_head_without_any_birads_value_is_refused(small_init: Path) -> None:
    with pytest.raises(ValueError, match="needs training images with a BI-RADS category"):
        _small_training(small_init, 0.5, np.full(16, -1))
