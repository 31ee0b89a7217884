"""The network: forward, loss, backward, gradients, update — on flat buffers.

All parameters live in ONE contiguous 1-D array (``Network.params``) and all
gradients in another (``Network.grads``); each layer's ``W``, ``b``, ``dW``,
``db`` are views into them, laid out layer by layer as ``W_1, b_1, W_2, b_2,
...``. So one in-place all-reduce moves every gradient, and an optimizer step
is a few vector operations on flat arrays.

The five steps of one training step, by name:

1. ``forward``   - each layer computes ``z = x W + b`` and ``a = f(z)``, caching both;
2. ``compute_loss`` - the loss of the cached outputs against the targets;
3. ``backward``  - the loss writes the output error dL/dz; each hidden layer's error
   is the next layer's error sent back through its weights, times the
   activation's derivative;
4. weight gradients - ``dW = a_prev^T delta`` and ``db = sum(delta)`` per layer
   (``Dense.compute_weight_gradients``, inside ``backward``);
   ``compute_gradients`` runs 1-4;
5. update        - an optimizer (:mod:`common.nn.optim`) steps ``params`` with ``grads``.

Trade-off: buffers are sized for the largest batch seen and reused, so the
training loop allocates nothing batch- or parameter-sized; the price is that a
network is not re-entrant (one forward/backward at a time).
"""

from __future__ import annotations

import json
import os
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from common.nn.activations import make_activation
from common.nn.dropout import DropoutKey
from common.nn.layers import Dense
from common.nn.losses import Loss, make_loss
from common.preprocessing import ClassName, Preprocessing
from common.schemas import DTypeName, LossName, ModelSpec

Array = npt.NDArray[Any]

#: Batches larger than this are evaluated in pieces (predict, evaluate).
EVAL_CHUNK = 1024


class Network:
    """A multi-layer perceptron with flat parameter and gradient buffers.

    Parameters
    ----------
    spec : the model (``input_dim`` and the layers)
    loss : ``"mse"`` or ``"cross_entropy"``
    dtype : ``"float32"`` (default) or ``"float64"``
    seed : seeds the ``numpy.random.Generator`` of the initial weights
    grads : where to write the gradients, shape ``(P,)`` of ``dtype``, C-contiguous;
        the caller's buffer (the data-parallel reduction hands out a view of the
        buffer it all-reduces, so no copy is made). Default: a fresh one.

    Example: ``input_dim=64, layers=[128 relu, 10 softmax]`` gives
    ``params`` of shape ``(64*128 + 128 + 128*10 + 10,) = (9610,)``, and
    ``parameters()`` = ``[(W (64, 128), b (128,)), (W (128, 10), b (10,))]``.
    """

    def __init__(self, spec: ModelSpec, *, loss: LossName, dtype: DTypeName = "float32",
                 seed: int = 0, grads: Array | None = None):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.loss: Loss = make_loss(loss)
        if (loss == "cross_entropy") != (spec.layers[-1].activation == "softmax"):
            raise ValueError("loss: cross_entropy goes with a softmax last layer, and only with it")
        sizes = spec.layer_sizes
        self.num_parameters = spec.num_parameters
        self.params: Array = np.zeros(self.num_parameters, dtype=self.dtype)
        self.grads: Array = self._gradient_buffer(grads)
        #: What :meth:`predict` applies to raw inputs and outputs (a trained model's).
        self.preprocessing = Preprocessing()
        self.layers: list[Dense] = []
        offset = 0
        for fan_in, fan_out, layer_spec in zip(sizes[:-1], sizes[1:], spec.layers, strict=True):
            w_end = offset + fan_in * fan_out
            b_end = w_end + fan_out
            self.layers.append(Dense(
                self.params[offset:w_end].reshape(fan_in, fan_out), self.params[w_end:b_end],
                self.grads[offset:w_end].reshape(fan_in, fan_out), self.grads[w_end:b_end],
                make_activation(layer_spec.activation), layer_spec.dropout))
            offset = b_end
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.initialize(rng)

    def _gradient_buffer(self, grads: Array | None) -> Array:
        if grads is None:
            return np.zeros(self.num_parameters, dtype=self.dtype)
        if (grads.shape != (self.num_parameters,) or grads.dtype != self.dtype
                or not (grads.flags.c_contiguous and grads.flags.writeable)):
            raise ValueError(f"grads: needs a writable contiguous ({self.num_parameters},) "
                             f"{self.dtype} array, got {grads.dtype} {grads.shape}")
        return grads

    @classmethod
    def from_spec(cls, spec: ModelSpec | dict[str, Any], *, seed: int = 0,
                  dtype: DTypeName = "float32", loss: LossName | None = None,
                  grads: Array | None = None) -> Network:
        """Build from a model spec (validated first, so nothing is half-built).

        ``loss`` defaults to cross_entropy for a softmax last layer, else mse.
        """
        model = spec if isinstance(spec, ModelSpec) else ModelSpec.model_validate(spec)
        if loss is None:
            loss = "cross_entropy" if model.layers[-1].activation == "softmax" else "mse"
        return cls(model, loss=loss, dtype=dtype, seed=seed, grads=grads)

    # ---- views ------------------------------------------------------------------------

    @property
    def input_dim(self) -> int:
        return int(self.layers[0].fan_in)

    @property
    def output_dim(self) -> int:
        return int(self.layers[-1].fan_out)

    @property
    def classifies(self) -> bool:
        """True for softmax + cross-entropy: outputs are class probabilities."""
        return self.loss.name == "cross_entropy"

    def parameters(self) -> list[tuple[Array, Array]]:
        """``[(W, b), ...]``: writable views, ``W`` (fan_in, fan_out), ``b`` (fan_out,)."""
        return [(layer.W, layer.b) for layer in self.layers]

    def gradient_views(self) -> list[tuple[Array, Array]]:
        """``[(dW, db), ...]``: views of the last computed gradients."""
        return [(layer.dW, layer.db) for layer in self.layers]

    def reserve(self, capacity: int) -> None:
        """Size every per-batch buffer for ``capacity`` samples (grow only)."""
        for layer in self.layers:
            layer.reserve(capacity)

    # ---- the training step ------------------------------------------------------------

    def forward(self, x: Array, dropout: DropoutKey | None = None) -> Array:
        """``x``: (n, input_dim) -> output activations (n, output_dim), a buffer view.
        With a ``dropout`` key (training), hidden layers with a rate drop units."""
        self.reserve(x.shape[0])
        a = x
        for index, layer in enumerate(self.layers):
            a = layer.forward(a, dropout, index)
        return a

    def backward(self, output_error: Array) -> None:
        """From the output layer's error (n, output_dim), fill ``grads`` for every layer."""
        delta = output_error
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            layer.compute_weight_gradients(delta)
            if index > 0:
                delta = layer.error_of_previous(delta, self.layers[index - 1])

    def compute_gradients(self, x: Array, y: Array, denominator: float | None = None,
                          dropout: DropoutKey | None = None) -> float:
        """Forward, loss, backward: fill ``grads``, return the loss. No input checks.

        ``x``: (n, input_dim) in the network's dtype, C-contiguous. ``y``: (n,)
        class indices or (n, outputs). The loss and gradients are of
        ``sum over these n samples / denominator`` (default n: the batch mean), with the
        dropout masks of ``dropout`` (None: no dropout).
        """
        n = x.shape[0]
        denominator = denominator or n
        self.forward(x, dropout)
        loss = self.compute_loss(y, n) / denominator
        last = self.layers[-1]
        self.loss.output_error(last.z[:n], last.a[:n], y, last.activation, denominator,
                               last.error[:n], last.scratch[:n])
        self.backward(last.error[:n])
        return loss

    def compute_loss(self, y: Array, n: int) -> float:
        """Step 2: the SUM of the per-sample losses of the last forward pass's ``n``
        outputs against ``y`` (n,) labels or (n, outputs) targets."""
        last = self.layers[-1]
        return self.loss.loss_sum(last.z[:n], last.a[:n], y, last.activation,
                                  last.scratch[:n])

    # ---- the public, checked API --------------------------------------------------------

    def loss_and_gradients(self, x: Array, y: Array, dropout: DropoutKey | None = None
                           ) -> tuple[float, list[tuple[Array, Array]]]:
        """The batch-mean loss and ``[(dW, db), ...]`` (copies) for ``(x, y)``, with the
        dropout masks of ``dropout`` (default none); no update."""
        xc, yc = self.check_batch(x, y)
        loss = self.compute_gradients(xc, yc, dropout=dropout)
        return loss, [(dW.copy(), db.copy()) for dW, db in self.gradient_views()]

    def predict(self, x: Array) -> Array:
        """Outputs for RAW inputs ``x`` (n, input_dim), as the user's data came: the
        preprocessing is applied first, and regression outputs are mapped back to the
        targets' units. (n, output_dim), a new array; class probabilities for classifiers."""
        xc = self.preprocessing.transform_x(self.check_inputs(x), np.empty(
            (np.shape(x)[0], self.input_dim), dtype=self.dtype))
        out = np.empty((xc.shape[0], self.output_dim), dtype=self.dtype)
        for start in range(0, xc.shape[0], EVAL_CHUNK):
            stop = start + EVAL_CHUNK
            out[start:stop] = self.forward(xc[start:stop])
        return out if self.classifies else self.preprocessing.inverse_y(out)

    def class_names(self, outputs: Array) -> list[ClassName]:
        """The class each row of :meth:`predict`'s ``outputs`` says, by its original name."""
        indices = outputs.argmax(axis=1).tolist()
        names = self.preprocessing.class_names
        return [names[i] for i in indices] if names is not None else indices

    def evaluate(self, x: Array, y: Array) -> tuple[float, int]:
        """``(sum of per-sample losses, number classified correctly)`` over ``(x, y)``.

        Sums, not means, so ranks holding parts of a validation set can add them
        up exactly. ``correct`` is 0 for regression.
        """
        loss_sum, correct = 0.0, 0
        for start in range(0, x.shape[0], EVAL_CHUNK):
            xb, yb = x[start:start + EVAL_CHUNK], y[start:start + EVAL_CHUNK]
            out = self.forward(xb)
            loss_sum += self.compute_loss(yb, xb.shape[0])
            if self.classifies:
                labels = yb if yb.ndim == 1 else yb.argmax(axis=1)
                correct += int(np.count_nonzero(out.argmax(axis=1) == labels))
        return loss_sum, correct

    def check_inputs(self, x: Array) -> Array:
        """``x`` as a C-contiguous array of the network's dtype, or a ValueError naming its shape.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x: expected shape (n, {self.input_dim}), got {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise ValueError(f"x: expected real numbers, got dtype {x.dtype}")
        if not np.isfinite(x).all():
            row = int(np.argwhere(~np.isfinite(x))[0][0])
            raise ValueError(f"x: contains NaN or inf (first in row {row})")
        return np.ascontiguousarray(x, dtype=self.dtype)

    def check_batch(self, x: Array, y: Array) -> tuple[Array, Array]:
        """Checked ``(x, y)``: labels (n,) in [0, classes) or targets (n, outputs)."""
        xc = self.check_inputs(x)
        n = xc.shape[0]
        y = np.asarray(y)
        if self.classifies and y.ndim == 1:
            if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"y: expected {n} integer class labels, got {y.dtype} {y.shape}")
            if n and (y.min() < 0 or y.max() >= self.output_dim):
                raise ValueError(f"y: class labels must be in [0, {self.output_dim}), "
                                 f"found {int(y.min())}..{int(y.max())}")
            return xc, y.astype(np.intp, copy=False)
        if not self.classifies and y.ndim == 1 and self.output_dim == 1:
            y = y.reshape(-1, 1)
        if y.shape != (n, self.output_dim):
            raise ValueError(f"y: expected shape ({n}, {self.output_dim}), got {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        return xc, np.ascontiguousarray(y, dtype=self.dtype)

    # ---- persistence --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str] | BinaryIO) -> None:
        """Write an .npz with the flat parameters, the spec and the preprocessing (no pickle)."""
        meta = {"model": self.spec.model_dump(), "loss": self.loss.name, "dtype": self.dtype.name}
        arrays: dict[str, Any] = {"params": self.params, "meta": np.array(json.dumps(meta)),
                                  **self.preprocessing.to_arrays()}
        if isinstance(path, str | os.PathLike):
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        else:
            np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | BinaryIO) -> Network:
        """Rebuild a network written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            net = cls.from_spec(meta["model"], loss=meta["loss"], dtype=meta["dtype"])
            params = archive["params"]
            if params.shape != net.params.shape:
                raise ValueError(f"params: expected shape {net.params.shape}, got {params.shape}")
            net.params[...] = params
            net.preprocessing = Preprocessing.from_arrays({k: archive[k] for k in archive.files})
        return net
