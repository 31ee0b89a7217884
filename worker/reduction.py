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
   shapes wherever it runs. (Not the rows of one bigger GEMM: OpenBLAS picks its
   kernels by shape, and a row of ``x @ W`` changes its last bits with the number
   of rows in the call.)
2. Each is rounded to fixed point, a whole multiple of ``2**-36``: the loss's
   denominator is the global batch times ``2**-36``, so backpropagation yields
   ``g * 2**36`` directly (a power-of-two scale is exact in floating point), and
   ``trunc`` makes it an integer, the same way on every rank.
3. The integers are summed in float64, where integers below ``2**53`` add
   exactly: the sum is associative, so neither the grouping into ranks nor the
   all-reduce's order can change it. One float64 pass per micro-shard, no
   float-to-int64 cast (which AVX2 lacks and costs twice as much).
4. The sum is scaled back once, ``sum * 2**-36``.

The trade: every gradient entry is rounded to a multiple of 2**-36 (~1.5e-11)
per micro-shard, and a loss or summed gradient entry reaching 2**17 (131072)
counts as diverged (beyond it, the float64 sums would no longer be exact). The
loss and the validation sums are reduced the same way, so curves are identical
too. Same BLAS thread count everywhere (``cpus_per_worker``) is assumed: a GEMM
may sum in another order on more threads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from common.collective import AllReduce
from common.data import Dataset, shard_bounds
from common.nn import Network
from common.nn.network import EVAL_CHUNK

Array = npt.NDArray[Any]

SCALE_BITS = 36
SCALE = 2.0**SCALE_BITS
NORM_LIMIT = 2.0**(53 - SCALE_BITS)  # float64 adds integers exactly below 2**53


class DivergedError(RuntimeError):
    """The loss or a gradient is NaN or inf; raised before the update is applied."""


@dataclass(frozen=True, slots=True)
class Reduced:
    """One step's reduced loss (mean over the global batch) and this rank's timings."""

    loss: float
    compute: float
    allreduce: float  # the transfer: the all-reduce call less the waiting
    wait: float  # for the slowest rank's compute


def padding(world_size: int) -> int:
    """Slots after the P gradients of a step's buffer: the loss, then the compute
    seconds of each rank (so ONE all-reduce call carries all three)."""
    return 1 + world_size


def _allreduce_padded(comm: AllReduce, buf: Array, loss: float, seconds: float
                      ) -> tuple[float, float]:
    """Sum ``buf`` (P gradients, then :func:`padding`) over the ranks in one call, with
    this rank's ``loss`` and compute ``seconds`` in the padding. Returns the summed loss
    and the slowest rank's compute seconds."""
    P = buf.shape[0] - padding(comm.world_size)
    buf[P] = loss
    buf[P + 1:] = 0
    buf[P + 1 + comm.rank] = seconds
    comm.allreduce_sum(buf)
    return float(buf[P]), float(buf[P + 1:].max())


class Reduction(Protocol):
    """How one step's gradients are computed on a rank and summed over all ranks.

    A reduction owns the buffer it all-reduces. ``gradient_buffer`` is where the
    network should write its gradients, ``(P,)``, when that can be a view of it
    (no copy before the all-reduce), else None (the network keeps its own).
    """

    gradient_buffer: Array | None

    def rows(self, global_batch: int) -> tuple[int, int]:
        """This rank's rows ``[lo, hi)`` of a global batch."""
        ...

    def capacity(self, batch_size: int) -> int:
        """The most rows this rank computes at once, for a global ``batch_size``."""
        ...

    def step(self, net: Network, x: Array, y: Array, global_batch: int, step: int) -> Reduced:
        """Gradients of ``(x, y)`` (this rank's rows) summed over ranks into ``net.grads``."""
        ...

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        """``(loss sum, correct)`` over the whole validation set, each rank its part."""
        ...


def make_reduction(deterministic: bool, micro_shards: int, comm: AllReduce,
                   num_parameters: int, dtype: np.dtype[Any]) -> Reduction:
    """The fixed-point reduction in deterministic mode, else the float sum."""
    if deterministic:
        return FixedPointReduction(comm, num_parameters, micro_shards)
    return SumReduction(comm, num_parameters, dtype)


class SumReduction:
    """Float sum of per-rank shard gradients: ONE all-reduce of ``buffer``, the P
    gradients followed by :func:`padding`."""

    def __init__(self, comm: AllReduce, num_parameters: int, dtype: np.dtype[Any]):
        self.comm = comm
        self.buffer: Array = np.zeros(num_parameters + padding(comm.world_size), dtype=dtype)
        self.gradient_buffer: Array | None = self.buffer[:num_parameters]
        self._validation = np.zeros(2, dtype=np.float64)

    def rows(self, global_batch: int) -> tuple[int, int]:
        return shard_bounds(global_batch, self.comm.world_size, self.comm.rank)

    def capacity(self, batch_size: int) -> int:
        return -(-batch_size // self.comm.world_size)

    def step(self, net: Network, x: Array, y: Array, global_batch: int, step: int) -> Reduced:
        t0 = time.perf_counter()
        if x.shape[0]:
            loss = net.compute_gradients(x, y, denominator=global_batch)
        else:  # a global batch smaller than the world: this rank adds nothing
            net.grads[...] = 0
            loss = 0.0
        t1 = time.perf_counter()
        global_loss, slowest = _allreduce_padded(self.comm, self.buffer, loss, t1 - t0)
        t2 = time.perf_counter()
        # One pass over the gradients: a NaN or inf anywhere makes the sum non-finite.
        if not (math.isfinite(global_loss) and math.isfinite(float(net.grads.sum()))):
            raise DivergedError(f"diverged at step {step} (loss={global_loss})")
        return _timed(global_loss, t1 - t0, t2 - t1, slowest)

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        lo, hi = shard_bounds(data.n_val, self.comm.world_size, self.comm.rank)
        self._validation[:] = evaluate_rows(net, data, lo, hi)
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]), int(self._validation[1])


class FixedPointReduction:
    """Deterministic: micro-shard gradients summed as exact fixed point (module docstring)."""

    def __init__(self, comm: AllReduce, num_parameters: int, micro_shards: int):
        if comm.world_size > micro_shards:
            raise ValueError(f"micro_shards: {micro_shards} is fewer than the "
                             f"{comm.world_size} workers")
        self.comm, self.micro_shards = comm, micro_shards
        # Each micro-shard's gradients are made whole numbers before they are added
        # to the float64 buffer below: the network keeps a plain buffer of its own.
        self.gradient_buffer: Array | None = None
        # The fixed-point gradients (whole numbers in float64), then padding().
        self._fixed = np.zeros(num_parameters + padding(comm.world_size), dtype=np.float64)
        self._validation = np.zeros(2, dtype=np.int64)
        self.first, self.last = shard_bounds(micro_shards, comm.world_size, comm.rank)

    def rows(self, global_batch: int) -> tuple[int, int]:
        if self.first == self.last:
            return 0, 0
        return (shard_bounds(global_batch, self.micro_shards, self.first)[0],
                shard_bounds(global_batch, self.micro_shards, self.last - 1)[1])

    def capacity(self, batch_size: int) -> int:
        return (self.last - self.first) * -(-batch_size // self.micro_shards)

    def step(self, net: Network, x: Array, y: Array, global_batch: int, step: int) -> Reduced:
        P, fixed = net.num_parameters, self._fixed
        acc, grads = fixed[:P], net.grads
        t0 = time.perf_counter()
        loss_fixed, empty = 0, True
        offset = self.rows(global_batch)[0]
        for m in range(self.first, self.last):
            lo, hi = shard_bounds(global_batch, self.micro_shards, m)
            if hi == lo:
                continue
            # Gradients and loss come out times 2**36, exactly (the module docstring).
            scaled_loss = net.compute_gradients(x[lo - offset:hi - offset],
                                                y[lo - offset:hi - offset],
                                                denominator=global_batch / SCALE)
            if not math.isfinite(scaled_loss):
                raise DivergedError(f"diverged at step {step} (loss={scaled_loss / SCALE})")
            np.trunc(grads, out=grads)
            if empty:  # the first goes straight in: a pass less than zeroing, then adding
                np.copyto(acc, grads)
            else:
                np.add(acc, grads, out=acc)  # exact: whole numbers below 2**53
            empty = False
            loss_fixed += math.trunc(scaled_loss)
        if empty:
            acc[...] = 0
        t1 = time.perf_counter()
        loss_sum, slowest = _allreduce_padded(self.comm, fixed, loss_fixed, t1 - t0)
        t2 = time.perf_counter()
        np.multiply(acc, 1.0 / SCALE, out=grads, casting="same_kind")
        # One check of the reduced sums catches NaN and inf (they propagate) and a
        # sum too large to have been added exactly.
        global_loss = loss_sum / SCALE
        largest = max(float(grads.max()), -float(grads.min()), abs(global_loss))  # NaN stays
        if not largest < NORM_LIMIT:
            raise DivergedError(f"diverged at step {step} (loss={global_loss}; deterministic "
                                f"mode holds the loss and gradients below 2**"
                                f"{53 - SCALE_BITS}, the largest is {largest:.3g})")
        return _timed(global_loss, t1 - t0, t2 - t1, slowest)

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        """Validation in ``micro_shards`` fixed chunks, their loss sums in fixed point."""
        n = data.n_val
        loss_fixed, correct = 0, 0
        for m in range(self.first, self.last):
            lo, hi = shard_bounds(n, self.micro_shards, m)
            if hi > lo:
                loss_sum, right = evaluate_rows(net, data, lo, hi)
                loss_fixed += int(loss_sum * SCALE)
                correct += right
        self._validation[:] = (loss_fixed, correct)
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]) / SCALE, int(self._validation[1])


def evaluate_rows(net: Network, data: Dataset, lo: int, hi: int) -> tuple[float, int]:
    """``(loss sum, correct)`` over validation rows ``[lo, hi)``, gathered a chunk at a time
    (the same chunks :meth:`Network.evaluate` would cut, so the sums are the same)."""
    loss_sum, correct = 0.0, 0
    for start in range(lo, hi, EVAL_CHUNK):
        x, y = data.take(data.val[start:min(hi, start + EVAL_CHUNK)])
        chunk_loss, chunk_correct = net.evaluate(x, y)
        loss_sum += chunk_loss
        correct += chunk_correct
    return loss_sum, correct


def _timed(loss: float, compute: float, allreduce_call: float, slowest: float) -> Reduced:
    wait = max(0.0, slowest - compute)
    return Reduced(loss, compute, max(0.0, allreduce_call - wait), wait)
