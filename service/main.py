"""``create_app()``: the FastAPI application of the control plane.

Its lifespan owns the service's resources: the SQLite store, the runner (by
default the Ray connection: the embedded local Ray, or a cluster), the job
scheduler and the supervisor that brings a lost Ray back. On shutdown, running
jobs are stopped and their workers killed before Ray is left, so no process of
the service outlives it. Tests pass an in-process runner instead
(:class:`service.runner.InProcessRunner`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.accounts import Accounts
from service.api import (
    dashboard,
    datasets,
    errors,
    events,
    health,
    jobs,
    openapi,
    tracking,
    verify,
)
from service.api.deps import require_admin_read
from service.audit import AuditLog
from service.body_limit import BodyLimitMiddleware
from service.config import Settings
from service.data_lock import DataDirLock
from service.datasets import DatasetCatalog
from service.event_hub import EventHub
from service.metrics import Metrics
from service.models import ModelCache
from service.runner import RayRunner, Runner
from service.scheduler import Scheduler
from service.store import SqliteJobStore
from service.supervisor import Supervisor
from service.tickets import Tickets
from service.tracking.follower import Follower, Sink
from service.tracking.mlflow_runs import MlflowSink
from service.tracking.tensorboard_files import TensorBoardSink

log = logging.getLogger("syncsgd.tracking")


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    """The app on ``settings`` (default: from the environment), training with ``runner``
    (default: a :class:`RayRunner` of those settings)."""
    settings = settings or Settings()
    jobs_runner = runner or RayRunner(settings)
    app = FastAPI(title="syncsgd", version="0.1.0",
                  lifespan=functools.partial(lifespan, settings=settings, runner=jobs_runner),
                  description="Synchronized data-parallel SGD as a service.")
    errors.install(app)
    openapi.install(app, settings)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.middleware("http")(time_requests)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(tracking.router)
    app.include_router(datasets.router)
    app.include_router(verify.router)
    app.include_router(dashboard.router)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI, *, settings: Settings, runner: Runner) -> AsyncIterator[None]:
    """Lock the data dir, open the store, connect the runner, start the scheduler; undo it
    all in reverse."""
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    store = SqliteJobStore(settings.database_path)
    metrics = Metrics(store, user_labels=settings.metrics_user_labels)
    catalog = DatasetCatalog(store, settings)
    # On THIS thread, not a worker thread: Ray ties its head processes' lives to the
    # thread that started them (PR_SET_PDEATHSIG), and the server retires idle
    # worker threads, which killed the embedded Ray ~10 s into a quiet spell.
    runner.connect()
    accounts = Accounts(settings.database_path)
    scheduler = Scheduler(store, settings, runner, catalog,
                          observe_records=metrics.observe_records, shares=accounts.shares)
    scheduler.start()
    supervisor = Supervisor(runner, scheduler, settings.supervise_interval_s,
                            on_owner_thread=functools.partial(on_loop_thread,
                                                              asyncio.get_running_loop()))
    supervisor.start()
    models = ModelCache(settings.model_path)
    followers = start_followers(store, settings, models)
    app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
    app.state.runner, app.state.metrics = runner, metrics
    app.state.supervisor = supervisor
    app.state.models, app.state.catalog = models, catalog
    app.state.tensorboard = followers[0]
    app.state.tickets = Tickets()
    app.state.accounts = accounts
    app.state.audit = AuditLog(settings.audit_path)
    app.state.hub = EventHub(store, settings.max_event_streams, settings.event_poll_s)
    try:
        yield
    finally:
        await run_in_threadpool(supervisor.stop)  # no restart of Ray while it is left
        await run_in_threadpool(scheduler.stop)
        for follower in followers:  # after the scheduler: the last points go out too
            await run_in_threadpool(follower.stop)
        await run_in_threadpool(catalog.close)
        await run_in_threadpool(runner.disconnect)
        accounts.close()
        store.close()
        lock.release()


def start_followers(store: SqliteJobStore, settings: Settings, models: ModelCache
                    ) -> list[Follower]:
    """TensorBoard files for every job; MLflow runs when the service has a tracking server."""
    sinks: list[Sink] = [TensorBoardSink(store, settings)]
    if settings.mlflow_tracking_uri is not None:
        try:
            sinks.append(MlflowSink(store, settings, models.export))
        except ImportError as exc:  # submissions with tracking are refused, naming the extra
            log.error("SYNCSGD_MLFLOW_TRACKING_URI is set, but: %s", exc,
                      extra={"event": "tracking-error"})
    followers = [Follower(sink, settings.tracking_interval_s) for sink in sinks]
    for follower in followers:
        follower.start()
    return followers


def on_loop_thread(loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> None:
    """Run ``call`` on ``loop``'s thread, the one that started Ray (see ``lifespan``), and
    wait for it; the server's requests wait meanwhile."""
    async def run() -> None:
        call()

    asyncio.run_coroutine_threadsafe(run(), loop).result()


async def time_requests(request: Request,
                        call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: each request's duration into the metrics, once the app has them."""
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        return await call_next(request)
    return await metrics.time_request(request, call_next)


metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", response_class=PlainTextResponse,
                    dependencies=[Depends(require_admin_read)],
                    responses={403: {"description": "a user's token, not an admin's"}})
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: jobs by state, running jobs' speed and loss, steps,
    all-reduce seconds, HTTP request durations, preemptions; with
    ``SYNCSGD_METRICS_USER_LABELS``, each user's CPUs and queued jobs. Once there are
    accounts, for admins only."""
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
