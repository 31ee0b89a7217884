"""Connecting to Ray: the embedded local instance, or a cluster by address.

Never ``ray stop`` and never ``address="auto"``: the first kills every Ray
process on the machine, the second may attach to somebody else's cluster.
``RAY_AUTH_MODE`` is always set explicitly (Ray 2.60 turns token auth on by
itself as soon as ``~/.ray/auth_token`` exists).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

AuthMode = Literal["disabled", "token"]


def connect(address: str | None = None, *, auth_mode: AuthMode | None = None,
            num_cpus: int | None = None, include_dashboard: bool = False,
            dashboard_port: int = 8265, temp_dir: os.PathLike[str] | None = None,
            ) -> dict[str, Any]:
    """Start the embedded Ray (``address=None``) or join the cluster at ``address``.

    Returns the cluster's total resources. Idempotent within a process.
    """
    import ray

    os.environ["RAY_AUTH_MODE"] = auth_mode or ("disabled" if address is None else "token")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                     dashboard_port=dashboard_port, logging_level=logging.WARNING,
                     log_to_driver=False, _temp_dir=str(temp_dir) if temp_dir else None)
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return dict(ray.cluster_resources())


def disconnect() -> None:
    """Leave Ray; stops the embedded instance if this process started it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
