"""A real service for end-to-end tests: ``syncsgd serve`` in a subprocess, on a free
loopback port, with its own data dir and its own embedded Ray. Stopped with SIGTERM, as an
operator would, and checked for leftover processes every time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.client import Client
from service.local import free_port
from tests.helpers import wait_for
from tests.processes import processes_with_env

SYNCSGD = str(Path(sys.executable).with_name("syncsgd"))


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    http: httpx.Client = field(init=False)  # speaks to this server, no token

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token)

    @property
    def ray_temp_dir(self) -> str:
        return self.env["SYNCSGD_RAY_TEMP_DIR"]

    def ray_processes(self) -> list[int]:
        """Pids of live processes descended from this service (not itself)."""
        marker = f"SYNCSGD_RAY_TEMP_DIR={self.ray_temp_dir}"
        return [pid for pid in processes_with_env(marker) if pid != self.process.pid]

    def kill_hard(self) -> None:
        """SIGKILL the service itself, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        """SIGTERM, then wait. uvicorn re-raises the signal after its graceful shutdown,
        so a clean stop ends with -SIGTERM; the log must show no traceback."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the service ignored SIGTERM; log:\n{self.tail()}") from None
        self.http.close()
        shutil.rmtree(self.ray_temp_dir, ignore_errors=True)  # Ray's logs and sockets
        assert "Traceback" not in self.log.read_text(), self.tail()
        return self.process.returncode

    def stop_cleanly(self) -> None:
        """Stop, and check that it ended as SIGTERM asks and left no Ray process behind."""
        assert self.stop() in (0, -signal.SIGTERM), self.tail()
        wait_for(lambda: not self.ray_processes(), 30, "the service's Ray processes to exit")

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


def start_server(data_dir: Path, **settings: Any) -> Server:
    """Start ``syncsgd serve``; ``settings`` become ``SYNCSGD_<NAME>`` variables."""
    port = free_port()
    env = {**os.environ, "SYNCSGD_DATA_DIR": str(data_dir), "SYNCSGD_PORT": str(port),
           "SYNCSGD_HOST": "127.0.0.1", "SYNCSGD_RAY_NUM_CPUS": "2",
           # its own Ray temp dir: every Ray process of this service names it on its
           # command line, so the tests can tell that none outlives the service
           "SYNCSGD_RAY_TEMP_DIR": f"/tmp/syncsgd-t{port}"}
    env.pop("SYNCSGD_DATASETS_DIR", None)  # its own, under its data dir
    env.update({f"SYNCSGD_{k.upper()}": str(v) for k, v in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-service-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([SYNCSGD, "serve"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", data_dir, process, log, env)
    client = server.client(settings.get("token"))
    try:
        wait_for(lambda: process.poll() is not None or _answers(client), 120, "the service")
        assert process.poll() is None, "the service exited"
    except AssertionError:
        server.stop()
        raise AssertionError(f"the service did not come up; log:\n{server.tail()}") from None
    finally:
        client.close()
    return server


def _answers(client: Client) -> bool:
    try:
        client.health()
    except Exception:
        return False
    return True




def service_fixture(name: str, **settings: Any) -> Callable[..., Iterator[Server]]:
    """A module-scoped fixture of one service with ``settings`` (``SYNCSGD_<NAME>``), shared
    by the module's tests and stopped cleanly after them."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        srv = start_server(tmp_path_factory.mktemp(name) / "data", **settings)
        yield srv
        srv.stop_cleanly()

    return server
