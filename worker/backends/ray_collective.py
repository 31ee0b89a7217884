"""The ``ray`` backend: ``ray.util.collective`` with gloo (through torch), numpy in place.

gloo has no average: the trainer already scales by the global batch, so a sum
is what it needs. A gloo group cannot grow or be re-made inside one process, so
each job gets fresh actor processes (the worker group never reuses them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from common.collective import as_reducible, offsets

Array = npt.NDArray[Any]


class GlooAllReduce:
    """``AllReduce`` over a ``ray.util.collective`` gloo group named ``group_name``."""

    def __init__(self, world_size: int, rank: int, group_name: str, timeout_ms: int = 60_000):
        import ray.util.collective as collective
        from ray.util.collective.types import Backend

        self._collective = collective
        # all-gather buffers, made once per (dtype, width): the sharded update gathers
        # the parameters every step
        self._gather_buffers: dict[tuple[str, int], tuple[Array, Array]] = {}
        collective.init_collective_group(world_size, rank, backend=Backend("gloo"),
                                         group_name=group_name, gloo_timeout=timeout_ms)
        self.rank, self.world_size, self.group_name = rank, world_size, group_name

    def allreduce_sum(self, buf: Array) -> None:
        self._collective.allreduce(as_reducible(buf), group_name=self.group_name)

    def broadcast(self, buf: Array, root: int = 0) -> None:
        self._collective.broadcast(as_reducible(buf), src_rank=root, group_name=self.group_name)

    def reduce_scatter_sum(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        # gloo through torch.distributed has no reduce-scatter (ray.util.collective's runs
        # one all-reduce per rank): one all-reduce, then this rank's part.
        self.allreduce_sum(send)
        start = offsets(counts)[self.rank]
        np.copyto(recv, send[start:start + counts[self.rank]])

    def allgather(self, buf: Array, counts: Sequence[int]) -> None:
        # torch's all_gather takes parts of one size: each is padded to the largest.
        width, starts = max(counts), offsets(counts)
        key = (buf.dtype.str, width)
        if key not in self._gather_buffers:
            self._gather_buffers[key] = (np.zeros((self.world_size, width), dtype=buf.dtype),
                                         np.zeros(width, dtype=buf.dtype))
        parts, mine = self._gather_buffers[key]
        mine[:counts[self.rank]] = buf[starts[self.rank]:starts[self.rank] + counts[self.rank]]
        self._collective.allgather(list(parts), mine, group_name=self.group_name)
        for rank, (start, count) in enumerate(zip(starts, counts, strict=True)):
            buf[start:start + count] = parts[rank, :count]

    def close(self) -> None:
        self._collective.destroy_collective_group(self.group_name)
