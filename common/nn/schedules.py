"""The learning rate of every step: a schedule, times a linear warmup.

The rate of step ``t`` (0-based: the step being taken) is a pure function of ``t``
and, for ``plateau`` only, of the validation losses seen so far, which every rank
receives already reduced. So every rank computes the same rate, whatever the number
of ranks, and a checkpoint only needs the plateau's counters to continue exactly.

With ``lr`` the base rate, ``e = t // steps_per_epoch`` the epoch, ``T`` the job's
steps and ``W`` the warmup steps::

    constant      lr
    step          lr * gamma ** (e // every_epochs)
    exponential   lr * gamma ** e
    cosine        min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,  p = (t - W) / (T - W) in [0, 1]
    plateau       the current level: lr, times factor after each ``patience`` epochs in a
                  row without a new best validation loss, never below min_lr

    warmup        times (t + 1) / W while t < W: step k of the warmup runs at k/W of the rate
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from common.schemas import OptimizerSpec

Array = npt.NDArray[Any]


class LearningRate:
    """``at(t)``: the rate of step ``t``; ``observe(val_loss)`` after each validation."""

    def __init__(self, spec: OptimizerSpec, steps_per_epoch: int, total_steps: int):
        self.spec, self.schedule = spec, spec.schedule
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        # plateau: the current level, the best validation loss, epochs since it
        self.level = spec.lr
        self.best = math.inf
        self.wait = 0

    def at(self, step: int) -> float:
        """The rate of step ``step`` (0-based)."""
        warmup = self.spec.warmup_steps
        rate = self._scheduled(step)
        if step < warmup:
            rate *= (step + 1) / warmup
        return rate

    def _scheduled(self, step: int) -> float:
        s, lr = self.schedule, self.spec.lr
        epoch = step // self.steps_per_epoch
        if s.kind == "step":
            return lr * s.gamma ** (epoch // s.every_epochs)
        if s.kind == "exponential":
            return lr * s.gamma ** epoch
        if s.kind == "cosine":
            warmup = self.spec.warmup_steps
            progress = min(1.0, max(0, step - warmup) / max(1, self.total_steps - warmup))
            return s.min_lr + (lr - s.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        if s.kind == "plateau":
            return self.level
        return lr

    def observe(self, val_loss: float) -> None:
        """An epoch's validation loss (plateau lowers its level on a long enough plateau)."""
        s = self.schedule
        if s.kind != "plateau":
            return
        if val_loss < self.best:
            self.best, self.wait = val_loss, 0
            return
        self.wait += 1
        if self.wait >= s.patience:
            self.level, self.wait = max(s.min_lr, self.level * s.factor), 0

    def state_dict(self) -> dict[str, Array]:
        return {"level": np.array(self.level), "best": np.array(self.best),
                "wait": np.array(self.wait)}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        self.level, self.best = float(state["level"]), float(state["best"])
        self.wait = int(state["wait"])
