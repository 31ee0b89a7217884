"""``create_app()``: the FastAPI application of the control plane.

Its lifespan owns the service's resources: the SQLite store, the runner (by
default the Ray connection: the embedded local Ray, or a cluster) and the job
scheduler. On shutdown, running jobs are stopped and their workers killed
before Ray is left, so no process of the service outlives it. Tests pass an
in-process runner instead (:class:`service.runner.InProcessRunner`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import dashboard, datasets, errors, health, jobs, verify
from service.body_limit import BodyLimitMiddleware
from service.config import Settings
from service.metrics import Metrics
from service.models import ModelCache
from service.runner import RayRunner, Runner
from service.scheduler import Scheduler
from service.store import SqliteJobStore


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    """The app on ``settings`` (default: from the environment), training with ``runner``
    (default: a :class:`RayRunner` of those settings)."""
    settings = settings or Settings()
    jobs_runner = runner or RayRunner(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteJobStore(settings.database_path)
        metrics = Metrics(store)
        # On THIS thread, not a worker thread: Ray ties its head processes' lives to the
        # thread that started them (PR_SET_PDEATHSIG), and the server retires idle
        # worker threads, which killed the embedded Ray ~10 s into a quiet spell.
        jobs_runner.connect()
        scheduler = Scheduler(store, settings, jobs_runner,
                              observe_records=metrics.observe_records)
        scheduler.start()
        app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
        app.state.runner, app.state.metrics = jobs_runner, metrics
        app.state.models = ModelCache(settings.model_path)
        try:
            yield
        finally:
            await run_in_threadpool(scheduler.stop)
            await run_in_threadpool(jobs_runner.disconnect)
            store.close()

    app = FastAPI(title="syncsgd", version="0.1.0", lifespan=lifespan,
                  description="Synchronized data-parallel SGD as a service.")
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes,
                       upload_limit=settings.max_upload_bytes)

    @app.middleware("http")
    async def time_requests(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if metrics is None:
            return await call_next(request)
        return await metrics.time_request(request, call_next)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format: jobs by state, running jobs' speed and loss, steps,
        all-reduce seconds, HTTP request durations."""
        metrics: Metrics = request.app.state.metrics
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(verify.router)
    app.include_router(dashboard.router)
    return app
