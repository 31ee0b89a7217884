"""Shared fixtures: a real local Ray instance, started by the tests and stopped by them."""

from collections.abc import Iterator
from typing import Any

import pytest

from worker import cluster

#: More CPUs than the machine's 2, so 3- and 4-rank jobs can be placed (they time-share).
RAY_CPUS = 4


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """The embedded Ray (``address="local"``), with the dashboard so the state API answers."""
    resources = cluster.connect(num_cpus=RAY_CPUS, include_dashboard=True)
    yield resources
    cluster.disconnect()
