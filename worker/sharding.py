"""The sharded optimizer update (ZeRO stage 1): each rank updates one slice of the
parameters, with one slice of the optimizer state.

A step's exchange becomes: a reduce-scatter of the gradient buffer (each rank receives
the sum of its slice only), one small all-reduce of the loss, the timings and what the
norm and the divergence check need, the update of the rank's slice, and an all-gather of
the updated parameters. On MPI that is the bytes of one all-reduce (a ring all-reduce IS
a reduce-scatter and an all-gather), and the update and its optimizer state shrink to
1/N per rank. Every parameter is updated by exactly one rank, with the arithmetic the
1-worker run applies to it, so N workers still equal 1 worker.

Slices are whole blocks of :data:`BLOCK` parameters (the last one shorter), cut as evenly
as :func:`common.data.shard_bounds` cuts rows. The deterministic mode's gradient norm is
summed per block, and the blocks' sums added with ``math.fsum`` (exactly rounded), so
the norm has the same bits however the blocks are spread over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.collective import AllReduce
from common.data import shard_bounds

Array = npt.NDArray[Any]

#: Parameters per block: the unit of slicing and of the deterministic norm.
BLOCK = 1024


@dataclass(frozen=True)
class Slices:
    """Rank r's slice of ``num_parameters``: ``bounds(r)``; ``counts`` for collectives."""

    num_parameters: int
    world_size: int

    @property
    def num_blocks(self) -> int:
        return -(-self.num_parameters // BLOCK)

    def blocks(self, rank: int) -> tuple[int, int]:
        """Rank's blocks ``[first, last)``."""
        return shard_bounds(self.num_blocks, self.world_size, rank)

    def bounds(self, rank: int) -> tuple[int, int]:
        """Rank's parameters ``[lo, hi)``."""
        first, last = self.blocks(rank)
        return min(first * BLOCK, self.num_parameters), min(last * BLOCK, self.num_parameters)

    @property
    def counts(self) -> list[int]:
        return [hi - lo for lo, hi in map(self.bounds, range(self.world_size))]


def block_squares(values: Array, out: Array, scratch: Array) -> None:
    """``out[b]``: the sum of squares of block b of ``values`` (which starts on a block
    boundary; only the last block may be shorter), in float64. ``scratch``: (len(values),)
    float64."""
    n = values.shape[0]
    squares = scratch[:n]
    np.multiply(values, values, out=squares)
    full = n // BLOCK
    np.add.reduce(squares[:full * BLOCK].reshape(full, BLOCK), axis=1, out=out[:full])
    if n > full * BLOCK:
        out[full] = np.add.reduce(squares[full * BLOCK:])


def exact_total(block_sums: Array) -> float:
    """The sum of the blocks' sums, exactly rounded: the same for any order of blocks."""
    return math.fsum(block_sums.tolist())


class ShardedOptimizerState:
    """Gathers a sliced optimizer's state into whole arrays for a checkpoint (a collective:
    every rank calls it), and slices a checkpoint's whole arrays for this rank. ``names``
    are the state's per-parameter arrays (the same on every rank, whatever its slice)."""

    def __init__(self, comm: AllReduce, slices: Slices, names: Sequence[str]):
        self.comm, self.slices, self.names = comm, slices, sorted(names)
        self.lo, self.hi = slices.bounds(comm.rank)

    def gather(self, state: dict[str, Array]) -> dict[str, Array]:
        """The per-parameter arrays (this rank's slice) made whole; the rest as they are."""
        whole = dict(state)
        for name in self.names:  # sorted: the same collectives in the same order everywhere
            full = np.zeros(self.slices.num_parameters, dtype=state[name].dtype)
            full[self.lo:self.hi] = state[name]
            self.comm.allgather(full, self.slices.counts)
            whole[name] = full
        return whole

    def slice(self, state: dict[str, Array]) -> dict[str, Array]:
        """A whole state (from a checkpoint, of any world size) cut to this rank's slice."""
        return {name: array[self.lo:self.hi] if name in self.names else array
                for name, array in state.items()}
