"""The segmentation training's learning-rate schedule ends inside its time budget: with epochs that cannot all
fit, the planner trains as many as fit and the decay reaches its floor in the last of them (a fixed cosine over
the configured epochs, stopped by the budget, was still at half the initial rate); it never raises the rate when a
re-plan finds more room; bad settings are refused by name; and a real Keras training follows it step by step.
Time here is simulated (epoch durations given), never measured."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_build.budget_schedule import BudgetedCosine, ScheduleError


def _simulate(schedule: BudgetedCosine, epoch_seconds: list[float]) -> tuple[int, list[float], float]:
    """Train epoch after epoch (durations from the list, the last repeated) until the planner says stop."""
    rates: list[float] = []
    elapsed, done, step = 0.0, 0, 0
    while not schedule.finished(done) or done == 0:
        for _ in range(schedule.steps_per_epoch):
            rates.append(schedule.rate(step))
            step += 1
        elapsed += epoch_seconds[min(done, len(epoch_seconds) - 1)]
        done += 1
        schedule.replan(done, elapsed)
    return done, rates, elapsed


def test_without_budget_pressure_the_decay_runs_the_configured_epochs_to_its_floor() -> None:
    schedule = BudgetedCosine(lr=1e-3, epochs=12, steps_per_epoch=10, budget_s=1000, alpha=0.05)
    done, rates, _ = _simulate(schedule, [10.0])
    assert done == 12
    assert rates[0] == pytest.approx(1e-3, rel=1e-3)
    assert rates[-1] == pytest.approx(0.05e-3)
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_a_budget_that_fits_16_of_30_epochs_ends_the_decay_in_the_16th() -> None:
    # 30 epochs planned, 100 s of budget, 6 s an epoch: 16 fit (the shipped segmentation model's case, scaled)
    schedule = BudgetedCosine(lr=1e-3, epochs=30, steps_per_epoch=10, budget_s=100, alpha=0.05)
    done, rates, elapsed = _simulate(schedule, [6.0])
    assert done == 16 and elapsed <= 100
    assert rates[-1] == pytest.approx(0.05e-3)
    # what the fixed 30-epoch cosine would have used at that step: about half the initial rate, 9.5x the floor
    fixed = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (16 * 10) / (30 * 10)))
    assert fixed * 1e-3 > 9 * rates[-1]


def test_a_slow_first_epoch_then_faster_ones_never_raise_the_rate() -> None:
    schedule = BudgetedCosine(lr=1e-3, epochs=30, steps_per_epoch=5, budget_s=100, alpha=0.05)
    done, rates, elapsed = _simulate(schedule, [20.0, 4.0])
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert elapsed <= 100 and done > 5  # the room found later was used
    assert rates[-1] == pytest.approx(0.05e-3)


def test_an_epoch_longer_than_the_budget_still_counts_as_one_done() -> None:
    schedule = BudgetedCosine(lr=1e-3, epochs=30, steps_per_epoch=5, budget_s=10, alpha=0.05)
    assert schedule.replan(1, 50.0) == 1
    assert schedule.finished(1)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"lr": 0.0}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"budget_s": -1.0}, "budget_s"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(kwargs: dict[str, float], named: str) -> None:
    settings = {"lr": 1e-3, "epochs": 3, "steps_per_epoch": 2, "budget_s": 60.0, **kwargs}
    with pytest.raises(ScheduleError, match=named):
        BudgetedCosine(**settings)  # type: ignore[arg-type]


def test_a_real_keras_training_follows_the_schedule() -> None:
    pytest.importorskip("tensorflow")
    from model_build.segmentation import LR_FLOOR, SegTrainConfig, build_segmenter, train_segmenter

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(8, 64, 64), dtype=np.uint8)
    masks = np.zeros((8, 64, 64), np.uint8)
    masks[:4, 20:40, 20:40] = 1
    seg = build_segmenter("lite0", 64)
    cfg = SegTrainConfig(epochs=3, batch_size=4, lr=1e-3, time_budget_s=3600)
    history = train_segmenter(seg, (pixels, masks), (pixels[:2], masks[:2]), cfg)
    assert len(history.loss) == 3 and history.planned_epochs == 3
    expected = BudgetedCosine(1e-3, 3, 2, 3600, alpha=LR_FLOOR)
    assert history.lr == pytest.approx([expected.rate(1), expected.rate(3), expected.rate(5)], rel=1e-5)
    assert history.lr[-1] == pytest.approx(LR_FLOOR * 1e-3, rel=1e-5)
