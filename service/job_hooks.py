"""What a running job's driver reports, turned into store writes, logs and checkpoints.

Store writes from running jobs go through ONE :class:`StoreWriter` thread, in
order: the driver hands a chunk's records over and sends the next chunk at
once, so SQLite never slows training, and a job's final state is always
written after its last point.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from common.checkpoint import TrainingState, save_checkpoint
from common.records import StepRecord, curve_stride, kept_on_curve
from common.schemas import JobSpec, RankPlacement, ResizeInfo, RestartInfo, StragglerInfo
from service import runner
from service.config import Settings
from service.store import SqliteJobStore

log = logging.getLogger("syncsgd.scheduler")


#: Waits between the tries of a store write that failed (a locked database, a full disk):
#: about 12 s in all before the write counts as lost.
RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0)
#: Writes waiting at most; a driver that gets ahead of the disk waits (backpressure).
QUEUE_LIMIT = 64

WriteFailure = Callable[[str | None, Exception], None]


class StoreWriter:
    """Applies store writes in order on one background thread, each retried with backoff.

    A write that still fails after every retry is reported to ``on_failure`` with the
    job it belongs to, which fails that job; none is dropped silently. The queue is
    bounded, so a driver that writes faster than the disk takes them waits in ``put``
    instead of growing memory.
    """

    def __init__(self, on_failure: WriteFailure, delays_s: tuple[float, ...] = RETRY_DELAYS_S):
        self._on_failure, self._delays = on_failure, delays_s
        self._queue: queue.Queue[tuple[Callable[[], object], str | None] | None] = (
            queue.Queue(maxsize=QUEUE_LIMIT))
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def put(self, write: Callable[[], object], job_id: str | None = None) -> None:
        self._queue.put((write, job_id))

    def flush(self) -> None:
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            write, job_id = item
            try:
                self._apply(write, job_id)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _apply(self, write: Callable[[], object], job_id: str | None) -> None:
        for delay in (*self._delays, None):
            try:
                write()
                return
            except Exception as exc:
                if delay is None:
                    log.error("store write lost after %d tries: %s", len(self._delays) + 1,
                              exc, extra={"event": "write-lost", "job": job_id or "-"})
                    self._on_failure(job_id, exc)
                    return
                log.warning("store write failed, retrying in %g s: %s", delay, exc,
                            extra={"event": "write-retry", "job": job_id or "-"})
                time.sleep(delay)


class JobHooks(runner.TrainingHooks):
    """The driver's hooks for job ``job_id`` of this service."""

    def __init__(self, job_id: str, store: SqliteJobStore, writer: StoreWriter,
                 settings: Settings, cancel: threading.Event, faults: runner.FaultPlan,
                 observe_records: Callable[[list[StepRecord]], None],
                 grant: Callable[[int | None], int] | None = None,
                 placed: Callable[[int], None] = lambda size: None,
                 shrink: Callable[[int], int] = lambda current: current,
                 shrink_cause: Callable[[], str] = lambda: runner.SHRUNK):
        self.job_id, self.store, self.settings = job_id, store, settings
        self._writer = writer
        self._cancel, self._faults, self._observe_records = cancel, faults, observe_records
        self._grant, self._on_placed, self._shrink = grant, placed, shrink
        self._shrink_cause = shrink_cause
        self._keep: Callable[[StepRecord], bool] | None = None  # all points, until started
        #: The state at the newest chunk's end: what an interrupted job resumes from.
        self.latest: TrainingState | None = None

    def write(self, write: Callable[[], object]) -> None:
        """A store write of this job, in order, retried; a lost one fails the job."""
        self._writer.put(write, self.job_id)

    def started(self, ranks: list[runner.RankInfo], total_steps: int) -> None:
        self._on_placed(len(ranks))  # what an elastic job holds now, granted or not
        placements = [RankPlacement(rank=r.rank, node=r.node, pid=r.pid) for r in ranks]
        for rank in placements:
            log.info("started on node %s, pid %d", rank.node, rank.pid,
                     extra={"event": "rank-started", "job": self.job_id, "rank": rank.rank})
        stride = curve_stride(total_steps, self.settings.max_points_per_job)
        if stride > 1:
            self._keep = functools.partial(kept_on_curve, stride=stride, total_steps=total_steps)
        self.write(lambda: self.store.mark_running(self.job_id, total_steps, placements, stride))

    def startup(self, split: dict[str, float]) -> None:
        self.write(lambda: self.store.set_startup(self.job_id, split))

    def records(self, records: list[StepRecord]) -> None:
        self._observe_records(records)  # the metrics see every step
        keep = self._keep
        self.write(lambda: self.store.add_points(self.job_id, records, keep))

    def checkpoint(self, state: TrainingState) -> None:
        directory, keep = self.settings.checkpoint_dir(self.job_id), self.settings.keep_checkpoints
        self.write(lambda: save_checkpoint(directory, state, keep=keep))

    def restart(self, restart: runner.Restart) -> None:
        info = RestartInfo(number=restart.number, cause=restart.cause,
                           at=datetime.fromtimestamp(restart.at, UTC),
                           from_step=restart.from_step, lost_steps=restart.lost_steps)
        log.warning("restart %d from step %d: %s", info.number, info.from_step, info.cause,
                    extra={"event": "restart", "job": self.job_id})
        self.write(lambda: self.store.add_restart(self.job_id, info))

    def committed(self, state: TrainingState) -> None:
        self.latest = state

    def world_size(self, spec: JobSpec, current: int | None) -> int:
        if self._grant is None:
            return super().world_size(spec, current)
        return self._grant(current)

    def shrink_to(self, spec: JobSpec, current: int) -> int:
        return self._shrink(current)

    def shrink_cause(self) -> str:
        return self._shrink_cause()

    def resized(self, resize: runner.Resize) -> None:
        info = ResizeInfo(at=datetime.fromtimestamp(resize.at, UTC), step=resize.step,
                          from_workers=resize.from_size, to_workers=resize.to_size,
                          cause=resize.cause, seconds=resize.seconds)
        log.warning("resized from %d to %d workers at step %d (%.2f s): %s", info.from_workers,
                    info.to_workers, info.step, info.seconds, info.cause,
                    extra={"event": "resize", "job": self.job_id})
        self.write(lambda: self.store.add_resize(self.job_id, info))

    def timings(self, ranks: list[runner.RankInfo], step: int, spans: runner.Array) -> None:
        nodes, first = [r.node for r in ranks], step - spans.shape[1] + 1
        keep = self.settings.timeline_keep_steps
        self.write(lambda: self.store.add_spans(self.job_id, nodes, spans, first, keep))

    def straggler(self, straggler: runner.Straggler) -> None:
        info = StragglerInfo(at=datetime.fromtimestamp(straggler.at, UTC), step=straggler.step,
                             rank=straggler.rank, node=straggler.node,
                             compute_s=straggler.compute_s, median_s=straggler.median_s,
                             factor=straggler.factor)
        log.warning("rank %d on %s computes %.1fx the ranks' median (%.4f s vs %.4f s a step)",
                    info.rank, info.node, info.factor, info.compute_s, info.median_s,
                    extra={"event": "straggler", "job": self.job_id, "rank": info.rank})
        self.write(lambda: self.store.add_straggler(self.job_id, info))

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def faults(self) -> list[runner.Fault]:
        return self._faults.take()
