"""Shared fixtures: a real local Ray instance, started by the tests and stopped by them, and
a datasets directory of the test session's own (built-in datasets are written there)."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from worker import cluster

#: More CPUs than the machine's 2, so 3- and 4-rank jobs can be placed (they time-share).
RAY_CPUS = 4


@pytest.fixture(scope="session", autouse=True)
def datasets_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``SYNCSGD_DATASETS_DIR`` for this session: what the library, the ranks (which inherit
    the environment) and ``mpiexec`` runs read and write. Servers get their own."""
    path = str(tmp_path_factory.mktemp("datasets"))
    saved = os.environ.get("SYNCSGD_DATASETS_DIR")
    os.environ["SYNCSGD_DATASETS_DIR"] = path
    yield path
    if saved is None:
        os.environ.pop("SYNCSGD_DATASETS_DIR", None)
    else:
        os.environ["SYNCSGD_DATASETS_DIR"] = saved


@pytest.fixture(scope="session")
def ray_cluster(datasets_dir: str) -> Iterator[dict[str, Any]]:
    """The embedded Ray (``address="local"``), with the dashboard so the state API answers."""
    resources = cluster.connect(num_cpus=RAY_CPUS, include_dashboard=True)
    yield resources
    cluster.disconnect()
