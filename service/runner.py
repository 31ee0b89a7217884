"""The ONLY bridge from the service to :mod:`worker` (and, through it, to Ray).

Everything else in ``service/`` speaks in job specs, step records and the API
models; this module turns them into worker groups and back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.data import load_dataset
from common.nn import Network
from common.records import StepRecord
from common.schemas import JobSpec, RankPlacement
from service.config import Settings
from worker import cluster
from worker.driver import TrainingResult, train
from worker.errors import GroupError, JobCancelledError
from worker.group import GroupOptions, WorkerGroup

__all__ = ["GroupError", "JobCancelledError", "TrainingResult", "connect", "disconnect",
           "run_job", "save_model"]


def connect(settings: Settings) -> dict[str, Any]:
    """Start the embedded Ray or join ``settings.ray_address``; returns its resources."""
    return cluster.connect(settings.ray_address, auth_mode=settings.ray_auth_mode,
                           num_cpus=settings.ray_num_cpus,
                           include_dashboard=settings.ray_dashboard,
                           dashboard_port=settings.ray_dashboard_port,
                           temp_dir=settings.ray_temp_dir)


def disconnect() -> None:
    cluster.disconnect()


def cluster_cpus() -> tuple[float, float]:
    """``(total, free)`` CPUs of the connected cluster, as Ray counts them."""
    import ray

    return (float(ray.cluster_resources().get("CPU", 0.0)),
            float(ray.available_resources().get("CPU", 0.0)))


def run_job(spec: JobSpec, settings: Settings, *,
            on_records: Callable[[list[StepRecord]], None],
            on_started: Callable[[list[RankPlacement], int], None] = lambda ranks, total: None,
            cancelled: Callable[[], bool] = lambda: False) -> TrainingResult:
    """Train ``spec`` on a fresh worker group; the group is gone when this returns."""
    options = GroupOptions(env=dict(settings.worker_env),
                           placement_timeout_s=settings.placement_timeout_s,
                           join_timeout_s=settings.join_timeout_s,
                           chunk_timeout_s=settings.chunk_timeout_s)

    def started(group: WorkerGroup) -> None:
        on_started([RankPlacement(rank=r.rank, node=r.node, pid=r.pid) for r in group.ranks],
                   group.total_steps)

    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    return train(spec, data, options, on_records=on_records, cancelled=cancelled,
                 on_started=started)


def save_model(spec: JobSpec, params: Any, path: Path) -> None:
    """Write the weights as an .npz loadable with ``Network.load``, atomically."""
    net = Network.from_spec(spec.model, dtype=spec.dtype, loss=spec.loss)
    net.params[...] = params
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    net.save(partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    partial.replace(path)
