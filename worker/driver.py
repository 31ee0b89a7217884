"""The central schedule of one job: chunks of synchronized steps, checks between them.

Every rank receives the same ``run(steps=k)`` call and runs k steps on its
own, with no driver round trip per step. Between chunks the driver reports
the records, checks for cancellation, and (inside the group) compares replica
fingerprints; a dead or hung rank surfaces as an error from the chunk. Chunks
aim at about a second each, so the curve a user watches moves every second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from common.data import Dataset, check_spec_matches_data
from common.records import StepRecord
from common.schemas import JobSpec
from worker.errors import JobCancelledError
from worker.group import GroupOptions, RankInfo, WorkerGroup

Array = npt.NDArray[Any]

#: How long a chunk should take (the "live" granularity of the curve).
CHUNK_TARGET_S = 1.0
FIRST_CHUNK_STEPS = 5
#: A chunk may take this many times its expected duration before it counts as a hang.
HANG_FACTOR = 10.0


@dataclass
class ChunkSizer:
    """Picks ``k`` so a chunk takes about ``target_s``, from the steps measured so far."""

    fixed: int = 0  # the spec's steps_per_chunk; 0 = adapt
    target_s: float = CHUNK_TARGET_S
    step_s: float | None = None

    def next_steps(self) -> int:
        if self.fixed:
            return self.fixed
        if self.step_s is None:
            return FIRST_CHUNK_STEPS
        return max(1, min(100_000, int(self.target_s / max(self.step_s, 1e-6))))

    def observe(self, steps: int, seconds: float) -> None:
        if steps:
            self.step_s = seconds / steps

    def timeout(self, steps: int, floor_s: float) -> float:
        expected = steps * self.step_s if self.step_s is not None else 0.0
        return max(floor_s, HANG_FACTOR * expected)


@dataclass(frozen=True)
class TrainingResult:
    params: Array  # rank 0's final flat parameters
    steps: int
    ranks: list[RankInfo]
    fingerprints: list[str]  # every rank's final parameter hash (all equal)


def train(spec: JobSpec, data: Dataset, options: GroupOptions, *,
          on_records: Callable[[list[StepRecord]], None],
          cancelled: Callable[[], bool] = lambda: False,
          on_started: Callable[[WorkerGroup], None] | None = None) -> TrainingResult:
    """Run ``spec`` to the end on a fresh worker group; the group is gone afterwards.

    Raises :class:`JobCancelledError` when ``cancelled()`` turns true between chunks,
    and a :class:`worker.errors.GroupError` naming ranks and nodes on failure.
    """
    check_spec_matches_data(spec, data)
    group = WorkerGroup.create(spec, data, options)
    try:
        if on_started is not None:
            on_started(group)
        sizer = ChunkSizer(spec.steps_per_chunk)
        while group.step < group.total_steps:
            if cancelled():
                raise JobCancelledError(f"cancelled at step {group.step}")
            steps = min(sizer.next_steps(), group.total_steps - group.step)
            began = time.monotonic()
            chunk = group.run(steps, sizer.timeout(steps, options.chunk_timeout_s))
            sizer.observe(len(chunk.records), time.monotonic() - began)
            on_records(chunk.records)
        return TrainingResult(group.final_params(), group.step, group.ranks, group.fingerprints)
    finally:
        group.shutdown()
