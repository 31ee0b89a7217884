"""Optimizers on the flat parameter and gradient arrays (PyTorch's formulas).

State is flat arrays too, so checkpoints are a handful of vectors and every
replica's state stays identical when its gradients are. Steps are in place and
allocate nothing: scratch buffers are made once.

SGD, with weight decay ``wd``, momentum ``mu`` and learning rate ``lr``::

    g = grad + wd * p
    v = mu * v + g                 (v starts at 0, so v_1 = g_1)
    d = g + mu * v  if nesterov  else  v      (d = g without momentum)
    p = p - lr * d

Adam, step t starting at 1::

    g = grad + wd * p
    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
    p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

AdamW decouples the weight decay from the gradient (``torch.optim.AdamW``)::

    p = p * (1 - lr * wd)          first, then Adam's update with g = grad

``lr`` is the step's rate, given to every ``step`` (a schedule changes it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt

from common.schemas import OptimizerSpec

Array = npt.NDArray[Any]


#: Parameters per block of an update. An update makes several passes (SGD with
#: momentum four, Adam thirteen); done over the whole (P,) arrays, each pass streams
#: them through memory again. Block by block, a block's parameters, gradient, state and
#: scratch (64 Ki float32 values each: 1.25 MiB) stay in a core's L2 cache across the
#: passes, so memory sees each array read once and written once. The arithmetic is per
#: element, so the result is bitwise that of the whole-array passes.
BLOCK = 65536


class Optimizer(ABC):
    """``step(params, grads, lr)`` updates ``params`` in place; state as flat arrays.
    ``per_parameter`` names the state arrays with one entry per parameter (a sharded
    update slices them). Subclasses write the update of one block, ``_update``."""

    per_parameter: tuple[str, ...] = ()

    def __init__(self, dtype: np.dtype[Any]):
        self._scratch: Array = np.empty(BLOCK, dtype=dtype)

    def step(self, params: Array, grads: Array, lr: float) -> None:
        """Step 5: update ``params`` (P,) in place from the averaged ``grads`` (P,) at the
        learning rate ``lr``, one cache-sized block at a time."""
        self._begin(lr)
        for lo in range(0, params.shape[0], BLOCK):
            hi = min(lo + BLOCK, params.shape[0])
            self._update(params[lo:hi], grads[lo:hi], slice(lo, hi), lr,
                         self._scratch[:hi - lo])

    def _begin(self, lr: float) -> None:  # noqa: B027 (optional: most have nothing to do)
        """Once per step, before the blocks (Adam counts its steps here)."""

    @abstractmethod
    def _update(self, params: Array, grads: Array, block: slice, lr: float,
                scratch: Array) -> None:
        """Update one block: ``params``, ``grads`` and ``scratch`` (n,) are the block's;
        ``block`` selects it in the state arrays."""

    @abstractmethod
    def state_dict(self) -> dict[str, Array]:
        """Copies of the state arrays, for checkpoints."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Continue from a :meth:`state_dict` (same sizes)."""


def _regularized(params: Array, grads: Array, weight_decay: float, scratch: Array) -> Array:
    """``grads + weight_decay * params`` (into ``scratch``), or ``grads`` itself."""
    if weight_decay == 0:
        return grads
    np.multiply(params, weight_decay, out=scratch)
    scratch += grads
    return scratch


class SGD(Optimizer):
    def __init__(self, size: int, dtype: np.dtype[Any], *, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(dtype)
        self.momentum, self.nesterov = float(momentum), nesterov
        self.per_parameter = ("velocity",) if momentum else ()
        self.weight_decay = float(weight_decay)
        self.velocity: Array = np.zeros(size if momentum else 0, dtype=dtype)
        self._direction: Array = np.empty(BLOCK if nesterov else 0, dtype=dtype)

    def _update(self, params: Array, grads: Array, block: slice, lr: float,
                scratch: Array) -> None:
        g = _regularized(params, grads, self.weight_decay, scratch)
        direction = g
        if self.momentum:
            velocity = self.velocity[block]
            velocity *= self.momentum
            velocity += g
            direction = velocity
            if self.nesterov:
                direction = self._direction[:params.shape[0]]
                np.multiply(velocity, self.momentum, out=direction)
                direction += g
        np.multiply(direction, lr, out=scratch)
        params -= scratch

    def state_dict(self) -> dict[str, Array]:
        return {"velocity": self.velocity.copy()}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        self.velocity[...] = state["velocity"]


class Adam(Optimizer):
    """Adam; ``decoupled``: AdamW (the weight decay shrinks the parameters, not the
    gradient)."""

    def __init__(self, size: int, dtype: np.dtype[Any], *, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False):
        super().__init__(dtype)
        self.eps = float(eps)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.weight_decay, self.decoupled = float(weight_decay), decoupled
        self.per_parameter = ("m", "v")
        self.t = 0
        self._bias1 = self._bias2 = 1.0  # 1 - beta^t of the step being taken
        self.m: Array = np.zeros(size, dtype=dtype)
        self.v: Array = np.zeros(size, dtype=dtype)
        self._g: Array = np.empty(BLOCK if weight_decay and not decoupled else 0, dtype=dtype)

    def _begin(self, lr: float) -> None:
        self.t += 1
        self._bias1 = 1.0 - self.beta1**self.t
        self._bias2 = 1.0 - self.beta2**self.t

    def _update(self, params: Array, grads: Array, block: slice, lr: float,
                s: Array) -> None:
        if self.decoupled:
            if self.weight_decay:
                params *= 1.0 - lr * self.weight_decay
            g = grads
        else:
            g = _regularized(params, grads, self.weight_decay, self._g[:params.shape[0]])
        m, v = self.m[block], self.v[block]
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=s)
        m += s
        v *= self.beta2
        np.multiply(g, g, out=s)
        s *= 1.0 - self.beta2
        v += s
        np.sqrt(v, out=s)
        s *= 1.0 / math.sqrt(self._bias2)
        s += self.eps
        np.divide(m, s, out=s)
        s *= lr / self._bias1
        params -= s

    def state_dict(self) -> dict[str, Array]:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": np.array(self.t)}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])


def make_optimizer(spec: OptimizerSpec, size: int, dtype: np.dtype[Any]) -> Optimizer:
    """The optimizer a spec names, for ``size`` parameters of ``dtype``."""
    if spec.kind == "sgd":
        return SGD(size, dtype, momentum=spec.momentum, nesterov=spec.nesterov,
                   weight_decay=spec.weight_decay)
    return Adam(size, dtype, beta1=spec.beta1, beta2=spec.beta2, eps=spec.eps,
                weight_decay=spec.weight_decay, decoupled=spec.kind == "adamw")
