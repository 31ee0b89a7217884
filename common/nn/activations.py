"""Activation functions and their derivatives, applied in place on whole batches.

Every derivative is written through values the forward pass already cached:
``z`` (pre-activation) and ``a = f(z)`` (output), both of shape
``(n_samples, units)``. Nothing is recomputed in backward, and nothing of batch
size is allocated: callers pass the output and scratch buffers.

Softmax has no standalone derivative here. It is only allowed on the last
layer, fused with cross-entropy, where the output error simplifies to
``p - y`` (see :mod:`common.nn.losses`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class Activation(ABC):
    """``forward(z, out)`` writes ``f(z)``; ``backward`` multiplies ``delta`` by ``f'(z)``."""

    name: str = ""
    #: He initialisation suits relu; Glorot suits the saturating ones.
    init: str = "glorot"

    @abstractmethod
    def forward(self, z: Array, out: Array) -> None:
        """``out = f(z)``; ``z``, ``out``: (n, units), ``out`` may be ``z`` itself."""

    @abstractmethod
    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        """``delta *= f'(z)`` in place; ``scratch`` is a buffer shaped like ``delta``."""


class Identity(Activation):
    name = "identity"

    def forward(self, z: Array, out: Array) -> None:
        if out is not z:
            np.copyto(out, z)

    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        pass  # f'(z) = 1


class Relu(Activation):
    name = "relu"
    init = "he"

    def forward(self, z: Array, out: Array) -> None:
        np.maximum(z, 0, out=out)

    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        np.greater(z, 0, out=scratch)  # f'(z) = 1 where z > 0, else 0
        delta *= scratch


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z: Array, out: Array) -> None:
        # 1 / (1 + e^-z) overflows e^-z for z << 0; the tanh form never does.
        np.multiply(z, 0.5, out=out)
        np.tanh(out, out=out)
        out += 1
        out *= 0.5

    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        np.subtract(1, a, out=scratch)  # f'(z) = a (1 - a)
        scratch *= a
        delta *= scratch


class Tanh(Activation):
    name = "tanh"

    def forward(self, z: Array, out: Array) -> None:
        np.tanh(z, out=out)

    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        np.multiply(a, a, out=scratch)  # f'(z) = 1 - a^2
        np.subtract(1, scratch, out=scratch)
        delta *= scratch


class Softmax(Activation):
    """Row-wise softmax, shifted by the row max so ``exp`` never overflows.

    Forward also caches ``log_normalizer`` = log-sum-exp of each row, shape
    ``(n_samples,)``, which the fused cross-entropy reads as its loss term.
    """

    name = "softmax"

    def __init__(self) -> None:
        self.log_normalizer: Array = np.empty(0)
        self._row_sum: Array = np.empty(0)

    def reserve(self, capacity: int, dtype: np.dtype[Any]) -> None:
        """Preallocate the per-row caches for up to ``capacity`` samples."""
        self.log_normalizer = np.empty(capacity, dtype=dtype)
        self._row_sum = np.empty(capacity, dtype=dtype)

    def forward(self, z: Array, out: Array) -> None:
        n = z.shape[0]
        lse = self.log_normalizer[:n]
        np.maximum.reduce(z, axis=1, out=lse)  # np.max and np.sum, without their wrappers
        np.subtract(z, lse[:, None], out=out)
        np.exp(out, out=out)
        row_sum = np.add.reduce(out, axis=1, out=self._row_sum[:n])
        out /= row_sum[:, None]
        np.log(row_sum, out=row_sum)
        lse += row_sum  # log sum exp(z) = max + log sum exp(z - max)

    def backward(self, z: Array, a: Array, delta: Array, scratch: Array) -> None:
        raise TypeError("softmax has no standalone derivative here: it is fused with "
                        "cross_entropy on the last layer")


_ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Identity, Relu, Sigmoid, Tanh, Softmax)
}


def make_activation(name: str) -> Activation:
    """A fresh activation object (each layer owns its own caches)."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation: unknown {name!r}; choose one of "
                         f"{sorted(_ACTIVATIONS)}") from None
