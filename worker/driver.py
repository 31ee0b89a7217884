"""The central schedule of one job: chunks of synchronized steps, checks between them.

Every rank receives the same ``run(steps=k)`` call and runs k steps on its
own, with no driver round trip per step. Between chunks the driver reports
the records, takes checkpoints, checks for cancellation, and (inside the
group) compares replica fingerprints; a dead or hung rank surfaces as an
error from the chunk, and the driver recovers from it with a fresh group.
Chunks aim at about a second each, so the curve a user watches moves every
second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt

from common.checkpoint import TrainingState
from common.data import Dataset, check_spec_matches_data
from common.records import StepRecord
from common.schemas import JobSpec
from worker.actor import Fault
from worker.errors import GroupError, JobCancelledError, RestartsExhaustedError
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
    restarts: int


@dataclass(frozen=True)
class Restart:
    """One recovery: a fresh group restored from the last checkpoint."""

    number: int  # 1 for the first restart
    at: float  # time.time() of the decision
    cause: str  # what died or hung, and where
    from_step: int  # the checkpoint's step (0: from the start)


def train(spec: JobSpec, data: Dataset, options: GroupOptions, *,
          on_records: Callable[[list[StepRecord]], None],
          cancelled: Callable[[], bool] = lambda: False,
          on_started: Callable[[WorkerGroup], None] | None = None,
          on_checkpoint: Callable[[TrainingState], None] | None = None,
          on_restart: Callable[[Restart], None] | None = None,
          pending_faults: Callable[[], list[Fault]] = list,
          resume: TrainingState | None = None) -> TrainingResult:
    """Run ``spec`` to the end; every worker group it made is gone afterwards.

    Checkpoints: every ``spec.checkpoint_every`` steps and at the end, rank 0's
    state goes to ``on_checkpoint`` (chunks are cut at those steps). When a
    worker dies or hangs, the group is torn down and a fresh one restored from
    the last checkpoint carries on, up to ``spec.max_restarts`` times; the
    steps since the checkpoint are replayed (``on_records`` sees them again).
    ``resume`` starts from a checkpoint instead of step 0.

    Raises :class:`JobCancelledError` when ``cancelled()`` turns true between
    chunks, and a :class:`worker.errors.GroupError` naming ranks and nodes on
    failure (:class:`RestartsExhaustedError` when restarts ran out).
    """
    check_spec_matches_data(spec, data)
    latest = resume
    fault = options.fault
    restarts = 0

    def checkpointed(state: TrainingState) -> None:
        nonlocal latest
        latest = state
        if on_checkpoint is not None:
            on_checkpoint(state)

    while True:
        try:
            result = _run_group(spec, data, options, latest, fault, on_records, cancelled,
                                on_started, checkpointed, pending_faults)
            return TrainingResult(*result, restarts=restarts)
        except GroupError as exc:
            if not exc.recoverable or spec.max_restarts == 0:
                raise
            if restarts >= spec.max_restarts:
                raise RestartsExhaustedError(
                    f"gave up after {restarts} restart(s) (max_restarts={spec.max_restarts}); "
                    f"last failure at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {exc}") from exc
            restarts += 1
            fault = None  # an injected fault strikes once
            if on_restart is not None:
                on_restart(Restart(restarts, time.time(), str(exc),
                                   latest.step if latest is not None else 0))


def _run_group(spec: JobSpec, data: Dataset, options: GroupOptions,
               state: TrainingState | None, fault: Fault | None,
               on_records: Callable[[list[StepRecord]], None], cancelled: Callable[[], bool],
               on_started: Callable[[WorkerGroup], None] | None,
               on_checkpoint: Callable[[TrainingState], None],
               pending_faults: Callable[[], list[Fault]],
               ) -> tuple[Array, int, list[RankInfo], list[str]]:
    """One worker group, from ``state`` (or the start) to the end of training."""
    group = WorkerGroup.create(spec, data, options, state, fault)
    try:
        if on_started is not None:
            on_started(group)
        sizer = ChunkSizer(spec.steps_per_chunk)
        every = spec.checkpoint_every
        while group.step < group.total_steps:
            if cancelled():
                raise JobCancelledError(f"cancelled at step {group.step}")
            for armed in pending_faults():
                group.inject(armed)
            next_checkpoint = min((group.step // every + 1) * every, group.total_steps)
            steps = min(sizer.next_steps(), next_checkpoint - group.step)
            began = time.monotonic()
            chunk = group.run(steps, sizer.timeout(steps, options.chunk_timeout_s),
                              checkpoint=group.step + steps == next_checkpoint)
            sizer.observe(len(chunk.records), time.monotonic() - began)
            on_records(chunk.records)
            if chunk.state is not None:
                on_checkpoint(chunk.state)
        return group.final_params(), group.step, group.ranks, group.fingerprints
    finally:
        group.shutdown()
