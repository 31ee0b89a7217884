"""The ``ray`` backend: ``ray.util.collective`` with gloo (through torch), numpy in place.

gloo has no average: the trainer already scales by the global batch, so a sum
is what it needs. A gloo group cannot grow or be re-made inside one process, so
each job gets fresh actor processes (the worker group never reuses them).
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from common.collective import as_reducible

Array = npt.NDArray[Any]


class GlooAllReduce:
    """``AllReduce`` over a ``ray.util.collective`` gloo group named ``group_name``."""

    def __init__(self, world_size: int, rank: int, group_name: str, timeout_ms: int = 60_000):
        import ray.util.collective as collective
        from ray.util.collective.types import Backend

        self._collective = collective
        collective.init_collective_group(world_size, rank, backend=Backend("gloo"),
                                         group_name=group_name, gloo_timeout=timeout_ms)
        self.rank, self.world_size, self.group_name = rank, world_size, group_name

    def allreduce_sum(self, buf: Array) -> None:
        self._collective.allreduce(as_reducible(buf), group_name=self.group_name)

    def broadcast(self, buf: Array, root: int = 0) -> None:
        self._collective.broadcast(as_reducible(buf), src_rank=root, group_name=self.group_name)

    def close(self) -> None:
        self._collective.destroy_collective_group(self.group_name)
