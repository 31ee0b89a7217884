"""Straggler detection: between chunks, each rank's compute time against the others'.

A synchronized step is as slow as its slowest rank: the others wait for it in the
all-reduce. A rank whose compute is slow chunk after chunk (a busy or throttled node,
a noisy neighbour) makes every rank slow, and shows only as "wait" on the others. The
watch compares each rank's median compute per step over a chunk with the ranks' median
(the lower one, so that of two ranks the faster is the reference), and reports a rank
slower by ``factor`` for ``chunks`` chunks in a row, once, until it keeps up again.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.records import SPAN_COLUMNS

Array = npt.NDArray[Any]

COMPUTE = SPAN_COLUMNS.index("compute")
#: A rank is a straggler only if it is also this much slower, in seconds a step: at a tenth
#: of a millisecond of compute, scheduling noise alone doubles a rank's time.
MIN_EXCESS_S = 0.001


@dataclass(frozen=True)
class Straggler:
    """Rank ``rank`` on ``node`` computed ``compute_s`` a step against the ranks' median
    ``median_s``, for the chunks up to step ``step``."""

    rank: int
    node: str
    step: int
    compute_s: float
    median_s: float
    at: float  # time.time() of the report

    @property
    def factor(self) -> float:
        return self.compute_s / self.median_s if self.median_s > 0 else float("inf")


class StragglerWatch:
    """Watches one group's chunks; ``observe`` returns the ranks that just became
    stragglers."""

    def __init__(self, factor: float = 2.0, chunks: int = 3):
        self.factor, self.chunks = factor, chunks
        self._slow_chunks: dict[int, int] = {}  # rank -> slow chunks in a row
        self.reported: set[int] = set()  # stragglers now

    def observe(self, spans: Array, nodes: list[str], step: int) -> list[Straggler]:
        """``spans``: (ranks, steps, 5), a chunk's timings (``SPAN_COLUMNS``);
        ``nodes[r]``: rank r's node; ``step``: the chunk's last step."""
        if spans.shape[0] < 2 or spans.shape[1] == 0:
            return []
        compute = rank_compute_seconds(spans)
        reference = float(statistics.median_low(compute))
        found = []
        for rank, seconds in enumerate(compute):
            slow = seconds > self.factor * reference and seconds - reference > MIN_EXCESS_S
            self._slow_chunks[rank] = self._slow_chunks.get(rank, 0) + 1 if slow else 0
            if not slow:
                self.reported.discard(rank)
            elif self._slow_chunks[rank] >= self.chunks and rank not in self.reported:
                self.reported.add(rank)
                found.append(Straggler(rank, nodes[rank], step, seconds, reference, time.time()))
        return found


def rank_compute_seconds(spans: Array) -> list[float]:
    """Each rank's median compute a step in the chunk ``spans`` (ranks, steps, 5)."""
    return [float(s) for s in np.median(spans[:, :, COMPUTE], axis=1)]
