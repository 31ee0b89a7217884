"""What a running job's driver reports, turned into store writes, logs and checkpoints.

Store writes from running jobs go through ONE :class:`StoreWriter` thread, in
order: the driver hands a chunk's records over and sends the next chunk at
once, so SQLite never slows training, and a job's final state is always
written after its last point.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from common.checkpoint import TrainingState, save_checkpoint
from common.records import StepRecord
from common.schemas import RankPlacement, RestartInfo
from service import runner
from service.config import Settings
from service.store import SqliteJobStore

log = logging.getLogger("syncsgd.scheduler")


class StoreWriter:
    """Applies store writes in order on one background thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    def put(self, write: Callable[[], object]) -> None:
        self._queue.put(write)

    def flush(self) -> None:
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while (write := self._queue.get()) is not None:
            try:
                write()
            except Exception:
                log.exception("store write failed")
            finally:
                self._queue.task_done()
        self._queue.task_done()


class JobHooks(runner.TrainingHooks):
    """The driver's hooks for job ``job_id`` of this service."""

    def __init__(self, job_id: str, store: SqliteJobStore, writer: StoreWriter,
                 settings: Settings, cancel: threading.Event, faults: runner.FaultPlan,
                 observe_records: Callable[[list[StepRecord]], None]):
        self.job_id, self.store, self.write, self.settings = job_id, store, writer.put, settings
        self._cancel, self._faults, self._observe_records = cancel, faults, observe_records

    def started(self, ranks: list[runner.RankInfo], total_steps: int) -> None:
        placements = [RankPlacement(rank=r.rank, node=r.node, pid=r.pid) for r in ranks]
        for rank in placements:
            log.info("started on node %s, pid %d", rank.node, rank.pid,
                     extra={"event": "rank-started", "job": self.job_id, "rank": rank.rank})
        self.write(lambda: self.store.mark_running(self.job_id, total_steps, placements))

    def records(self, records: list[StepRecord]) -> None:
        self._observe_records(records)
        self.write(lambda: self.store.add_points(self.job_id, records))

    def checkpoint(self, state: TrainingState) -> None:
        directory, keep = self.settings.checkpoint_dir(self.job_id), self.settings.keep_checkpoints
        self.write(lambda: save_checkpoint(directory, state, keep=keep))

    def restart(self, restart: runner.Restart) -> None:
        info = RestartInfo(number=restart.number, cause=restart.cause,
                           at=datetime.fromtimestamp(restart.at, UTC),
                           from_step=restart.from_step)
        log.warning("restart %d from step %d: %s", info.number, info.from_step, info.cause,
                    extra={"event": "restart", "job": self.job_id})
        self.write(lambda: self.store.add_restart(self.job_id, info))

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def faults(self) -> list[runner.Fault]:
        return self._faults.take()
