"""The job queue: which job runs when, and the thread that runs each one.

A queued job starts when (1) fewer than ``max_concurrent_jobs`` run and (2)
the cluster's CPUs not held by running jobs cover its ``workers x
cpus_per_worker``. The next job is chosen by priority, then fair share between
owners, then submission order (:mod:`service.queue_policy`). A next job that does
not fit yet holds back the jobs behind it, so none is starved by smaller ones; when
running jobs of lower priority hold what it needs, they shrink or stop at their next
chunk's end and are requeued with their state, to resume exactly.

Each running job's driver reports through :class:`service.job_hooks.JobHooks`;
its store writes go through one writer thread, in order.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from common.checkpoint import TrainingState, latest_checkpoint, list_checkpoints, save_checkpoint
from common.errors import FieldError
from common.records import StepRecord
from common.schemas import (
    PRIORITY_RANK,
    JobPublic,
    JobSpec,
    JobState,
    PreemptionInfo,
    Priority,
)
from service import admission, queue_policy, runner
from service.accounts import ADMIN, Principal
from service.config import Settings
from service.datasets import DatasetCatalog
from service.errors import ResumeError, StateConflictError
from service.job_hooks import JobHooks, StoreWriter
from service.store import QueuedJob, SqliteJobStore

log = logging.getLogger("syncsgd.scheduler")


#: A ``_Running`` of no job (a ``/verify`` reservation) has this priority: above every
#: job's, so that no job preempts it.
UNPREEMPTIBLE = len(PRIORITY_RANK)


@dataclass
class _Running:
    workers: int
    cpus_per_worker: float = 1.0
    owner: str | None = None  # for fair share (None: a reservation)
    priority: int = UNPREEMPTIBLE
    min_workers: int = 1
    started: int = 0  # the order the jobs started in
    shrink_to: int | None = None  # asked to give back CPUs: the size to shrink to
    shrink_cause: str = runner.SHRUNK  # and why (for which job)
    preempted_by: tuple[str, Priority] | None = None  # (job id, its priority) that stops it
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    by_user: bool = False  # the cancel was a user's, not the service stopping
    interrupted: str | None = None  # why its Ray was lost: it goes back to the queue
    hooks: JobHooks | None = None  # its driver's hooks (the state at its newest chunk)

    @property
    def cpus(self) -> float:
        return self.workers * self.cpus_per_worker


class Scheduler:
    def __init__(self, store: SqliteJobStore, settings: Settings, jobs_runner: runner.Runner,
                 catalog: DatasetCatalog,
                 observe_records: Callable[[list[StepRecord]], None] = lambda records: None,
                 shares: Callable[[], Mapping[str, float]] = dict):
        self.store, self.settings, self.runner = store, settings, jobs_runner
        self.catalog = catalog
        self._shares = shares  # each user's fair share (1 when not named)
        self._submitting = threading.Lock()  # a quota's check and the insert, together
        self._starts = 0  # jobs started so far, to order them
        self._observe_records = observe_records
        self._lock = threading.Condition()
        self._running: dict[str, _Running] = {}
        self._faults: dict[str, runner.FaultPlan] = {}  # armed for queued or running jobs
        self._lost: dict[str, str] = {}  # running jobs whose progress could not be recorded
        self._stopping = False
        #: Why the queue could not start jobs at its last try (None: it could).
        self.problem: str | None = None
        #: Why no job can run now (the supervisor lost Ray; None: they can). Meanwhile
        #: nothing starts, and submissions are queued without the CPU check.
        self.outage: str | None = None
        #: Interrupted jobs' states at their newest chunk's end, to resume from.
        self._resume: dict[str, TrainingState] = {}
        self._writer = StoreWriter(self._write_lost)
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    # ---- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Requeue what a previous process left running, then start the queue."""
        # Jobs still marked running lost their service process (a graceful stop requeues
        # them): back in the queue, in their old places, to resume from their newest
        # checkpoints; unless the service died under them too often.
        for job_id in self.store.ids_in_state(JobState.running):
            crashes = self.store.count_crash(job_id)
            if crashes >= self.settings.max_start_attempts:
                log.error("the service died %d times while it ran; failed", crashes,
                          extra={"event": "crash-loop", "job": job_id})
                self.store.finish(job_id, JobState.failed, (
                    f"the service stopped without a shutdown {crashes} times while this job "
                    f"ran (SYNCSGD_MAX_START_ATTEMPTS={self.settings.max_start_attempts}); "
                    "it is not started again"))
                continue
            log.warning("interrupted; requeued to resume from its last checkpoint",
                        extra={"event": "requeued", "job": job_id})
            self.store.requeue(job_id)
        self._thread.start()

    def stop(self) -> None:
        """Stop running jobs between chunks (they resume at the next start), wait for their
        workers to be gone, flush the store. Queued jobs that ran (preempted, or back for
        their min) keep their state in memory: it is written as their checkpoint, so that
        the next start resumes them from there."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
            for job in running:
                job.cancel.set()
            self._lock.notify_all()
        for job in running:
            if job.thread is not None:
                job.thread.join(timeout=60)
        self._thread.join(timeout=10)
        with self._lock:
            states, self._resume = self._resume, {}
        for job_id, state in states.items():
            self._checkpoint_later(job_id, state)
        self._writer.flush()
        self._writer.stop()

    # ---- requests ------------------------------------------------------------------------

    def submit(self, spec: JobSpec, caller: Principal = ADMIN,
               quota: Callable[[], None] = lambda: None) -> JobPublic:
        """Check the job against the limits and its data, then queue it as ``caller``'s.
        ``quota`` (the caller's quotas, raising when over one) runs with the insert under
        one lock: two submissions at one instant cannot pass a quota together."""
        self.check(spec, owner=None if caller.admin else caller.name)
        with self._submitting:
            quota()
            job = self.store.create(f"job_{uuid.uuid4().hex[:16]}", spec, caller.name)
        log.info("queued: %s, %s worker(s), all-reduce %s", spec.name, _workers(spec),
                 spec.allreduce, extra={"event": "submitted", "job": job.id})
        with self._lock:
            self._lock.notify_all()
        return job

    def cluster_cpus(self) -> float:
        """Read live, not once: on a cluster, worker nodes join (and leave) after the
        service started."""
        return self.runner.cluster_cpus()[0]

    def check(self, spec: JobSpec, *, runs_epochs: bool = True, owner: str | None = None
              ) -> None:
        """Raise a :class:`common.errors.FieldError` naming what keeps ``spec`` from running
        (:func:`service.admission.check`); while Ray is lost, without the CPU check."""
        admission.check(spec, self.settings, self.catalog,
                        None if self.outage is not None else self.cluster_cpus(),
                        runs_epochs=runs_epochs, owner=owner)

    def cancel(self, job_id: str) -> JobPublic:
        with self._lock:
            job = self.store.get(job_id)
            if job.state.terminal:
                raise StateConflictError(f"job {job_id} is already {job.state.value}")
            if job_id in self._running:
                self._running[job_id].by_user = True
                self._running[job_id].cancel.set()  # the driver stops between chunks
            else:
                self.store.finish(job_id, JobState.cancelled, "cancelled while queued")
                self._faults.pop(job_id, None)
                self._resume.pop(job_id, None)
            self._lock.notify_all()
        return self.store.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self.store.get(job_id)
            if not job.state.terminal:
                raise StateConflictError(f"job {job_id} is {job.state.value}; cancel it first")
            self.store.delete(job_id)
        self.settings.model_path(job_id).unlink(missing_ok=True)
        shutil.rmtree(self.settings.checkpoint_dir(job_id), ignore_errors=True)
        shutil.rmtree(self.settings.tensorboard_dir(job_id), ignore_errors=True)

    def inject_fault(self, job_id: str, fault: runner.Fault) -> None:
        """Arm ``fault`` in a queued or running job that has its rank."""
        with self._lock:
            job = self.store.get(job_id)
            if job.state.terminal:
                raise StateConflictError(f"job {job_id} is {job.state.value}; faults go to "
                                         "queued or running jobs")
            if fault.rank >= job.spec.max_workers:
                raise FieldError("rank", f"job {job_id} has ranks 0..{job.spec.max_workers - 1}")
            self._faults.setdefault(job_id, runner.FaultPlan()).arm(fault)

    def suspend(self, reason: str) -> None:
        """Ray is lost: interrupt every running job (each goes back to the queue with its
        in-memory state) and start nothing until :meth:`resume`."""
        with self._lock:
            self.outage = reason
            for running in self._running.values():
                running.interrupted, running.preempted_by = reason, None
                running.cancel.set()

    def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the interrupted jobs to leave; have they?"""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while any(r.thread is not None for r in self._running.values()):
                if (left := deadline - time.monotonic()) <= 0:
                    return False
                self._lock.wait(left)
        return True

    def persist_interrupted(self) -> list[str]:
        """For a service process about to end because its Ray cannot come back in it: write
        each interrupted job's state at its newest chunk's end as a checkpoint, and mark
        the job queued, so that the next process resumes it with nothing replayed. The
        jobs whose drivers are still stuck in a call to the lost Ray count too."""
        with self._lock:
            states = dict(self._resume)
            for job_id, running in self._running.items():
                if running.hooks is not None and running.hooks.latest is not None:
                    states.setdefault(job_id, running.hooks.latest)
            stuck = [job_id for job_id, r in self._running.items() if r.hooks is not None]
        for job_id, state in states.items():
            save_checkpoint(self.settings.checkpoint_dir(job_id), state,
                            keep=self.settings.keep_checkpoints)
        for job_id in stuck:
            self._writer.put(functools.partial(self.store.requeue, job_id), job_id)
        self._writer.flush()
        return sorted(states)

    def resume(self) -> None:
        with self._lock:
            self.outage = None
            self._lock.notify_all()

    def running_ids(self) -> list[str]:
        with self._lock:
            return list(self._running)

    # ---- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        """Start what fits, every second or when woken, whatever goes wrong on the way."""
        with self._lock:
            while not self._stopping:
                try:
                    self._start_what_fits()
                    self.problem = None
                except Exception as exc:  # a locked or full database, a lost Ray: go on
                    self.problem = f"the queue cannot start jobs: {type(exc).__name__}: {exc}"
                    log.exception("the queue cannot start jobs; trying again",
                                  extra={"event": "queue-error"})
                self._lock.wait(timeout=1.0)

    @contextlib.contextmanager
    def reserve(self, cpus: float, what: str) -> Iterator[None]:
        """Hold ``cpus`` of the cluster for work outside the queue (``/verify``), so that the
        queue does not start a job on them meanwhile; a StateConflictError when they are
        not free now."""
        key = f"{what}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            free = self.cluster_cpus() - sum(r.cpus for r in self._running.values())
            if cpus > free:
                raise StateConflictError(f"{what} CPU needed, {free:g} free now (running "
                                         "jobs hold the rest); retry later")
            self._running[key] = _Running(1, cpus)
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(key, None)
                self._lock.notify_all()

    def free_cpus(self) -> float:
        """The cluster's CPUs that no running job of this service holds."""
        with self._lock:
            return self.cluster_cpus() - sum(r.cpus for r in self._running.values())

    def _start_what_fits(self) -> None:
        if self.outage is not None:
            return
        queued = self.store.queue()
        total = self.cluster_cpus() if queued else 0.0
        held: dict[str, float] = {}
        for r in self._running.values():
            if r.owner is not None:
                held[r.owner] = held.get(r.owner, 0.0) + r.cpus
        shares = self._shares() if len({job.owner for job in queued}) > 1 else {}
        while (pick := queue_policy.next_job(queued, held, shares)) is not None:
            spec = self.store.get(pick.id).spec
            used = sum(r.cpus for r in self._running.values())
            fit = int((total - used) // spec.cpus_per_worker)
            if (fit < spec.min_workers
                    or len(self._running) >= self.settings.max_concurrent_jobs):
                self._make_room(pick, spec, total - used)
                return  # the next job waits, and so does everyone behind it
            queued.remove(pick)
            owner = queue_policy.owner_of(pick.owner)
            running = self._start(pick, spec, min(fit, spec.max_workers), owner)
            held[owner] = held.get(owner, 0.0) + running.cpus

    def _start(self, pick: QueuedJob, spec: JobSpec, workers: int, owner: str) -> _Running:
        """Start queued job ``pick`` on ``workers`` ranks (an elastic job starts on what
        fits now, and grows between chunks: :meth:`_grant`)."""
        # Marked running before anything is reserved or started: if the store refuses,
        # nothing is held and the next pass tries again.
        self.store.mark_running(pick.id, 0, [])
        self._starts += 1
        running = _Running(workers, spec.cpus_per_worker, owner, pick.priority,
                           spec.min_workers, self._starts)
        running.thread = threading.Thread(target=self._run, args=(pick.id, spec, running),
                                          name=f"job-{pick.id}", daemon=True)
        self._running[pick.id] = running
        running.thread.start()
        return running

    def _make_room(self, pick: QueuedJob, spec: JobSpec, free: float) -> None:
        """Queued job ``pick`` does not fit in ``free`` CPUs: have running jobs of lower
        priority shrink or stop at their next chunk's end, unless those already asked to
        will free enough."""
        holders, pending, stopping = [], 0.0, 0
        for job_id, r in self._running.items():
            if r.preempted_by is not None:
                pending, stopping = pending + r.cpus, stopping + 1
                continue
            after = min(r.workers, r.shrink_to or r.workers)
            pending += (r.workers - after) * r.cpus_per_worker
            holders.append(queue_policy.Holder(
                job_id, r.priority, after * r.cpus_per_worker,
                max(0, after - r.min_workers) * r.cpus_per_worker, r.started))
        deficit = spec.min_workers * spec.cpus_per_worker - free - pending
        need_slot = len(self._running) - stopping >= self.settings.max_concurrent_jobs
        if deficit <= 0 and not need_slot:
            return
        plan = queue_policy.plan_preemption(pick.priority, deficit, need_slot, holders)
        for job_id in plan.shrink if plan else ():
            victim = self._running[job_id]
            victim.shrink_to = victim.min_workers
            victim.shrink_cause = (f"the service took CPUs back for {pick.id} "
                                   f"(priority {spec.priority})")
            log.info("shrinking to %d worker(s) for %s (priority %s)", victim.min_workers,
                     pick.id, spec.priority, extra={"event": "preempting", "job": job_id})
        for job_id in plan.stop if plan else ():
            victim = self._running[job_id]
            victim.preempted_by = (pick.id, spec.priority)
            victim.interrupted = f"preempted by {pick.id} (priority {spec.priority})"
            victim.cancel.set()
            log.info("stopping at its next chunk for %s (priority %s)", pick.id,
                     spec.priority, extra={"event": "preempting", "job": job_id})

    def _grant(self, running: _Running, spec: JobSpec, current: int | None) -> int:
        """An elastic job's world size: what the queue reserved for its start, then between
        chunks its size grown by the CPUs no job holds, when no job waits in the queue
        (queued jobs come first)."""
        with self._lock:
            if current is None:
                return running.workers
            if self._stopping or self.outage or self.store.ids_in_state(JobState.queued):
                return current
            free = self.cluster_cpus() - sum(r.cpus for r in self._running.values())
            running.workers = min(spec.max_workers,
                                  current + max(0, int(free // spec.cpus_per_worker)))
            return running.workers

    def _shrink(self, running: _Running, current: int) -> int:
        """An elastic job's world size between chunks when a job of higher priority asked
        for its CPUs (:meth:`_make_room`): its ``min``; else ``current``."""
        with self._lock:
            return min(current, running.shrink_to or current)

    def _placed(self, running: _Running, size: int) -> None:
        """An elastic job's group is up with ``size`` ranks: it holds their CPUs, and frees
        those of ranks it lost, was granted but could not place, or gave back."""
        with self._lock:
            running.workers = size
            if running.shrink_to is not None and size <= running.shrink_to:
                running.shrink_to = None
            self._lock.notify_all()

    def _run(self, job_id: str, spec: JobSpec, running: _Running) -> None:
        with self._lock:
            faults = self._faults.setdefault(job_id, runner.FaultPlan())
        hooks = JobHooks(job_id, self.store, self._writer, self.settings, running.cancel,
                         faults, self._observe_records,
                         grant=functools.partial(self._grant, running, spec),
                         shrink=functools.partial(self._shrink, running),
                         shrink_cause=lambda: running.shrink_cause,
                         placed=(functools.partial(self._placed, running) if spec.elastic
                                  else lambda size: None))
        running.hooks = hooks
        try:
            with self._lock:  # an interrupted job's state in memory, else its checkpoint
                resume = self._resume.pop(job_id, None)
            resume = resume or self._resume_point(self.settings.checkpoint_dir(job_id))
            hooks.latest = resume  # stopped again before a chunk: resumed from here again
            result = self.runner.run_job(spec, hooks, resume)
            self._writer.flush()  # every point is recorded, or the job fails
            if job_id in self._lost:
                raise runner.JobCancelledError(self._lost[job_id])
            runner.save_model(spec, result, self.settings.model_path(job_id))
            if (early := result.early_stopping) is not None:
                self._writer.put(lambda: self.store.set_early_stopping(
                    job_id, early.stopped_at_epoch, early.best_epoch), job_id)
            self._end(job_id, JobState.succeeded)
            log.info("succeeded after %d steps, %d restart(s)", result.steps, result.restarts,
                     extra={"event": "succeeded", "job": job_id})
        except runner.BelowMinimumError as exc:  # back to the queue, to wait for its min
            self._interrupted(job_id, exc.state or hooks.latest, str(exc), exc, waiting=True)
        except Exception as exc:
            self._stopped(job_id, running, hooks.latest, exc)
        finally:
            self._writer.flush()
            with self._lock:
                self._running.pop(job_id, None)
                self._faults.pop(job_id, None)
                self._lost.pop(job_id, None)
                self._lock.notify_all()

    def _interrupted(self, job_id: str, state: TrainingState | None, reason: str,
                     exc: Exception, waiting: bool = False) -> None:
        """Ray was lost under the job, or (``waiting``) an elastic job's ``min`` ranks
        could not be placed, or a job of higher priority took its CPUs: back to the queue
        (``waiting``: with ``reason`` on the job), to resume from ``state``."""
        log.warning("interrupted (%s: %s); requeued to resume from step %d", reason,
                    type(exc).__name__, state.step if state else 0,
                    extra={"event": "requeued", "job": job_id})
        if state is not None:
            with self._lock:
                self._resume[job_id] = state
        why = reason if waiting else None
        self._writer.put(lambda: self.store.requeue(job_id, why), job_id)

    def _stopped(self, job_id: str, running: _Running, latest: TrainingState | None,
                 exc: Exception) -> None:
        """The job's driver raised ``exc``: it ended (cancelled, failed, or the service
        stops), or it was interrupted (Ray lost, preempted) and goes back to the queue to
        resume from ``latest``, its state at its newest chunk's end."""
        if (running.interrupted is None and not isinstance(exc, runner.JobCancelledError)
                and (problem := runner.ray_problem(self.runner)) is not None):
            # Ray died under the job before the supervisor looked: the job did not fail,
            # it is interrupted as the supervisor will interrupt the others; and nothing
            # starts on the lost Ray meanwhile (the supervisor ends the outage).
            with self._lock:
                self.outage = self.outage or problem
                running.interrupted, running.preempted_by = problem, None
        if running.interrupted is None or running.by_user:
            self._ended(job_id, running, exc)
        elif running.preempted_by is None:
            self._interrupted(job_id, latest, running.interrupted, exc)
        elif not isinstance(exc, runner.JobCancelledError):
            self._failed(job_id, exc)  # it failed before it reached its chunk's end
        else:
            self._interrupted(job_id, latest, running.interrupted, exc, waiting=True)
            by, priority = running.preempted_by
            info = PreemptionInfo(at=datetime.now(UTC), step=latest.step if latest else 0,
                                  by=by, by_priority=priority)
            self._writer.put(lambda: self.store.add_preemption(job_id, info), job_id)
            if latest is not None:  # on disk too: a service that dies meanwhile replays none
                self._checkpoint_later(job_id, latest)

    def _checkpoint_later(self, job_id: str, state: TrainingState) -> None:
        """Write ``state`` as the job's newest checkpoint, through the store's writer: after
        the job's records already queued, before what is queued next."""
        self._writer.put(functools.partial(
            save_checkpoint, self.settings.checkpoint_dir(job_id), state,
            keep=self.settings.keep_checkpoints), job_id)

    def _ended(self, job_id: str, running: _Running, exc: Exception) -> None:
        """The job stopped with ``exc``: cancelled, requeued by a stopping service, or
        failed."""
        if isinstance(exc, runner.JobCancelledError):
            if job_id in self._lost:
                self._end(job_id, JobState.failed, self._lost[job_id])
            elif self._stopping and not running.by_user:  # resume at the next start
                if running.hooks is not None and running.hooks.latest is not None:
                    with self._lock:  # from its newest chunk: stop() writes it to disk
                        self._resume[job_id] = running.hooks.latest
                self._writer.put(lambda: self.store.requeue(job_id), job_id)
            else:
                log.info("%s", exc, extra={"event": "cancelled", "job": job_id})
                self._end(job_id, JobState.cancelled, str(exc))
        else:
            self._failed(job_id, exc)

    def _write_lost(self, job_id: str | None, exc: Exception) -> None:
        """A store write of ``job_id`` failed for good: stop the job and fail it, rather than
        train on with a gap in its record."""
        with self._lock:
            running = self._running.get(job_id) if job_id is not None else None
            if job_id is None or running is None:
                return
            self._lost.setdefault(job_id, f"could not record its progress: "
                                          f"{type(exc).__name__}: {exc}")
            running.cancel.set()

    def _end(self, job_id: str, state: JobState, reason: str | None = None) -> None:
        """Record the end (after the job's last point), then drop its checkpoints."""
        self._writer.put(lambda: self.store.finish(job_id, state, reason), job_id)
        checkpoints = self.settings.checkpoint_dir(job_id)
        self._writer.put(lambda: shutil.rmtree(checkpoints, ignore_errors=True), job_id)

    def _failed(self, job_id: str, exc: Exception) -> None:
        log.warning("failed: %s", exc, extra={"event": "failed", "job": job_id})
        if isinstance(exc, runner.RankFailedError):
            for failure in exc.failures:
                log.warning("on node %s, pid %d: %s", failure.node, failure.pid, failure.cause,
                            extra={"event": "rank-failed", "job": job_id, "rank": failure.rank})
        known = runner.GroupError | ValueError | ResumeError
        message = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        self._writer.put(lambda: self.store.finish(job_id, JobState.failed, message), job_id)

    @staticmethod
    def _resume_point(checkpoints: Path) -> TrainingState | None:
        """The newest readable checkpoint of the job; None for a fresh start."""
        if not list_checkpoints(checkpoints):
            return None
        found = latest_checkpoint(checkpoints)
        if found is None:
            raise ResumeError(f"cannot resume: none of the checkpoints in {checkpoints} "
                              "can be read")
        log.info("resuming from %s", found[1], extra={"event": "resume",
                                                       "job": checkpoints.name})
        return found[0]


def _workers(spec: JobSpec) -> str:
    """``2``, or ``1..2`` for an elastic job."""
    return f"{spec.min_workers}..{spec.max_workers}" if spec.elastic else str(spec.max_workers)
