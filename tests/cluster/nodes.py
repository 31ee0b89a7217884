"""Starting docker-compose services in the namespaces of a :class:`tests.cluster.netns.Topology`
(used by the multi-node tests and by the multi-node benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import compose
from tests.cluster.netns import Topology

BIN = Path(sys.executable).parent


def plain_environment() -> dict[str, str]:
    """This process's environment without Ray's or the service's variables, the venv first
    on PATH (the scripts call ``ray`` and ``syncsgd`` as an image would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SYNCSGD_"))}
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "RAY_USAGE_STATS_ENABLED": "0"}


def wait_healthy(net: Topology, role: str, service: str, env: dict[str, str],
                 timeout_s: float = 90) -> None:
    """Run the compose service's healthcheck inside the node until it passes."""
    deadline = time.monotonic() + timeout_s
    while net.run(role, compose.healthcheck(service), env, timeout=30).returncode != 0:
        assert time.monotonic() < deadline, f"{service} on {role} never became healthy"
        time.sleep(0.5)


def start_service(net: Topology, role: str, service: str, env: dict[str, str],
                  log: Path, wait: bool = True) -> subprocess.Popen[bytes]:
    """Run the compose ``service``'s command with ``env`` in ``role``'s namespace, and
    (``wait``) wait for its healthcheck."""
    process = net.spawn(role, compose.command(service), env, log, cwd=compose.ROOT)
    if wait:
        wait_healthy(net, role, service, env)
    return process
