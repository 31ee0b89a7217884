"""What every event stream of a job shares: ONE poll of the store per job, however many
clients follow it.

A :class:`JobWatch` exists while some stream follows the job. It loads the job's recent
points once; its poller reads the job's record every ``poll_s`` and, when the job has
moved on, the new points, each encoded as JSON once; then it wakes the streams. A stream
serves points from that memory (joining the encoded points into its events), and reads
the store itself only while it is further behind than the memory reaches. The number of
open streams is capped (``SYNCSGD_MAX_EVENT_STREAMS``); past it a new one gets a 503.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from common.records import StepRecord
from common.schemas import JobPublic
from service.store import SqliteJobStore

#: Points a watch keeps in memory for its streams.
KEEP_POINTS = 20_000
#: Streams of one job past which their wake-ups are spread over a poll interval.
SPREAD_FROM = 16


class TooManyStreamsError(RuntimeError):
    """Every event stream slot is taken (503)."""


@dataclass
class JobWatch:
    job: JobPublic  # the latest record the poller read
    base: int  # the memory holds points after this step (earlier ones: the store)
    points: list[StepRecord] = field(default_factory=list)  # recent points, by step
    encoded: list[str] = field(default_factory=list)  # each point as JSON, once
    complete: bool = False  # the job ended and every point it wrote has been read
    followers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_step(self) -> int:
        return self.points[-1].step if self.points else self.base

    def add(self, points: list[StepRecord]) -> None:
        self.points.extend(points)
        self.encoded.extend(json.dumps(p.to_dict()) for p in points)
        if len(self.points) > KEEP_POINTS:
            del self.points[:-KEEP_POINTS], self.encoded[:-KEEP_POINTS]
            self.base = self.points[0].step - 1

    async def wait(self, timeout_s: float, spread_s: float) -> bool:
        """Until the poller brings something new (True) or ``timeout_s`` passes (False).

        Woken streams of a much-followed job start within ``spread_s`` of each other, not
        all at once: their writes interleave with other requests instead of holding the
        event loop for as long as all of them take."""
        event = self.changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        if self.followers > SPREAD_FROM:
            await asyncio.sleep(random.random() * spread_s)
        return True


class EventHub:
    def __init__(self, store: SqliteJobStore, max_streams: int, poll_s: float):
        self.store, self.max_streams, self.poll_s = store, max_streams, poll_s
        self.streams = 0
        self._watches: dict[str, JobWatch] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def check_capacity(self) -> None:
        if self.streams >= self.max_streams:
            raise TooManyStreamsError(f"{self.streams} event streams are open, the most "
                                      f"this service takes (SYNCSGD_MAX_EVENT_STREAMS); "
                                      "retry later")

    @contextlib.asynccontextmanager
    async def follow(self, job_id: str) -> AsyncIterator[JobWatch]:
        """The job's watch, shared with every other stream of it, for one stream."""
        self.check_capacity()
        self.streams += 1
        watch = self._watches.get(job_id)
        if watch is None:
            job = await asyncio.to_thread(self.store.get, job_id)
            base = max(0, job.step - KEEP_POINTS)
            # An ended job has written every point (its end is written after them).
            watch = JobWatch(job, base=base, complete=job.state.terminal)
            self._watches[job_id] = watch
            await self._read_new(job_id, watch)
            task = asyncio.create_task(self._poll(job_id, watch), name=f"watch-{job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        watch.followers += 1
        try:
            yield watch
        finally:
            self.streams -= 1
            watch.followers -= 1
            if watch.followers == 0 and self._watches.get(job_id) is watch:
                del self._watches[job_id]

    async def points_after(self, watch: JobWatch, job_id: str, cursor: int, limit: int
                           ) -> tuple[int, str] | None:
        """``(last step, the JSON list)`` of up to ``limit`` points after step ``cursor``:
        from the watch's memory, or from the store for a stream further behind than the
        memory reaches; None when there are none."""
        if cursor < watch.base:
            points = await asyncio.to_thread(self.store.curve, job_id, cursor,
                                             min(limit, watch.base - cursor))
            if not points:
                return None
            return points[-1].step, json.dumps([p.to_dict() for p in points])
        at = bisect.bisect_right(watch.points, cursor, key=lambda p: p.step)
        if at == len(watch.points):
            return None
        end = min(at + limit, len(watch.points))
        return watch.points[end - 1].step, "[" + ",".join(watch.encoded[at:end]) + "]"

    async def _read_new(self, job_id: str, watch: JobWatch) -> bool:
        """Add the points after the watch's last to its memory; were there any?"""
        added = False
        while fresh := await asyncio.to_thread(self.store.curve, job_id, watch.last_step,
                                               5_000):
            watch.add(fresh)
            added = True
        return added

    async def _poll(self, job_id: str, watch: JobWatch) -> None:
        """Read the job, then its new points (so a terminal state sees every point), every
        ``poll_s``, while anyone follows it."""
        while watch.followers > 0 and not watch.complete:
            job = await asyncio.to_thread(self.store.get, job_id)
            moved = (job.state, job.restarts) != (watch.job.state, watch.job.restarts)
            moved = await self._read_new(job_id, watch) or moved
            watch.job, watch.complete = job, job.state.terminal
            if moved or watch.complete:
                watch.changed.set()  # wakes every stream of the job
                watch.changed = asyncio.Event()
            await asyncio.sleep(self.poll_s)
