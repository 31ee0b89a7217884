"""How a rank's gradients become the global gradient: the one all-reduce of each step.

``SumReduction`` (the default, fastest): each rank's gradient of its contiguous
shard, scaled by the global batch, summed in floating point. The result equals
the 1-worker result to rounding (~1e-16 relative in float64), but floating-point
addition is not associative, so the last bits depend on the number of workers.

``FixedPointReduction`` (``deterministic: true``): bit-identical weights for
any number of workers up to ``micro_shards``.

1. Every global batch is cut into ``micro_shards`` contiguous micro-shards, a
   number that does not depend on the worker count; a rank owns a contiguous run
   of them. Each micro-shard's gradient is computed on its own, with the same
   shapes wherever it runs.
2. Each is converted to int64 fixed point, ``trunc(g * 2**40)``. Scaling by a
   power of two is exact and truncation is deterministic, so the integers do not
   depend on who computed them; integer sums are associative, so neither the
   grouping into ranks nor the all-reduce's order can change the sum.
3. The summed integers are converted back once, ``sum * 2**-40``.

The trade: every gradient entry is rounded to a multiple of 2**-40 (~9.1e-13)
per micro-shard, and a loss or gradient entry reaching 2**22 (4.2e6) counts as
diverged (the int64 sums could overflow). The loss and the validation sums are reduced the
same way, so curves are identical too. Same BLAS thread count everywhere
(``cpus_per_worker``) is assumed: a GEMM may sum in another order on more threads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.collective import AllReduce
from common.data import shard_bounds
from common.nn import Network

Array = npt.NDArray[Any]

SCALE = 2.0**40
NORM_LIMIT = 2.0**22


class DivergedError(RuntimeError):
    """The loss or a gradient is NaN or inf; raised before the update is applied."""


@dataclass(frozen=True, slots=True)
class Reduced:
    """One step's reduced loss (mean over the global batch) and this rank's timings."""

    loss: float
    compute: float
    allreduce: float  # the transfer: the all-reduce call less the waiting
    wait: float  # for the slowest rank's compute


class SumReduction:
    """Float sum of per-rank shard gradients: ONE all-reduce of ``net.grad_buffer``,
    whose padding carries the loss and every rank's compute time."""

    def __init__(self, net: Network, comm: AllReduce):
        self.net, self.comm = net, comm
        self._validation = np.zeros(2, dtype=np.float64)

    @staticmethod
    def padding(world_size: int) -> int:
        return 1 + world_size  # loss, compute seconds of each rank

    def rows(self, global_batch: int) -> tuple[int, int]:
        """This rank's rows ``[lo, hi)`` of a global batch."""
        return shard_bounds(global_batch, self.comm.world_size, self.comm.rank)

    def capacity(self, batch_size: int) -> int:
        return -(-batch_size // self.comm.world_size)

    def step(self, x: Array, y: Array, global_batch: int, step: int) -> Reduced:
        """Gradients of ``(x, y)`` (this rank's rows) summed over ranks into ``net.grads``."""
        net, P, buf = self.net, self.net.num_parameters, self.net.grad_buffer
        t0 = time.perf_counter()
        if x.shape[0]:
            loss = net.compute_gradients(x, y, denominator=global_batch)
        else:  # a global batch smaller than the world: this rank adds nothing
            net.grads[...] = 0
            loss = 0.0
        t1 = time.perf_counter()
        buf[P] = loss
        buf[P + 1:] = 0
        buf[P + 1 + self.comm.rank] = t1 - t0
        self.comm.allreduce_sum(buf)
        t2 = time.perf_counter()
        global_loss = float(buf[P])
        # One pass over the gradients: a NaN or inf anywhere makes the sum non-finite.
        if not (math.isfinite(global_loss) and math.isfinite(float(net.grads.sum()))):
            raise DivergedError(f"diverged at step {step} (loss={global_loss})")
        return _timed(global_loss, t1 - t0, t2 - t1, float(buf[P + 1:].max()))

    def validate(self, x_val: Array, y_val: Array) -> tuple[float, int]:
        """``(loss sum, correct)`` over the whole validation set, each rank its part."""
        lo, hi = shard_bounds(x_val.shape[0], self.comm.world_size, self.comm.rank)
        self._validation[:] = self.net.evaluate(x_val[lo:hi], y_val[lo:hi])
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]), int(self._validation[1])


class FixedPointReduction:
    """Deterministic: micro-shard gradients summed as int64 fixed point (module docstring)."""

    def __init__(self, net: Network, comm: AllReduce, micro_shards: int):
        if comm.world_size > micro_shards:
            raise ValueError(f"micro_shards: {micro_shards} is fewer than the "
                             f"{comm.world_size} workers")
        self.net, self.comm, self.micro_shards = net, comm, micro_shards
        P = net.num_parameters
        self._fixed = np.zeros(P + 1 + comm.world_size, dtype=np.int64)
        self._scratch = np.empty(P, dtype=np.int64)
        self._validation = np.zeros(2, dtype=np.int64)
        self.first, self.last = shard_bounds(micro_shards, comm.world_size, comm.rank)

    def rows(self, global_batch: int) -> tuple[int, int]:
        if self.first == self.last:
            return 0, 0
        return (shard_bounds(global_batch, self.micro_shards, self.first)[0],
                shard_bounds(global_batch, self.micro_shards, self.last - 1)[1])

    def capacity(self, batch_size: int) -> int:
        return (self.last - self.first) * -(-batch_size // self.micro_shards)

    def step(self, x: Array, y: Array, global_batch: int, step: int) -> Reduced:
        net, P, fixed = self.net, self.net.num_parameters, self._fixed
        acc = fixed[:P]
        t0 = time.perf_counter()
        loss_fixed, empty = 0, True
        offset = self.rows(global_batch)[0]
        for m in range(self.first, self.last):
            lo, hi = shard_bounds(global_batch, self.micro_shards, m)
            if hi == lo:
                continue
            loss = net.compute_gradients(x[lo - offset:hi - offset], y[lo - offset:hi - offset],
                                         denominator=global_batch)
            if not math.isfinite(loss):
                raise DivergedError(f"diverged at step {step} (loss={loss})")
            if abs(loss) >= NORM_LIMIT:  # finite, but beyond the fixed-point range
                raise DivergedError(f"diverged at step {step} (loss={loss}; deterministic "
                                    f"mode holds losses and gradients below 2**22)")
            # g * 2**40 is exact; the cast truncates, the same way on every rank. The first
            # micro-shard goes straight into the sum: one pass less.
            np.multiply(net.grads, SCALE, out=self._scratch if not empty else acc,
                        casting="unsafe")
            if not empty:
                acc += self._scratch
            empty = False
            loss_fixed += int(loss * SCALE)
        if empty:
            acc[...] = 0
        t1 = time.perf_counter()
        fixed[P] = loss_fixed
        fixed[P + 1:] = 0
        fixed[P + 1 + self.comm.rank] = int((t1 - t0) * 1e6)
        self.comm.allreduce_sum(fixed)
        t2 = time.perf_counter()
        np.multiply(acc, 1.0 / SCALE, out=net.grads, casting="unsafe")
        # NaN, inf or an entry too large for int64 turns into INT64_MIN in the cast:
        # one check of the reduced gradients, instead of one per micro-shard, catches it.
        largest = max(float(net.grads.max()), -float(net.grads.min()))  # NaN stays NaN
        global_loss = float(fixed[P]) / SCALE
        if not largest < NORM_LIMIT:
            raise DivergedError(f"diverged at step {step} (loss={global_loss}, largest "
                                f"gradient {largest:.3g})")
        slowest = float(fixed[P + 1:].max()) / 1e6
        return _timed(global_loss, t1 - t0, t2 - t1, slowest)

    def validate(self, x_val: Array, y_val: Array) -> tuple[float, int]:
        """Validation in ``micro_shards`` fixed chunks, their loss sums in fixed point."""
        n = x_val.shape[0]
        loss_fixed, correct = 0, 0
        for m in range(self.first, self.last):
            lo, hi = shard_bounds(n, self.micro_shards, m)
            if hi > lo:
                loss_sum, right = self.net.evaluate(x_val[lo:hi], y_val[lo:hi])
                loss_fixed += int(loss_sum * SCALE)
                correct += right
        self._validation[:] = (loss_fixed, correct)
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]) / SCALE, int(self._validation[1])


def _timed(loss: float, compute: float, allreduce_call: float, slowest: float) -> Reduced:
    wait = max(0.0, slowest - compute)
    return Reduced(loss, compute, max(0.0, allreduce_call - wait), wait)
