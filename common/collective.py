"""The all-reduce contract between the trainer and its communication backend.

The trainer sees only this protocol, so one training loop serves every backend:
``local`` (here, world size 1), ``mpi`` and ``ray`` (in ``worker/backends``).
Every rank must make the same calls in the same order (they are collectives).
"""

from __future__ import annotations

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

    def close(self) -> None:
        pass


def as_reducible(buf: Array) -> Array:
    """Check that ``buf`` can be reduced in place: contiguous, writable, numeric."""
    if not (buf.flags.c_contiguous and buf.flags.writeable) or buf.dtype.kind not in "fiu":
        raise ValueError(f"buf: needs a writable C-contiguous numeric array, got {buf.dtype} "
                         f"contiguous={buf.flags.c_contiguous} writeable={buf.flags.writeable}")
    return np.asarray(buf)
