"""A cosine learning-rate decay that ends when the training does, inside a wall-clock budget.

A fixed cosine schedule over ``epochs`` that a time budget stops part-way leaves the model at a learning rate
far above the schedule's floor: the segmentation model trained 16 of its 30 planned epochs in the 33-minute
budget, and on the BrEaST-Lesions-USG fold a schedule that ended beat the same recipe cut at 13 of 30 by
+0.053 and +0.089 mean Dice (two seeds, paired; docs/lesion-outline.md). This schedule plans again after every
epoch how many epochs still fit in the budget at the mean epoch time so far (never more than configured, never
fewer than those done), so the decay reaches its floor in the last epoch that fits. It never raises the rate:
a re-plan that finds more room (later epochs ran faster) slows the decay from where it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class ScheduleError(ValueError):
    """A schedule setting out of range: names the setting and its value."""


@dataclass
class BudgetedCosine:
    """Cosine decay from ``lr`` to ``alpha * lr`` over the epochs that fit in ``budget_s`` seconds."""

    lr: float
    epochs: int  # at most this many
    steps_per_epoch: int
    budget_s: float
    alpha: float = 0.05
    planned_epochs: int = field(init=False)
    _last_rate: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("lr", "epochs", "steps_per_epoch", "budget_s"):
            if not getattr(self, name) > 0:
                raise ScheduleError(f"{name} must be > 0, not {getattr(self, name)!r}")
        if not 0 <= self.alpha <= 1:
            raise ScheduleError(f"alpha must be in [0, 1], not {self.alpha!r}")
        self.planned_epochs = self.epochs
        self._last_rate = self.lr

    def rate(self, step: int) -> float:
        """The learning rate for training step ``step`` (0-based, counted over all epochs): the last planned
        step trains at the floor."""
        progress = min((step + 1) / (self.planned_epochs * self.steps_per_epoch), 1.0)
        cosine = self.lr * (self.alpha + (1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * progress)))
        self._last_rate = min(self._last_rate, cosine)
        return self._last_rate

    def replan(self, epochs_done: int, elapsed_s: float) -> int:
        """After ``epochs_done`` epochs in ``elapsed_s`` seconds: the epochs to train in all (``>= epochs_done``)."""
        if epochs_done <= 0 or elapsed_s < 0:
            raise ScheduleError(f"replan needs epochs done > 0 and elapsed >= 0, not {epochs_done}, {elapsed_s}")
        per_epoch = elapsed_s / epochs_done
        fit = self.epochs if per_epoch == 0 else epochs_done + int(max(self.budget_s - elapsed_s, 0.0) // per_epoch)
        self.planned_epochs = max(epochs_done, min(self.epochs, fit))
        return self.planned_epochs

    def finished(self, epochs_done: int) -> bool:
        return epochs_done >= self.planned_epochs
