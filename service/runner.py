"""The ONLY bridge from the service to :mod:`worker` (and, through it, to Ray).

Everything else in ``service/`` speaks in job specs, step records and the API
models; this module turns them into worker groups and back.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.checkpoint import TrainingState
from common.data import load_dataset
from common.nn import Network
from common.records import StepRecord
from common.schemas import JobSpec, RankPlacement, RestartInfo, VerifyReport, VerifyRequest
from service.config import Settings
from worker import cluster
from worker.actor import Fault
from worker.driver import Restart, TrainingResult, train
from worker.errors import GroupError, JobCancelledError
from worker.group import GroupOptions, WorkerGroup

__all__ = ["Fault", "GroupError", "JobCancelledError", "TrainingResult", "connect",
           "disconnect", "run_job", "save_model"]


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
            cancelled: Callable[[], bool] = lambda: False,
            on_checkpoint: Callable[[TrainingState], None] | None = None,
            on_restart: Callable[[RestartInfo], None] | None = None,
            pending_faults: Callable[[], list[Fault]] = list,
            resume: TrainingState | None = None) -> TrainingResult:
    """Train ``spec`` on fresh worker groups (replaced when workers die); all are gone
    when this returns."""
    options = GroupOptions(env=dict(settings.worker_env),
                           placement_timeout_s=settings.placement_timeout_s,
                           join_timeout_s=settings.join_timeout_s,
                           chunk_timeout_s=settings.chunk_timeout_s)

    def started(group: WorkerGroup) -> None:
        on_started([RankPlacement(rank=r.rank, node=r.node, pid=r.pid) for r in group.ranks],
                   group.total_steps)

    def restarted(restart: Restart) -> None:
        if on_restart is not None:
            on_restart(RestartInfo(number=restart.number, cause=restart.cause,
                                   at=datetime.fromtimestamp(restart.at, UTC),
                                   from_step=restart.from_step))

    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype,
                        datasets_dir=settings.datasets_dir)
    return train(spec, data, options, on_records=on_records, cancelled=cancelled,
                 on_started=started, on_checkpoint=on_checkpoint, on_restart=restarted,
                 pending_faults=pending_faults, resume=resume)


def verify(request: VerifyRequest, settings: Settings) -> VerifyReport:
    """Train the spec for a few steps with 1 and with N workers; compare the weights."""
    results = []
    for workers in (1, request.workers):
        spec = request.spec.model_copy(update={
            "workers": workers, "max_steps": request.steps, "max_restarts": 0,
            "allreduce": "mpi" if request.spec.allreduce == "local" else request.spec.allreduce})
        records: list[StepRecord] = []
        result = run_job(spec, settings, on_records=records.extend)
        results.append((result.params, [r.loss for r in records]))
    (one, curve_one), (many, curve_many) = results
    difference = np.abs(one.astype(np.float64) - many.astype(np.float64))
    scale = np.maximum(np.abs(one.astype(np.float64)), np.finfo(np.float64).tiny)
    return VerifyReport(
        identical=one.tobytes() == many.tobytes(), steps=len(curve_one), workers=request.workers,
        sha256_one=hashlib.sha256(one.tobytes()).hexdigest(),
        sha256_many=hashlib.sha256(many.tobytes()).hexdigest(),
        max_abs_difference=float(difference.max()),
        max_rel_difference=float((difference / scale).max()),
        curves_identical=curve_one == curve_many)


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
