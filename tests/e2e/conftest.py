"""A real service: ``syncsgd serve`` in a subprocess, on a free loopback port, with its own
data dir and its own embedded Ray. Stopped with SIGTERM, as an operator would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.client import Client
from service.local import free_port
from tests.processes import process_exists, processes_with_env

__all__ = ["process_exists", "processes_with_env"]

SYNCSGD = str(Path(sys.executable).with_name("syncsgd"))


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

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
        shutil.rmtree(self.ray_temp_dir, ignore_errors=True)  # Ray's logs and sockets
        assert "Traceback" not in self.log.read_text(), self.tail()
        return self.process.returncode

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One service for a module's tests: 2 CPUs, up to 2 jobs at a time."""
    srv = start_server(tmp_path_factory.mktemp("service") / "data", max_concurrent_jobs=2,
                       ray_dashboard="true", ray_dashboard_port=free_port())
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM), srv.tail()
    wait_for(lambda: not srv.ray_processes(), 30, "the service's Ray processes to exit")


def wait_for(predicate: Any, timeout_s: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval)


