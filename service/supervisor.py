"""Watching the service's Ray, and bringing it back.

Every ``interval_s`` the supervisor asks the runner whether jobs can run
(:meth:`service.runner.Runner.problem`). When they cannot (the embedded Ray's
raylet was killed, say, as the kernel's OOM killer might):

1. ``/healthz`` answers 503 with the reason, and the scheduler is suspended: its
   running jobs are interrupted and go back to the queue with the state they
   reached at their newest chunk's end (in memory), new submissions are queued
   rather than refused for want of CPUs, and nothing starts;
2. once the interrupted jobs have left, the runner recovers (the embedded Ray is
   shut down and started again), tried with a growing backoff until it works;
3. the scheduler resumes, and the requeued jobs carry on from where they were.

A lost cluster head cannot be rejoined from the same process (the Ray driver's calls
to the old head stay blocked, and Ray ends the process when they fail). Then the
interrupted jobs' states are written as checkpoints, the jobs marked queued, and the
service ends itself (status 75) for its supervisor (compose's ``restart:``, systemd) to
start it again; the new process joins the head with backoff once it is back, and resumes them.

Ray is started again on the thread that started it first (the server's main thread,
through its event loop): Ray ties the processes it starts to the thread that started
them, and a Ray started off the main thread installs its own SIGTERM handler, which
would end the service without its graceful shutdown. ``/healthz`` reads the CPUs the
supervisor last saw, so it never waits on a Ray that does not answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from service.runner import ProcessRestartNeededError, Runner, ray_problem
from service.scheduler import Scheduler

log = logging.getLogger("syncsgd.supervisor")

#: Waits between tries to bring Ray back, the last one repeated.
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: How long interrupted jobs get to leave their groups before Ray is restarted anyway.
DRAIN_S = 15.0


#: The exit status of a service that stops for a new process to resume its jobs
#: (``EX_TEMPFAIL``: try again).
EXIT_TO_RESTART = 75


def stop_this_process() -> None:
    """End this process at once with :data:`EXIT_TO_RESTART`. Not a graceful shutdown: it
    would wait on calls to the lost Ray (Ray itself ends a driver whose head has been gone
    60 s). Nothing is lost: the jobs are checkpointed and queued, the store's writes
    committed, and the data dir's lock goes with the process."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_TO_RESTART)


class Supervisor:
    def __init__(self, runner: Runner, scheduler: Scheduler, interval_s: float = 1.0,
                 stop_process: Callable[[], None] = stop_this_process,
                 on_owner_thread: Callable[[Callable[[], None]], None] = lambda call: call()):
        self.runner, self.scheduler, self.interval_s = runner, scheduler, interval_s
        self._stop_process = stop_process
        #: Runs a call on the thread that started Ray (and waits for it).
        self._on_owner_thread = on_owner_thread
        #: Why jobs cannot run now (``/healthz`` answers 503 with it); None when they can.
        self.outage: str | None = None
        #: ``(total, free)`` CPUs at the last check that found Ray well.
        self.cpus: tuple[float, float] = runner.cluster_cpus()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the service leaves Ray on purpose)."""
        self._stop.set()
        self._thread.join(timeout=90)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            problem = ray_problem(self.runner)
            if problem is None:
                self.cpus = self.runner.cluster_cpus()
                if self.scheduler.outage is not None:  # a job saw Ray fail, and it passed
                    self.scheduler.resume()
            else:
                self._recover(problem)

    def _recover(self, problem: str) -> None:
        began = time.monotonic()
        self.outage, self.cpus = problem, (0.0, 0.0)
        log.error("jobs cannot run: %s; requeueing the running jobs and restarting Ray",
                  problem, extra={"event": "ray-lost"})
        self.scheduler.suspend(problem)
        self.scheduler.drain(DRAIN_S)
        attempt = 0
        while not self._stop.wait(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1] if attempt else 0):
            attempt += 1
            try:
                self._on_owner_thread(self.runner.recover)
                if (still := self.runner.problem()) is not None:
                    raise RuntimeError(still)
                break
            except ProcessRestartNeededError as exc:
                self._restart_process(problem, exc)
                return
            except Exception as exc:
                self.outage = f"{problem}; restart {attempt} failed: {exc}"
                log.warning("Ray restart %d failed: %s", attempt, exc,
                            extra={"event": "ray-restart-failed"})
        else:
            return  # the service is stopping
        self.cpus = self.runner.cluster_cpus()
        self.outage = None
        self.scheduler.resume()
        log.warning("Ray is back after %.1f s; the queue goes on", time.monotonic() - began,
                    extra={"event": "ray-back"})

    def _restart_process(self, problem: str, why: ProcessRestartNeededError) -> None:
        """Keep the interrupted jobs' progress on disk, then end this process for its
        supervisor to start again."""
        self.outage = f"{problem}; this service process stops to be started again ({why})"
        saved = self.scheduler.persist_interrupted()
        log.error("%s; checkpointed %d interrupted job(s) at their last chunk (%s); stopping "
                  "this process: start it again (compose restarts it) to resume them",
                  why, len(saved), ", ".join(saved) or "none", extra={"event": "ray-lost-exit"})
        self._stop_process()
