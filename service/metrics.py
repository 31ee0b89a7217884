"""Prometheus metrics (``GET /metrics``), on a registry of each app's own.

Jobs by state and each running job's speed and loss are read from the store at
scrape time; steps, all-reduce times and HTTP request durations are counted as
they happen. Labels carry job ids, never user names, unless the operator sets
``SYNCSGD_METRICS_USER_LABELS`` (then each user's CPUs and queued jobs too).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from common.records import StepRecord
from common.schemas import JobPublic, JobState
from service.queue_policy import owner_of
from service.store import SqliteJobStore

#: The steps each rank's compute gauge averages.
RANK_COMPUTE_STEPS = 20
ALLREDUCE_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class JobCollector(Collector):
    """Gauges computed from the store when Prometheus scrapes."""

    def __init__(self, store: SqliteJobStore, user_labels: bool = False):
        self.store, self.user_labels = store, user_labels

    def collect(self) -> Iterable[Metric]:
        by_state = GaugeMetricFamily("syncsgd_jobs", "Jobs by state", labels=["state"])
        for state, count in self.store.count_by_state().items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("syncsgd_preemptions", "Jobs stopped for jobs of higher "
                                "priority, over the stored jobs", self.store.count_preemptions())
        running, _ = self.store.list_jobs(JobState.running, limit=1000)
        yield from self._running(running)
        if self.user_labels:
            yield from self._users(running)

    def _running(self, running: list[JobPublic]) -> Iterable[Metric]:
        speed = GaugeMetricFamily("syncsgd_job_steps_per_second",
                                  "Steps per second of each running job (latest chunk)",
                                  labels=["job"])
        loss = GaugeMetricFamily("syncsgd_job_loss", "Latest training loss of each running job",
                                 labels=["job"])
        workers = GaugeMetricFamily("syncsgd_job_workers",
                                    "Ranks each running job trains on now (an elastic job's "
                                    "world size changes)", labels=["job"])
        compute = GaugeMetricFamily("syncsgd_rank_compute_seconds",
                                    "Mean seconds a step each rank of a running job computed, "
                                    "over its last 20 steps (a straggler's is higher)",
                                    labels=["job", "rank"])
        for job in running:
            for rank, seconds in self.store.rank_compute(job.id, RANK_COMPUTE_STEPS).items():
                compute.add_metric([job.id, str(rank)], seconds)
            if job.world_size is not None:
                workers.add_metric([job.id], job.world_size)
            if job.timing is not None:
                step_s = (job.timing.compute + job.timing.allreduce + job.timing.wait
                          + job.timing.update)
                speed.add_metric([job.id], 1.0 / step_s if step_s > 0 else 0.0)
            if job.loss is not None:
                loss.add_metric([job.id], job.loss)
        yield from (speed, loss, workers, compute)

    def _users(self, running: list[JobPublic]) -> Iterable[Metric]:
        """What fair share weighs: each user's CPUs in running jobs, and its queued jobs."""
        cpus = GaugeMetricFamily("syncsgd_user_cpus", "CPUs each user's running jobs hold",
                                 labels=["user"])
        queued = GaugeMetricFamily("syncsgd_user_queued_jobs", "Each user's queued jobs",
                                   labels=["user"])
        held: dict[str, float] = {}
        for job in running:
            owner = owner_of(job.owner)
            held[owner] = held.get(owner, 0.0) + (job.world_size or job.spec.min_workers) * (
                job.spec.cpus_per_worker)
        waiting: dict[str, int] = {}
        for entry in self.store.queue():
            waiting[owner_of(entry.owner)] = waiting.get(owner_of(entry.owner), 0) + 1
        for user in sorted(held.keys() | waiting.keys()):
            cpus.add_metric([user], held.get(user, 0.0))
            queued.add_metric([user], waiting.get(user, 0))
        yield from (cpus, queued)


class Metrics:
    def __init__(self, store: SqliteJobStore, user_labels: bool = False):
        self.registry = CollectorRegistry()
        self.registry.register(JobCollector(store, user_labels))
        self.steps = Counter("syncsgd_steps", "Training steps completed, all jobs",
                             registry=self.registry)
        self.allreduce = Histogram("syncsgd_allreduce_seconds",
                                   "Seconds per step in the gradient all-reduce (rank 0, "
                                   "transfer and waiting)", buckets=ALLREDUCE_BUCKETS,
                                   registry=self.registry)
        self.http = Histogram("syncsgd_http_request_duration_seconds",
                              "HTTP request durations", ["method", "route", "status"],
                              registry=self.registry)

    def observe_records(self, records: list[StepRecord]) -> None:
        self.steps.inc(len(records))
        for record in records:
            self.allreduce.observe(record.allreduce + record.wait)

    async def time_request(self, request: Request,
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """HTTP middleware: one observation per request, labelled by its route template."""
        began = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.http.labels(request.method, path, str(status)).observe(
                time.perf_counter() - began)
