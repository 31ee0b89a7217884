"""An elastic job's world size (``workers: {min, max}``): which group to make, when it
may grow, and the record of each change.

The global batch is the same at every size, so a resize changes nothing in the training
(no bit in deterministic mode): a group is rebuilt, from the state at a chunk's end,
larger when the driver's hooks grant more ranks, smaller when they ask for CPUs back or
when a failed group cannot be replaced whole within ``GroupOptions.elastic_wait_s``,
down to ``min``; below that the job goes back to the queue
(:class:`worker.errors.BelowMinimumError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.checkpoint import TrainingState
from common.data import Dataset
from common.schemas import JobSpec
from worker.errors import BelowMinimumError, JobCancelledError, PlacementError
from worker.group import GroupOptions

if TYPE_CHECKING:
    from worker.driver import Group, GroupFactory

#: After a growth that could not place every rank it was granted, no growth is asked for
#: during this many elastic waits (a lost node's CPUs count until Ray declares it dead).
GROW_BACKOFF = 6.0
GROWN = "CPUs came free"  # the cause of a growth
SHRUNK = "asked to give CPUs back"  # of a shrink the hooks asked for, unless they say why


@dataclass(frozen=True)
class Resize:
    """An elastic job's group rebuilt at another world size, from the state at ``step``."""

    at: float  # time.time() when the new group was up
    step: int
    from_size: int
    to_size: int
    cause: str  # "CPUs came free", or what was lost and what could be placed
    seconds: float  # from the old group's last chunk (or its failure) to the new group up


@dataclass
class World:
    """An elastic job's world size: the size to make the next group at, the last group's,
    and why the next differs (for its :class:`Resize`)."""

    size: int
    current: int | None = None  # the size of the last group that ran
    cause: str = ""
    since: float = 0.0  # time.monotonic() when the group before the next one ended
    grow_after: float = 0.0  # time.monotonic() before which no growth is asked for
    shrunk: bool = False  # the next group is smaller because the hooks asked for CPUs back

    def floor(self, spec: JobSpec) -> int:
        """The least the next group may have: a group grown from ``current`` never comes
        out smaller than it, nor a shrunk one than the size asked; a fresh one after a
        failure may, down to ``min``."""
        if self.shrunk:
            return self.size
        return self.current if self.cause == GROWN and self.current else spec.min_workers

    def resize(self, size: int, shrink_cause: str = SHRUNK) -> None:
        """Grow to ``size`` ranks granted, or shrink to ``size`` as asked (why:
        ``shrink_cause``)."""
        grown = self.current is None or size > self.current
        self.shrunk = not grown
        self.cause, self.since, self.size = (GROWN if grown else shrink_cause,
                                             time.monotonic(), size)

    def failed(self, cause: str) -> None:
        self.cause, self.since, self.shrunk = cause, time.monotonic(), False

    def placed(self, made: int, step: int, options: GroupOptions,
               resized: Callable[[Resize], None]) -> None:
        """A group of ``made`` ranks is up (``size`` were asked): report a change of size."""
        if made < self.size and self.cause == GROWN:  # the CPUs were not all placeable (yet)
            self.grow_after = time.monotonic() + GROW_BACKOFF * options.elastic_wait_s
        if self.current is not None and made != self.current:
            cause = self.cause if made == self.size else (
                f"{self.cause}; {made} of {self.size} ranks could be placed")
            resized(Resize(time.time(), step, self.current, made, cause,
                                 time.monotonic() - self.since))
        self.current = self.size = made
        self.cause, self.shrunk = "", False


def make_group_of(make_group: GroupFactory, spec: JobSpec, data: Dataset,
                  options: GroupOptions, state: TrainingState | None, size: int, floor: int,
                  cancelled: Callable[[], bool]) -> tuple[Group, int]:
    """A group of ``size`` ranks, and its size. An elastic job's group that cannot be
    placed whole within ``options.elastic_wait_s`` is made as large as can be placed, down
    to ``floor``, which waits ``options.placement_timeout_s`` as a fixed job's does; when
    not even ``min`` can be placed, :class:`BelowMinimumError` sends the job back to the
    queue."""
    if not spec.elastic:
        return make_group(spec, data, options, state), spec.max_workers
    short = dataclasses.replace(options, placement_timeout_s=options.elastic_wait_s)
    for smaller in range(size, floor, -1):
        if cancelled():
            raise JobCancelledError(f"cancelled at step {state.step if state else 0}")
        with contextlib.suppress(PlacementError):
            return make_group(spec.with_workers(smaller), data, short, state), smaller
    try:
        return make_group(spec.with_workers(floor), data, options, state), floor
    except PlacementError as exc:
        if floor > spec.min_workers:
            raise
        raise BelowMinimumError(f"waiting for workers.min = {spec.min_workers}: {exc}",
                                state) from exc
