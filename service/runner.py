"""The ONLY bridge from the service to :mod:`worker` (and, through it, to Ray).

Everything else in ``service/`` speaks in job specs, step records and the API
models; a :class:`Runner` turns them into worker groups and back. Two kinds:

- :class:`RayRunner` (what ``syncsgd serve`` uses): the embedded local Ray or a
  cluster, one Ray actor per rank, MPI or gloo between them;
- :class:`InProcessRunner`: the same driver and trainer with ONE rank in the
  service's own process (world size 1, ``LocalAllReduce``, whatever the spec's
  ``workers``). No Ray, no subprocess: for tests of the API surface, which it
  serves in milliseconds. The curve and weights are those of the job (N workers
  compute what 1 does); what it cannot show is anything about processes.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState, fsync_directory
from common.data import Dataset, load_dataset
from common.nn import Network
from common.schemas import JobSpec, VerifyReport, VerifyRequest
from service.config import Settings
from service.datasets import check_unchanged
from worker import cluster
from worker.driver import (
    GroupFactory,
    Recorder,
    Restart,
    TrainingHooks,
    TrainingResult,
    train,
)
from worker.elastic import SHRUNK, Resize
from worker.errors import BelowMinimumError, GroupError, JobCancelledError, RankFailedError
from worker.faults import Fault, FaultPlan
from worker.group import GroupOptions, RankInfo, WorkerGroup
from worker.local_group import LocalGroup
from worker.pool import WarmPool, local_node_with_cpus
from worker.stragglers import Straggler

log = logging.getLogger("syncsgd.runner")
Array = npt.NDArray[Any]
#: Waits between tries to join a cluster whose head does not answer, the last repeated.
CONNECT_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)

__all__ = ["SHRUNK", "Array", "BelowMinimumError", "Fault", "FaultPlan", "GroupError",
           "InProcessRunner", "JobCancelledError", "ProcessRestartNeededError",
           "RankFailedError", "RankInfo", "RayRunner", "Resize", "Restart", "Runner",
           "Straggler", "TrainingHooks", "TrainingResult", "ray_problem", "save_model"]


class ProcessRestartNeededError(RuntimeError):
    """Jobs can run again only in a new service process (a Ray driver cannot join a
    restarted cluster head: its calls to the lost one are left blocked, and Ray ends the
    process when they fail)."""


class Runner(Protocol):
    """What the service needs of the machinery that trains."""

    def connect(self) -> None:
        """Get ready (start or join Ray). Called once, on the thread that owns the app."""
        ...

    def disconnect(self) -> None:
        """Leave; after every job has stopped."""
        ...

    def cluster_cpus(self) -> tuple[float, float]:
        """``(total, free)`` CPUs, read now (nodes may join and leave)."""
        ...

    def problem(self) -> str | None:
        """Why jobs cannot run now (the embedded Ray died, the cluster is gone); None."""
        ...

    def recover(self) -> None:
        """Make jobs runnable again after :meth:`problem` said why not (start the embedded
        Ray again); raises when it could not (yet), and :class:`ProcessRestartNeededError`
        when only a new service process can. Called on the thread that called
        :meth:`connect` (the supervisor arranges it)."""
        ...


    def run_job(self, spec: JobSpec, hooks: TrainingHooks,
                resume: TrainingState | None = None) -> TrainingResult:
        """Train ``spec`` to its end on this thread, reporting to ``hooks``."""
        ...

    def verify(self, request: VerifyRequest) -> VerifyReport:
        """Train the spec for a few steps with 1 and with N workers; compare the weights."""
        ...


def ray_problem(jobs_runner: Runner) -> str | None:
    """``jobs_runner.problem()``, where a check that itself fails is the answer: why jobs
    cannot run now, or None. The supervisor asks it every interval, the scheduler when a
    job's driver fails."""
    try:
        return jobs_runner.problem()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


class _DriverRunner:
    """What both runners share: the data, the driver, the verification."""

    make_group: GroupFactory

    def __init__(self, settings: Settings):
        self.settings = settings
        self.options = GroupOptions(env=dict(settings.worker_env),
                                    placement_timeout_s=settings.placement_timeout_s,
                                    join_timeout_s=settings.join_timeout_s,
                                    chunk_timeout_s=settings.chunk_timeout_s,
                                    elastic_wait_s=settings.elastic_wait_s,
                                    straggler_factor=settings.straggler_factor,
                                    straggler_chunks=settings.straggler_chunks)

    def run_job(self, spec: JobSpec, hooks: TrainingHooks,
                resume: TrainingState | None = None) -> TrainingResult:
        began = time.monotonic()
        data = self.load_data(spec)
        return train(spec, data, self.options, hooks, resume=resume,
                     make_group=self.make_group, data_s=time.monotonic() - began)

    def load_data(self, spec: JobSpec) -> Dataset:
        """The job's data, split, its preprocessing fitted; a registered file must be the
        one that was ingested."""
        data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype,
                            datasets_dir=self.settings.datasets_path)
        if data.meta.source is not None:
            check_unchanged(data.meta.source, self.settings.datasets_root)
        return data

    def verify(self, request: VerifyRequest) -> VerifyReport:
        runs = []
        for workers in (1, request.workers):
            spec = request.spec.model_copy(update={
                "workers": workers, "max_steps": request.steps, "max_restarts": 0,
                "allreduce": "mpi" if request.spec.allreduce == "local"
                else request.spec.allreduce})
            recorder = Recorder()
            runs.append((self.run_job(spec, recorder).params, [r.loss for r in recorder.steps]))
        return compare_runs(runs[0], runs[1], request.workers)


class RayRunner(_DriverRunner):
    """Jobs on Ray actors: the embedded local Ray, or ``settings.ray_address``; with
    ``settings.warm_workers`` rank processes started ahead on each node jobs ran on."""

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.pool = WarmPool(settings.warm_workers, settings.worker_env)
        self.make_group = functools.partial(WorkerGroup.create, pool=self.pool)

    def connect(self) -> None:
        """Start the embedded Ray, or join the cluster: tried again with a growing wait for
        up to ``ray_connect_timeout_s`` while its head does not answer (a service started
        again after the head was lost may be up before it)."""
        s = self.settings
        deadline = time.monotonic() + s.ray_connect_timeout_s
        for wait in itertools.chain(CONNECT_BACKOFF_S, itertools.repeat(CONNECT_BACKOFF_S[-1])):
            try:
                cluster.connect(s.ray_address, auth_mode=s.ray_auth_mode,
                                num_cpus=s.ray_num_cpus, include_dashboard=s.ray_dashboard,
                                dashboard_port=s.ray_dashboard_port, temp_dir=s.ray_temp_dir)
                break
            except Exception as exc:  # ConnectionError, or Ray's own when the GCS is not up
                if s.ray_address is None or time.monotonic() + wait > deadline:
                    raise
                log.warning("Ray at %s does not answer (%s); trying again in %g s",
                            s.ray_address, exc, wait, extra={"event": "ray-connect-retry"})
                cluster.disconnect()
                time.sleep(wait)
        if s.warm_workers and (node := local_node_with_cpus()) is not None:
            self.pool.fill(node)

    def disconnect(self) -> None:
        self.pool.close()
        cluster.disconnect()

    def cluster_cpus(self) -> tuple[float, float]:
        """0 CPUs while Ray is down or being started again."""
        import ray

        try:
            return (float(ray.cluster_resources().get("CPU", 0.0)),
                    float(ray.available_resources().get("CPU", 0.0)))
        except Exception:
            return 0.0, 0.0

    def problem(self) -> str | None:
        return cluster.problem(embedded=self.settings.ray_address is None)

    def recover(self) -> None:
        """Leave what is left of the lost embedded Ray (``ray.shutdown`` ends its remaining
        processes), then start it again. A lost cluster needs a new process."""
        if self.settings.ray_address is not None:
            raise ProcessRestartNeededError(f"the Ray cluster at {self.settings.ray_address} "
                                       "was lost")
        self.pool.close()
        cluster.disconnect()
        self.pool = WarmPool(self.settings.warm_workers, self.settings.worker_env)
        self.make_group = functools.partial(WorkerGroup.create, pool=self.pool)
        self.connect()


class InProcessRunner(_DriverRunner):
    """Jobs as one in-process rank (module docstring), on a pretend cluster of ``cpus``."""

    make_group = staticmethod(LocalGroup.create)

    def __init__(self, settings: Settings, cpus: float = 2.0):
        super().__init__(settings)
        self.cpus = cpus

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def cluster_cpus(self) -> tuple[float, float]:
        return self.cpus, self.cpus

    def problem(self) -> str | None:
        return None  # its one rank is this process: nothing to lose

    def recover(self) -> None:
        pass


def compare_runs(one: tuple[Any, list[float]], many: tuple[Any, list[float]],
                 workers: int) -> VerifyReport:
    """The report on two runs' ``(final weights, loss curve)``: 1 worker and ``workers``."""
    (params_one, curve_one), (params_many, curve_many) = one, many
    a, b = params_one.astype(np.float64), params_many.astype(np.float64)
    difference = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.finfo(np.float64).tiny)
    return VerifyReport(
        identical=params_one.tobytes() == params_many.tobytes(), steps=len(curve_one),
        workers=workers, sha256_one=hashlib.sha256(params_one.tobytes()).hexdigest(),
        sha256_many=hashlib.sha256(params_many.tobytes()).hexdigest(),
        max_abs_difference=float(difference.max()),
        max_rel_difference=float((difference / scale).max()),
        curves_identical=curve_one == curve_many)


def save_model(spec: JobSpec, result: TrainingResult, path: Path) -> None:
    """Write the weights and the preprocessing as an .npz loadable with ``Network.load``,
    atomically."""
    net = Network.from_spec(spec.model, dtype=spec.dtype, loss=spec.loss)
    net.params[...] = result.params
    net.preprocessing = result.preprocessing
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    net.save(partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    partial.replace(path)
    fsync_directory(path.parent)
