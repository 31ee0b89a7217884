"""One rank in the calling process: the same trainer and schedule, no Ray, no MPI.

:class:`LocalGroup` satisfies the driver's ``Group`` protocol with world size 1
and :class:`common.collective.LocalAllReduce`, whatever ``spec.workers`` says:
N workers compute the same result as 1 (to rounding; bit for bit in
deterministic mode), so the curve and the weights are the job's. It serves the
service's in-process runner (API tests in milliseconds) and tests of the
driver's restart decisions without actors.

Injected faults cannot kill or hang the caller's own process: a ``kill`` or
``hang`` is reported as the rank's death (what the driver would see from a
real one), a ``raise`` raises as it does in an actor. Chunk timeouts do not
apply: a chunk runs to its end on the calling thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from common.checkpoint import TrainingState
from common.data import Dataset
from common.records import ChunkResult
from common.schemas import JobSpec
from worker.actor import RankWorker
from worker.errors import RankFailedError, RankFailure
from worker.faults import Fault
from worker.group import GroupOptions, RankInfo

Array = npt.NDArray[Any]

NODE = "in-process"


class _SimulatedDeathError(Exception):
    """An injected ``kill`` or ``hang`` of an in-process rank."""


class _InProcessRank(RankWorker):
    def die(self) -> None:
        raise _SimulatedDeathError("worker process died (injected kill, simulated in-process)")

    def hang(self) -> None:
        raise _SimulatedDeathError("worker hung (injected hang, simulated in-process)")


class LocalGroup:
    """The driver's group of ONE in-process rank (module docstring)."""

    def __init__(self, worker: RankWorker):
        self._worker = worker
        self.ranks = [RankInfo(0, os.getpid(), socket.gethostname(), NODE)]
        self.startup: dict[str, float] = {}
        self.step = 0
        self.total_steps = 0
        self.fingerprints: list[str] = []

    @classmethod
    def create(cls, spec: JobSpec, data: Dataset, options: GroupOptions,
               state: TrainingState | None = None) -> LocalGroup:
        single = spec.model_copy(update={"workers": 1, "allreduce": "local"})
        # The caller's BLAS threads stay as they are: this process is not ours to limit.
        group = cls(_InProcessRank(single.model_dump_json(), 0, 1, blas_threads=None))
        group._worker.local_join()
        began = time.monotonic()
        with group._failures("loading data"):
            group.total_steps = group._worker.start(data, state)
        group.startup["data and broadcast"] = time.monotonic() - began
        group.step = state.step if state is not None else 0
        return group

    def run(self, steps: int, timeout_s: float) -> ChunkResult:
        with self._failures(f"steps {self.step + 1}..{self.step + steps}"):
            chunk = self._worker.run(steps)
        if chunk.spans is not None:  # one rank's: (1, steps, 5), as a group's are
            chunk = dataclasses.replace(chunk, spans=chunk.spans[np.newaxis])
        self.step, self.total_steps = chunk.step, chunk.total_steps  # early stopping: fewer
        if chunk.fingerprint is not None:
            self.fingerprints = [chunk.fingerprint]
        return chunk

    def inject(self, fault: Fault) -> None:
        if fault.rank != 0:
            raise ValueError(f"rank: {fault.rank} is not a rank of this job (0..0)")
        self._worker.set_fault(fault)

    def final_params(self) -> Array:
        return self._worker.final_params().copy()

    def shutdown(self) -> None:
        self._worker.close()

    @contextlib.contextmanager
    def _failures(self, during: str) -> Iterator[None]:
        """Errors of the rank as the driver knows them from actors: a RankFailedError."""
        try:
            yield
        except _SimulatedDeathError as exc:
            raise RankFailedError([RankFailure(0, NODE, os.getpid(), str(exc), died=True)],
                                  during) from exc
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            raise RankFailedError([RankFailure(0, NODE, os.getpid(), cause)], during) from exc
