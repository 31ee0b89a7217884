"""One background thread per sink, catching the sink up with the store."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("syncsgd.tracking")

#: Jobs one round looks at, at most (the rest wait for the next round).
JOBS_PER_ROUND = 100
#: Waits between the tries of a job whose sync failed, the last repeated.
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class Sink(Protocol):
    name: str

    def pending(self, limit: int) -> list[str]:
        """Jobs with something to send."""
        ...

    def sync(self, job_id: str) -> None:
        """Send what job ``job_id`` has that the sink lacks; raise if it could not."""
        ...

    def close(self) -> None: ...


class Follower:
    """Every ``interval_s``, ``sink.sync`` each pending job; a job whose sync raised is
    tried again after a backoff (its own: the others go on)."""

    def __init__(self, sink: Sink, interval_s: float):
        self.sink, self.interval_s = sink, interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one sync of a job at a time (the thread, a request)
        self._failed: dict[str, tuple[int, float]] = {}  # job -> (failures, retry after)
        self._thread = threading.Thread(target=self._loop, name=f"follow-{sink.name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.sink.close()

    def sync_now(self, job_id: str) -> None:
        """Catch job ``job_id`` up now (a request that reads the sink's files)."""
        with self._lock:
            self.sink.sync(job_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                pending = self.sink.pending(JOBS_PER_ROUND)
            except Exception as exc:  # the store is busy or gone: next round
                log.warning("%s: %s", self.sink.name, exc, extra={"event": "tracking-error"})
                continue
            for job_id in pending:
                if self._stop.is_set():
                    return
                self._sync(job_id)

    def _sync(self, job_id: str) -> None:
        failures, after = self._failed.get(job_id, (0, 0.0))
        if time.monotonic() < after:
            return
        try:
            with self._lock:
                self.sink.sync(job_id)
            self._failed.pop(job_id, None)
        except Exception as exc:
            wait = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
            self._failed[job_id] = (failures + 1, time.monotonic() + wait)
            log.warning("%s of job %s failed, retrying in %g s: %s", self.sink.name, job_id,
                        wait, exc, extra={"event": "tracking-error", "job": job_id})
