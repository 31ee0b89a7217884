"""The all-reduce contract between the trainer and its communication backend.

The trainer sees only this protocol, so one training loop serves every backend:
``local`` (here, world size 1), ``mpi`` and ``ray`` (in ``worker/backends``).
Every rank must make the same calls in the same order (they are collectives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


class AllReduce(Protocol):
    rank: int
    world_size: int

    def allreduce_sum(self, buf: Array) -> None:
        """Replace ``buf`` on every rank by the element-wise sum over all ranks, in place."""
        ...

    def broadcast(self, buf: Array, root: int = 0) -> None:
        """Overwrite ``buf`` on every rank with ``root``'s ``buf``, in place."""
        ...

    def reduce_scatter_sum(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        """Sum ``send`` (sum(counts),) over the ranks; this rank's part of the sum, the
        ``counts[rank]`` elements from ``sum(counts[:rank])``, goes into ``recv``."""
        ...

    def allgather(self, buf: Array, counts: Sequence[int]) -> None:
        """Every rank's part of ``buf`` (``counts[r]`` elements from ``sum(counts[:r])``) to
        every rank, in place: ``buf`` (sum(counts),) ends equal everywhere."""
        ...

    def close(self) -> None:
        """Leave the group; the object is unusable afterwards."""
        ...


class LocalAllReduce:
    """World size 1: every collective is the identity. The single-process reference."""

    rank = 0
    world_size = 1

    def allreduce_sum(self, buf: Array) -> None:
        pass

    def broadcast(self, buf: Array, root: int = 0) -> None:
        if root != 0:
            raise ValueError(f"root: {root} is not a rank of a 1-process group")

    def reduce_scatter_sum(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        np.copyto(recv, send[:counts[0]])

    def allgather(self, buf: Array, counts: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        pass


def offsets(counts: Sequence[int]) -> list[int]:
    """Where each rank's part starts: ``[0, counts[0], counts[0] + counts[1], ...]``."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts


def as_reducible(buf: Array) -> Array:
    """Check that ``buf`` can be reduced in place: contiguous, writable, numeric."""
    if not (buf.flags.c_contiguous and buf.flags.writeable) or buf.dtype.kind not in "fiu":
        raise ValueError(f"buf: needs a writable C-contiguous numeric array, got {buf.dtype} "
                         f"contiguous={buf.flags.c_contiguous} writeable={buf.flags.writeable}")
    return np.asarray(buf)
