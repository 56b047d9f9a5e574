"""Training options: weight averaging over the last fine-tuning epochs (the arithmetic; the wiring is
in the e2e build) and the input-resolution override."""

from __future__ import annotations

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
