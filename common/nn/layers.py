"""The dense layer: ``z = x W + b``, ``a = f(z)``, on whole batches.

A layer owns no parameter memory: ``W``, ``b``, ``dW``, ``db`` are views into
the network's flat parameter and gradient buffers (see
:class:`common.nn.network.Network`). It does own its per-batch caches, sized
once for the largest batch seen and reused through views afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from common.nn.activations import Activation, Identity, Softmax
from common.nn.dropout import DropoutKey, padded_units

Array = npt.NDArray[Any]


class Dense:
    """A fully connected layer.

    Parameters
    ----------
    W, dW : ndarray of shape (fan_in, fan_out)
    b, db : ndarray of shape (fan_out,)
    activation : the layer's nonlinearity ``f``
    dropout : the rate of inverted dropout on the outputs while training (hidden layers)
    """

    def __init__(self, W: Array, b: Array, dW: Array, db: Array, activation: Activation,
                 dropout: float = 0.0):
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.activation = activation
        self.dropout = dropout
        self.fan_in, self.fan_out = W.shape
        self.capacity = 0
        self.x: Array = np.empty((0, self.fan_in), dtype=W.dtype)  # cached input
        self.z: Array = np.empty((0, self.fan_out), dtype=W.dtype)  # pre-activation
        self.a: Array = self.z  # output f(z)
        self.error: Array = self.z  # dL/dz, "delta"
        self.scratch: Array = self.z  # for f'(z)
        # dropout: uniforms, kept units, the mask (0 or 1/(1-rate)), the masked output
        self._uniforms: Array = np.empty((0, padded_units(self.fan_out)))
        self._kept: Array = np.empty((0, self.fan_out), dtype=bool)
        self.mask: Array = self.z
        self.dropped: Array = self.z
        self.masked = False  # did the last forward apply a mask?

    def initialize(self, rng: np.random.Generator) -> None:
        """He-normal weights for relu, Glorot-uniform for the rest; zero biases."""
        if self.activation.init == "he":
            self.W[...] = rng.normal(0.0, np.sqrt(2.0 / self.fan_in), size=self.W.shape)
        else:
            limit = np.sqrt(6.0 / (self.fan_in + self.fan_out))
            self.W[...] = rng.uniform(-limit, limit, size=self.W.shape)
        self.b[...] = 0

    def reserve(self, capacity: int) -> None:
        """Make room for batches of up to ``capacity`` samples (grow only)."""
        if capacity <= self.capacity:
            return
        shape, dtype = (capacity, self.fan_out), self.W.dtype
        self.z = np.empty(shape, dtype=dtype)
        # identity needs no separate output: a IS z.
        self.a = self.z if isinstance(self.activation, Identity) else np.empty(shape, dtype=dtype)
        self.error = np.empty(shape, dtype=dtype)
        self.scratch = np.empty(shape, dtype=dtype)
        if isinstance(self.activation, Softmax):
            self.activation.reserve(capacity, dtype)
        if self.dropout:
            self._uniforms = np.empty((capacity, padded_units(self.fan_out)))
            self._kept = np.empty(shape, dtype=bool)
            self.mask = np.empty(shape, dtype=dtype)
            self.dropped = np.empty(shape, dtype=dtype)
        self.capacity = capacity

    def forward(self, x: Array, dropout: DropoutKey | None = None, index: int = 0) -> Array:
        """``x``: (n, fan_in), C-contiguous, the layer's dtype. Returns ``a``: (n, fan_out),
        masked by dropout when a ``dropout`` key is given (training) and the layer has a
        rate; ``index`` is the layer's place in the network (0-based), part of the key.

        Caches ``x``, ``z``, ``a`` (and the mask) for backward; the returned array is a
        view of the layer's buffer, valid until the next forward.
        """
        n = x.shape[0]
        self.x = x
        z, a = self.z[:n], self.a[:n]
        np.matmul(x, self.W, out=z)
        z += self.b
        self.activation.forward(z, a)
        self.masked = dropout is not None and self.dropout > 0
        if not self.masked:
            return a
        assert dropout is not None
        uniforms, kept, mask = self._uniforms[:n], self._kept[:n], self.mask[:n]
        dropout.uniforms(index, uniforms)
        np.greater_equal(uniforms[:, :self.fan_out], self.dropout, out=kept)
        np.multiply(kept, 1.0 / (1.0 - self.dropout), out=mask)
        return np.multiply(a, mask, out=self.dropped[:n])

    def compute_weight_gradients(self, delta: Array) -> None:
        """Step 4: from this layer's error ``delta`` (n, fan_out), write ``dW = x^T delta``
        (fan_in, fan_out) and ``db = sum delta`` (fan_out,)."""
        np.matmul(self.x.T, delta, out=self.dW)
        np.add.reduce(delta, axis=0, out=self.db)  # np.sum without its wrapper: small nets feel it

    def error_of_previous(self, delta: Array, previous: Dense) -> Array:
        """The previous layer's error: ``(delta W^T) [* mask_prev] * f_prev'(z_prev)``,
        shape (n, fan_in)."""
        n = delta.shape[0]
        previous_error = previous.error[:n]
        np.matmul(delta, self.W.T, out=previous_error)
        if previous.masked:  # through the dropout: d(a * mask)/da = mask
            previous_error *= previous.mask[:n]
        previous.activation.backward(previous.z[:n], previous.a[:n], previous_error,
                                     previous.scratch[:n])
        return previous_error
