"""Losses and the output error they start backpropagation with.

Both losses are a MEAN over the samples of the batch:

* ``mse``:           L = (1/n) sum_i 0.5 * sum_j (a_ij - y_ij)^2
* ``cross_entropy``: L = (1/n) sum_i -log softmax(z_i)[y_i]
                       = (1/n) sum_i (logsumexp(z_i) - z_i[y_i])

``y`` is ``(n, outputs)`` for mse; for cross_entropy it is either class indices
``(n,)`` or one-hot rows ``(n, classes)``.

Each loss computes its value (step 2, ``loss_sum``) and writes the output error
``delta = dL/dz`` of the last layer (``output_error``), shape ``(n, outputs)``.
The data-parallel trainer divides by ``denominator`` = the GLOBAL batch size while
each rank sees only its shard, so summing the ranks' losses and gradients gives
exactly the mean over the global batch. (Deterministic mode passes the
global batch times a power of two: the loss and every gradient come out scaled by
exactly that power, see :mod:`worker.reduction`.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from common.nn.activations import Activation, Softmax

Array = npt.NDArray[Any]

_row_index: npt.NDArray[np.intp] = np.arange(0)


def _rows(n: int) -> npt.NDArray[np.intp]:
    """``arange(n)`` without allocating it on every step."""
    global _row_index
    if _row_index.shape[0] < n:
        _row_index = np.arange(max(n, 2 * _row_index.shape[0]))
    return _row_index[:n]


class Loss(ABC):
    """Step 2 (``loss_sum``) and the start of step 3 (``output_error``) for one loss.

    Both read what the last layer's forward pass cached: ``z``, ``a``: ``(n, outputs)``.
    """

    name: str = ""

    @abstractmethod
    def loss_sum(self, z: Array, a: Array, y: Array, activation: Activation,
                 scratch: Array) -> float:
        """The SUM over these n samples of the per-sample loss (``scratch``: (n, outputs))."""

    @abstractmethod
    def output_error(self, z: Array, a: Array, y: Array, activation: Activation,
                     denominator: float, delta: Array, scratch: Array) -> None:
        """Write ``dL/dz`` of the output layer into ``delta`` (n, outputs), for the loss
        ``loss_sum / denominator``."""


class MeanSquaredError(Loss):
    name = "mse"

    def loss_sum(self, z: Array, a: Array, y: Array, activation: Activation,
                 scratch: Array) -> float:
        np.subtract(a, y, out=scratch)
        flat = scratch.reshape(-1)
        return 0.5 * float(np.dot(flat, flat))

    def output_error(self, z: Array, a: Array, y: Array, activation: Activation,
                     denominator: float, delta: Array, scratch: Array) -> None:
        np.subtract(a, y, out=delta)  # dL/da = (a - y) / n
        delta *= 1.0 / denominator
        activation.backward(z, a, delta, scratch)  # chain rule: dL/dz = dL/da * f'(z)


class SoftmaxCrossEntropy(Loss):
    """Cross-entropy fused with the softmax of the last layer.

    The fused output error is ``(p - y) / n``: the softmax Jacobian and the
    log's derivative cancel, so no Jacobian is ever formed. The loss uses the
    log-sum-exp the softmax cached in forward, so it never overflows and is
    finite even where a probability underflows to 0.
    """

    name = "cross_entropy"

    def loss_sum(self, z: Array, a: Array, y: Array, activation: Activation,
                 scratch: Array) -> float:
        log_normalizer = _softmax(activation).log_normalizer[: z.shape[0]]
        if y.ndim == 1:  # class indices
            return float(log_normalizer.sum()) - float(z[_rows(z.shape[0]), y].sum())
        return float(log_normalizer.sum()) - float(np.dot(z.reshape(-1), y.reshape(-1)))

    def output_error(self, z: Array, a: Array, y: Array, activation: Activation,
                     denominator: float, delta: Array, scratch: Array) -> None:
        _softmax(activation)
        np.copyto(delta, a)
        if y.ndim == 1:  # class indices
            delta[_rows(z.shape[0]), y] -= 1
        else:  # one-hot rows
            delta -= y
        delta *= 1.0 / denominator


def _softmax(activation: Activation) -> Softmax:
    if not isinstance(activation, Softmax):
        raise TypeError("cross_entropy needs a softmax last layer")
    return activation


_LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (MeanSquaredError, SoftmaxCrossEntropy)}


def make_loss(name: str) -> Loss:
    """The loss object a spec names."""
    try:
        return _LOSSES[name]()
    except KeyError:
        raise ValueError(f"loss: unknown {name!r}; choose one of {sorted(_LOSSES)}") from None
