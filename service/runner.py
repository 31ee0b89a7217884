"""The ONLY bridge from the service to :mod:`worker` (and, through it, to Ray).

Everything else in ``service/`` speaks in job specs and step records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.data import load_dataset
from common.records import StepRecord
from common.schemas import JobSpec
from worker import cluster
from worker.driver import TrainingResult, train
from worker.errors import GroupError, JobCancelledError
from worker.group import GroupOptions

__all__ = ["GroupError", "GroupOptions", "JobCancelledError", "TrainingResult", "connect",
           "disconnect", "run_job"]


def connect(address: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Start the embedded Ray (``address=None``) or join a cluster; returns its resources."""
    return cluster.connect(address, **kwargs)


def disconnect() -> None:
    cluster.disconnect()


def run_job(spec: JobSpec, *, on_records: Callable[[list[StepRecord]], None],
            cancelled: Callable[[], bool] = lambda: False,
            options: GroupOptions | None = None) -> TrainingResult:
    """Train ``spec`` on a fresh worker group of the connected Ray cluster."""
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    return train(spec, data, options or GroupOptions(), on_records=on_records,
                 cancelled=cancelled)
