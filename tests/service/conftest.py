"""The app in this process: ``create_app`` with an in-process runner and a real SQLite file,
driven through FastAPI's ``TestClient``. No Ray, no subprocess, no port: the API's surface
(every 4xx, auth, limits, the OpenAPI document, the curve, SSE framing) in milliseconds.
What only real processes show (MPI and gloo, kills, crash recovery, the browser, several
nodes) is tested in tests/e2e, tests/worker and tests/cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from service.runner import InProcessRunner

AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[AppFactory]:
    """``make_app(cpus=2, data_dir_name=None, runner=None, **settings)``: a started app on a
    fresh data dir (or the named one, to start a service again on the same data), with an
    in-process runner (or the one ``runner(settings)`` makes); stopped after the test.
    ``settings`` are :class:`Settings` fields."""
    clients: list[TestClient] = []

    def make(cpus: float = 2, data_dir_name: str | None = None,
             runner: Callable[[Settings], InProcessRunner] | None = None,
             **settings: Any) -> TestClient:
        data_dir = tmp_path / (data_dir_name or f"data{len(clients)}")
        settings.setdefault("datasets_dir", data_dir / "datasets")
        config = Settings(_env_file=None, data_dir=data_dir, **settings)  # type: ignore[call-arg]
        jobs_runner = runner(config) if runner else InProcessRunner(config, cpus=cpus)
        client = TestClient(create_app(config, runner=jobs_runner))
        client.__enter__()  # runs the lifespan: store, scheduler
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):  # a test may have stopped it already
            client.__exit__(None, None, None)


@pytest.fixture
def api(make_app: AppFactory) -> TestClient:
    """The app with default settings on a pretend cluster of 2 CPUs."""
    return make_app()
