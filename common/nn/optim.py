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


class Optimizer(ABC):
    """``step(params, grads, lr)`` updates ``params`` in place; state as flat arrays.
    ``per_parameter`` names the state arrays with one entry per parameter (a sharded
    update slices them)."""

    per_parameter: tuple[str, ...] = ()

    @abstractmethod
    def step(self, params: Array, grads: Array, lr: float) -> None:
        """Step 5: update ``params`` (P,) in place from the averaged ``grads`` (P,) at the
        learning rate ``lr``."""

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
        self.momentum, self.nesterov = float(momentum), nesterov
        self.per_parameter = ("velocity",) if momentum else ()
        self.weight_decay = float(weight_decay)
        self.velocity: Array = np.zeros(size if momentum else 0, dtype=dtype)
        self._scratch: Array = np.empty(size, dtype=dtype)
        self._direction: Array = np.empty(size if nesterov else 0, dtype=dtype)

    def step(self, params: Array, grads: Array, lr: float) -> None:
        g = _regularized(params, grads, self.weight_decay, self._scratch)
        direction = g
        if self.momentum:
            self.velocity *= self.momentum
            self.velocity += g
            direction = self.velocity
            if self.nesterov:
                np.multiply(self.velocity, self.momentum, out=self._direction)
                self._direction += g
                direction = self._direction
        np.multiply(direction, lr, out=self._scratch)
        params -= self._scratch

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
        self.eps = float(eps)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.weight_decay, self.decoupled = float(weight_decay), decoupled
        self.per_parameter = ("m", "v")
        self.t = 0
        self.m: Array = np.zeros(size, dtype=dtype)
        self.v: Array = np.zeros(size, dtype=dtype)
        self._scratch: Array = np.empty(size, dtype=dtype)
        self._g: Array = np.empty(size if weight_decay and not decoupled else 0, dtype=dtype)

    def step(self, params: Array, grads: Array, lr: float) -> None:
        self.t += 1
        if self.decoupled:
            if self.weight_decay:
                params *= 1.0 - lr * self.weight_decay
            g = grads
        else:
            g = _regularized(params, grads, self.weight_decay, self._g)
        s = self._scratch
        self.m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=s)
        self.m += s
        self.v *= self.beta2
        np.multiply(g, g, out=s)
        s *= 1.0 - self.beta2
        self.v += s
        bias1 = 1.0 - self.beta1**self.t
        bias2 = 1.0 - self.beta2**self.t
        np.sqrt(self.v, out=s)
        s *= 1.0 / math.sqrt(bias2)
        s += self.eps
        np.divide(self.m, s, out=s)
        s *= lr / bias1
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
