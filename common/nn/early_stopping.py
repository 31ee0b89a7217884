"""Early stopping on a validation metric, keeping the best epoch's weights (as Keras'
``EarlyStopping(restore_best_weights=True)``).

An epoch improves when its metric beats the best so far by more than ``min_delta``
(lower for ``val_loss``, higher for ``val_accuracy``). After ``patience`` epochs in a
row without improvement, training stops. The metric is the exactly reduced validation
result every rank holds, so every rank decides the same at the same epoch. With
``restore_best``, the job ends with the best epoch's parameters, whether it stopped
early or ran all its epochs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from common.schemas import EarlyStoppingSpec

Array = npt.NDArray[Any]


class EarlyStopping:
    """Watches one metric per epoch; ``observe`` says when to stop."""

    def __init__(self, spec: EarlyStoppingSpec, num_parameters: int, dtype: np.dtype[Any]):
        self.spec = spec
        self.sign = 1.0 if spec.monitor == "val_loss" else -1.0  # compare as "lower is better"
        self.best = math.inf  # sign * metric
        self.best_epoch = -1
        self.wait = 0
        self.stopped_epoch = -1
        self.best_params: Array = np.empty(num_parameters if spec.restore_best else 0, dtype)

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch >= 0

    def observe(self, epoch: int, val_loss: float, val_accuracy: float | None,
                params: Array) -> bool:
        """Epoch ``epoch`` ended with these validation results and ``params`` (P,); True
        when training should stop after it."""
        metric = val_loss if self.spec.monitor == "val_loss" else val_accuracy
        assert metric is not None, "val_accuracy is monitored only for classifiers"
        value = self.sign * metric
        if value < self.best - self.spec.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.spec.restore_best:
                np.copyto(self.best_params, params)
            return False
        self.wait += 1
        if self.wait >= self.spec.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def restore_best(self, params: Array) -> None:
        """Put the best epoch's parameters into ``params`` (when ``restore_best`` and an
        epoch has been seen)."""
        if self.spec.restore_best and self.best_epoch >= 0:
            np.copyto(params, self.best_params)

    def state_dict(self) -> dict[str, Array]:
        return {"best": np.array(self.best), "best_epoch": np.array(self.best_epoch),
                "wait": np.array(self.wait), "stopped_epoch": np.array(self.stopped_epoch),
                "best_params": self.best_params.copy()}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best_params[...] = state["best_params"]
