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

Gradient accumulation (``accumulation_steps`` k) is the same loop in both: a rank's rows
of a global batch are gathered and computed in k successive micro-batches, summed on the
rank, and all-reduced once. In the float sum a micro-batch is a k-th of the rank's rows;
in deterministic mode it is a run of whole micro-shards (a k-th of those the rank owns),
each still computed on its own, so accumulation changes no bit. The rank's batch buffers
are sized for one micro-batch.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from common.collective import AllReduce
from common.data import Dataset, shard_bounds
from common.nn import Network
from common.nn.dropout import DropoutKey
from common.nn.network import EVAL_CHUNK
from common.schemas import JobSpec
from worker.sharding import Slices, block_squares, exact_total

Array = npt.NDArray[Any]

SCALE_BITS = 36
SCALE = 2.0**SCALE_BITS
NORM_LIMIT = 2.0**(53 - SCALE_BITS)  # float64 adds integers exactly below 2**53


class DivergedError(RuntimeError):
    """The loss or a gradient is NaN or inf; raised before the update is applied."""


#: Gathers rows ``[lo, hi)`` of the step's global batch; returns ``(x, y)``, views of the
#: rank's batch buffers (valid until the next call).
Load = Callable[[int, int], tuple[Array, Array]]


@dataclass(frozen=True, slots=True)
class Reduced:
    """One step's averaged gradient, reduced loss (mean over the global batch), the
    gradient's squared L2 norm, and this rank's timings."""

    gradient: Array  # (P,): the same on every rank
    loss: float
    squared_norm: float
    compute: float  # gathering the rows, forward and backward
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
    ``capacity`` is the most rows the rank gathers and computes at once (one
    micro-batch), ``eval_rows`` the rows of each validation forward pass (no more).
    """

    gradient_buffer: Array | None
    capacity: int
    eval_rows: int
    slices: Slices | None  # with a sharded update: which slice of the gradient each rank gets

    def step(self, net: Network, load: Load, global_batch: int, step: int,
             dropout: DropoutKey | None) -> Reduced:
        """The gradient of a global batch of ``global_batch`` rows, this rank's micro-batches
        gathered through ``load``, summed over ranks; ``step`` (1-based) names it in errors."""
        ...

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        """``(loss sum, correct)`` over the whole validation set, each rank its part."""
        ...


def make_reduction(spec: JobSpec, comm: AllReduce, num_parameters: int) -> Reduction:
    """The fixed-point reduction in deterministic mode, else the float sum."""
    if spec.deterministic:
        return FixedPointReduction(comm, num_parameters, spec)
    return SumReduction(comm, num_parameters, spec)


def _pieces(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut into at most ``parts`` contiguous non-empty runs."""
    runs = (shard_bounds(hi - lo, parts, i) for i in range(parts))
    return [(lo + a, lo + b) for a, b in runs if b > a]


class SumReduction:
    """Float sum of per-rank shard gradients: ONE all-reduce of ``buffer``, the P
    gradients followed by :func:`padding`."""

    def __init__(self, comm: AllReduce, num_parameters: int, spec: JobSpec):
        self.comm, self.accumulation = comm, spec.accumulation_steps
        self.buffer: Array = np.zeros(num_parameters + padding(comm.world_size),
                                      dtype=np.dtype(spec.dtype))
        # One micro-batch: the network writes straight into the buffer; more: into its
        # own, added up here.
        self.gradient_buffer: Array | None = (self.buffer[:num_parameters]
                                              if self.accumulation == 1 else None)
        self.capacity = spec.micro_batch_rows()
        self.eval_rows = min(EVAL_CHUNK, self.capacity)
        self._validation = np.zeros(2, dtype=np.float64)
        self.slices = Slices(num_parameters, comm.world_size) if spec.sharded_update else None
        if self.slices is not None:
            lo, hi = self.slices.bounds(comm.rank)
            self._slice: Array = np.empty(hi - lo, dtype=np.dtype(spec.dtype))
            self._small = np.zeros(2 + comm.world_size)  # loss, the slice's norm, timings

    def step(self, net: Network, load: Load, global_batch: int, step: int,
             dropout: DropoutKey | None) -> Reduced:
        P = net.num_parameters
        acc = self.buffer[:P]
        t0 = time.perf_counter()
        lo, hi = shard_bounds(global_batch, self.comm.world_size, self.comm.rank)
        pieces = _pieces(lo, hi, self.accumulation)
        loss = 0.0
        for index, (a, b) in enumerate(pieces):
            x, y = load(a, b)
            loss += net.compute_gradients(x, y, global_batch, dropout and dropout.at(a))
            if self.gradient_buffer is None:
                if index == 0:
                    np.copyto(acc, net.grads)
                else:
                    acc += net.grads
        if not pieces:  # a global batch smaller than the world: this rank adds nothing
            acc[...] = 0
        t1 = time.perf_counter()
        if self.slices is None:
            global_loss, slowest = _allreduce_padded(self.comm, self.buffer, loss, t1 - t0)
            gradient = acc
            # One pass over the gradients: a NaN or inf anywhere makes the norm non-finite.
            squared = float(np.dot(acc, acc))
        else:
            gradient = self._slice
            global_loss, squared, slowest = self._reduce_scatter(acc, loss, t1 - t0)
        t2 = time.perf_counter()
        if not (math.isfinite(global_loss) and math.isfinite(squared)):
            raise DivergedError(f"diverged at step {step} (loss={global_loss})")
        return _timed(gradient, global_loss, squared, t1 - t0, t2 - t1, slowest)

    def _reduce_scatter(self, acc: Array, loss: float, seconds: float
                        ) -> tuple[float, float, float]:
        """This rank's slice of the summed gradient; then the loss, the squared norm (NaN
        if any slice has a NaN) and the slowest compute, summed in one small all-reduce."""
        assert self.slices is not None
        self.comm.reduce_scatter_sum(acc, self._slice, self.slices.counts)
        small = self._small
        small[:] = 0
        small[0], small[1] = loss, float(np.dot(self._slice, self._slice))
        small[2 + self.comm.rank] = seconds
        self.comm.allreduce_sum(small)
        return float(small[0]), float(small[1]), float(small[2:].max())

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        lo, hi = shard_bounds(data.n_val, self.comm.world_size, self.comm.rank)
        self._validation[:] = evaluate_rows(net, data, lo, hi, self.eval_rows)
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]), int(self._validation[1])


class FixedPointReduction:
    """Deterministic: micro-shard gradients summed as exact fixed point (module docstring)."""

    def __init__(self, comm: AllReduce, num_parameters: int, spec: JobSpec):
        micro_shards = spec.micro_shards
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
        first, last = shard_bounds(micro_shards, comm.world_size, comm.rank)
        # The rank's micro-shards in accumulation_steps runs: one micro-batch each.
        self.runs = _pieces(first, last, spec.accumulation_steps)
        self.first, self.last = first, last
        self.capacity = spec.micro_batch_rows()
        # Validation rows per forward: one micro-shard's, the same whatever the ranks.
        self.eval_rows = min(EVAL_CHUNK, -(-spec.batch_size // micro_shards))
        self.slices = Slices(num_parameters, comm.world_size) if spec.sharded_update else None
        if self.slices is not None:
            lo, hi = self.slices.bounds(comm.rank)
            self._fixed_slice = np.empty(hi - lo)
            self._slice: Array = np.empty(hi - lo, dtype=np.dtype(spec.dtype))
            self._squares = np.empty(hi - lo)
            W = comm.world_size
            # the loss, each rank's compute seconds and largest entry, then every block's
            # sum of squares: each slot written by one rank, zeros elsewhere (exact sums)
            self._small = np.zeros(1 + 2 * W + self.slices.num_blocks)

    def step(self, net: Network, load: Load, global_batch: int, step: int,
             dropout: DropoutKey | None) -> Reduced:
        P, fixed = net.num_parameters, self._fixed
        acc, grads = fixed[:P], net.grads
        t0 = time.perf_counter()
        loss_fixed, empty = 0, True
        for first, last in self.runs:
            lo = shard_bounds(global_batch, self.micro_shards, first)[0]
            hi = shard_bounds(global_batch, self.micro_shards, last - 1)[1]
            if hi == lo:
                continue
            x, y = load(lo, hi)
            for m in range(first, last):
                a, b = shard_bounds(global_batch, self.micro_shards, m)
                if b == a:
                    continue
                loss_fixed += self._add_micro_shard(net, x[a - lo:b - lo], y[a - lo:b - lo],
                                                    global_batch, step, empty,
                                                    dropout and dropout.at(a))
                empty = False
        if empty:
            acc[...] = 0
        t1 = time.perf_counter()
        if self.slices is None:
            loss_sum, slowest = _allreduce_padded(self.comm, fixed, loss_fixed, t1 - t0)
            np.multiply(acc, 1.0 / SCALE, out=grads, casting="same_kind")
            gradient = grads
            largest = max(float(grads.max()), -float(grads.min()))  # NaN stays
            # From the exactly reduced gradient: the same bits on every rank, for any ranks.
            squared = float(np.dot(grads, grads))
        else:
            gradient = self._slice
            loss_sum, slowest, largest, squared = self._reduce_scatter(acc, loss_fixed, t1 - t0)
        t2 = time.perf_counter()
        # One check of the reduced sums catches NaN and inf (they propagate) and a
        # sum too large to have been added exactly.
        global_loss = loss_sum / SCALE
        largest = max(largest, abs(global_loss))
        if not largest < NORM_LIMIT:
            raise DivergedError(f"diverged at step {step} (loss={global_loss}; deterministic "
                                f"mode holds the loss and gradients below 2**"
                                f"{53 - SCALE_BITS}, the largest is {largest:.3g})")
        return _timed(gradient, global_loss, squared, t1 - t0, t2 - t1, slowest)

    def _reduce_scatter(self, acc: Array, loss_fixed: int, seconds: float
                        ) -> tuple[float, float, float, float]:
        """This rank's slice of the exact sum, scaled back; then one small all-reduce of the
        loss, the timings, each rank's largest entry and each block's sum of squares.
        Returns the loss sum (fixed point), the slowest compute, the largest entry and the
        squared norm (the blocks' sums, exactly rounded: the same for any slicing)."""
        assert self.slices is not None
        W, rank = self.comm.world_size, self.comm.rank
        self.comm.reduce_scatter_sum(acc, self._fixed_slice, self.slices.counts)
        np.multiply(self._fixed_slice, 1.0 / SCALE, out=self._slice, casting="same_kind")
        small = self._small
        small[:] = 0
        small[0], small[1 + rank] = loss_fixed, seconds
        if self._slice.size:
            small[1 + W + rank] = max(float(self._slice.max()), -float(self._slice.min()))
        first, last = self.slices.blocks(rank)
        block_squares(self._fixed_slice, small[1 + 2 * W + first:1 + 2 * W + last],
                      self._squares)
        self.comm.allreduce_sum(small)
        squared = exact_total(small[1 + 2 * W:]) / SCALE**2
        return (float(small[0]), float(small[1:1 + W].max()), float(small[1 + W:1 + 2 * W].max()),
                squared)

    def _add_micro_shard(self, net: Network, x: Array, y: Array, global_batch: int,
                         step: int, first: bool, dropout: DropoutKey | None) -> int:
        """Add one micro-shard's fixed-point gradient to the sum; return its fixed loss."""
        acc, grads = self._fixed[:net.num_parameters], net.grads
        # Gradients and loss come out times 2**36, exactly (the module docstring).
        scaled_loss = net.compute_gradients(x, y, denominator=global_batch / SCALE,
                                            dropout=dropout)
        if not math.isfinite(scaled_loss):
            raise DivergedError(f"diverged at step {step} (loss={scaled_loss / SCALE})")
        if first:  # the first goes straight in, truncated on the way: one pass
            np.trunc(grads, out=acc)
        else:
            np.trunc(grads, out=grads)
            np.add(acc, grads, out=acc)  # exact: whole numbers below 2**53
        return math.trunc(scaled_loss)

    def validate(self, net: Network, data: Dataset) -> tuple[float, int]:
        """Validation in ``micro_shards`` fixed chunks, their loss sums in fixed point."""
        n = data.n_val
        loss_fixed, correct = 0, 0
        for m in range(self.first, self.last):
            lo, hi = shard_bounds(n, self.micro_shards, m)
            if hi > lo:
                loss_sum, right = evaluate_rows(net, data, lo, hi, self.eval_rows)
                loss_fixed += int(loss_sum * SCALE)
                correct += right
        self._validation[:] = (loss_fixed, correct)
        self.comm.allreduce_sum(self._validation)
        return float(self._validation[0]) / SCALE, int(self._validation[1])


def evaluate_rows(net: Network, data: Dataset, lo: int, hi: int, chunk: int
                  ) -> tuple[float, int]:
    """``(loss sum, correct)`` over validation rows ``[lo, hi)``, ``chunk`` rows at a time
    (no more than the rank's batch buffers hold)."""
    loss_sum, correct = 0.0, 0
    for start in range(lo, hi, chunk):
        x, y = data.take(data.val[start:min(hi, start + chunk)])
        chunk_loss, chunk_correct = net.evaluate(x, y)
        loss_sum += chunk_loss
        correct += chunk_correct
    return loss_sum, correct


def _timed(gradient: Array, loss: float, squared_norm: float, compute: float,
           allreduce_call: float, slowest: float) -> Reduced:
    # The slowest rank's compute less ours, but never more than the call took: a rank that
    # started its step late waits less than the difference (and its spans must not overlap
    # its next step on the timeline).
    wait = min(max(0.0, slowest - compute), allreduce_call)
    return Reduced(gradient, loss, squared_norm, compute, allreduce_call - wait, wait)
