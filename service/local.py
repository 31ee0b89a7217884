"""A service of one's own for a while: ``syncsgd serve`` in a subprocess on a free loopback
port, with its own data dir and embedded Ray, stopped with SIGTERM on the way out. What
``syncsgd demo`` and the end-to-end benchmark run on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from service.client import Client


class LocalClient(Client):
    """A client of a service this process started, which knows the service's process id."""

    def __init__(self, url: str, pid: int):
        super().__init__(url)
        self.pid = pid


@contextlib.contextmanager
def local_service(name: str, cpus: int, data_dir: Path | None = None,
                  start_timeout_s: float = 180) -> Iterator[LocalClient]:
    """Yield a client of a fresh service with ``cpus`` Ray CPUs; data in ``data_dir``
    (default: a temporary dir ``syncsgd-<name>-*``, removed after). The service log is
    printed if it fails to start."""
    with tempfile.TemporaryDirectory(prefix=f"syncsgd-{name}-") as tmp:
        port = free_port()
        env = {**os.environ, "SYNCSGD_DATA_DIR": str(data_dir or tmp),
               "SYNCSGD_PORT": str(port), "SYNCSGD_HOST": "127.0.0.1",
               "SYNCSGD_RAY_NUM_CPUS": str(cpus), "SYNCSGD_RAY_TEMP_DIR": str(Path(tmp) / "ray")}
        env.pop("SYNCSGD_TOKEN", None)
        log_path = Path(tmp) / "service.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        client = LocalClient(f"http://127.0.0.1:{port}", server.pid)
        try:
            try:
                client.wait_until_up(timeout_s=start_timeout_s)
            except Exception:
                print(log_path.read_text()[-3000:], file=sys.stderr)
                raise
            yield client
        finally:
            client.close()
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=90)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def free_port() -> int:
    """A free TCP port on loopback (bound and released: for a server to take next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
