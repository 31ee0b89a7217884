"""One rank of a job: a plain class the worker group runs as a Ray actor.

Like Horovod's worker, it does not depend on Ray (only ``node_address`` asks
Ray where it runs), so its logic is testable in-process. Its life:
``configure`` (or the constructor) -> join a collective group (``mpi_*`` steps, ``gloo_join`` or
``local_join``) -> ``start`` (builds the trainer: the broadcast of rank 0's
initial parameters happens here, on every rank at once) -> ``run(k)`` chunks
-> ``final_params`` -> ``close``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import ThreadpoolController

from common.checkpoint import TrainingState
from common.collective import AllReduce, LocalAllReduce
from common.data import DataRef, Dataset
from common.records import ChunkResult
from common.schemas import JobSpec
from worker.backends.mpi import MpiPortJoin
from worker.faults import Fault, InjectedFaultError
from worker.trainer import Trainer

Array = npt.NDArray[Any]


class RankWorker:
    """Rank ``rank`` of ``world_size``; ``blas_threads`` None leaves BLAS as it is.

    Made without a spec, it is a warm process waiting for a job (:mod:`worker.pool`):
    ``configure`` then makes it the rank, as the constructor would have."""

    def __init__(self, spec_json: str | None = None, rank: int = 0, world_size: int = 1,
                 blas_threads: int | None = 1):
        self.fault: Fault | None = None
        self._mpi_join: MpiPortJoin | None = None
        self.comm: AllReduce | None = None
        self.trainer: Trainer | None = None
        self.rank, self.world_size = rank, world_size
        if spec_json is not None:
            self.configure(spec_json, rank, world_size, blas_threads)

    def configure(self, spec_json: str, rank: int, world_size: int,
                  blas_threads: int | None = 1) -> dict[str, Any]:
        """Become rank ``rank`` of ``world_size`` of the job ``spec_json``; returns
        :meth:`describe`."""
        # One BLAS thread per CPU this rank was given: ranks that fill the cores
        # must not also fight over them from inside OpenBLAS.
        if blas_threads is not None:
            self._blas_limit = _blas().limit(limits=blas_threads, user_api="blas")
        self.spec = JobSpec.model_validate_json(spec_json)
        self.rank, self.world_size = rank, world_size
        return self.describe()

    def warm(self) -> None:
        """A warm process pays its one-time costs before any job waits: the scan of the
        loaded BLAS libraries that thread limits need, and the spec's validation."""
        _blas()
        JobSpec.model_validate_json(JobSpec().model_dump_json())

    def describe(self) -> dict[str, Any]:
        """Where this rank runs: its rank, process id, host name and node address."""
        return {"rank": self.rank, "pid": os.getpid(), "hostname": socket.gethostname(),
                "node": self.node_address()}

    @staticmethod
    def node_address() -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    # ---- joining the collective group ------------------------------------------------------

    def mpi_open_port(self) -> str:
        self._mpi_join = MpiPortJoin()
        return self._mpi_join.open_port()

    def mpi_accept(self, port: str) -> int:
        assert self._mpi_join is not None, "rank 0 opens the port first"
        return self._mpi_join.accept(port)

    def mpi_connect(self, port: str) -> int:
        self._mpi_join = MpiPortJoin()
        return self._mpi_join.connect(port)

    def mpi_finish(self) -> int:
        assert self._mpi_join is not None
        self.comm = self._mpi_join.finish()
        self._mpi_join = None
        return self.comm.rank

    def gloo_join(self, group_name: str, timeout_ms: int) -> int:
        from worker.backends.ray_collective import GlooAllReduce

        self.comm = GlooAllReduce(self.world_size, self.rank, group_name, timeout_ms)
        return self.comm.rank

    def local_join(self) -> int:
        self.comm = LocalAllReduce()
        return 0

    # ---- training ----------------------------------------------------------------------

    def start(self, data: Dataset | DataRef, state: TrainingState | None = None) -> int:
        """Open the data (a :class:`DataRef`: this rank's own memory map of the files),
        build the trainer (collective: broadcasts rank 0's parameters), then restore
        ``state`` if given (every rank gets the same). Returns the total steps."""
        if self.comm is None or self.comm.rank != self.rank:
            raise RuntimeError(f"rank {self.rank}: not joined to the collective group")
        if isinstance(data, DataRef):
            data = Dataset.open(data)
        self.trainer = Trainer(self.spec, data, self.comm)
        if state is not None:
            self.trainer.restore(state)
        return self.trainer.total_steps

    def set_fault(self, fault: Fault) -> None:
        """Arm a fault on this running rank (drills and tests)."""
        self.fault = fault

    def run(self, steps: int) -> ChunkResult:
        """``steps`` synchronized steps; only rank 0 sends its records and its state back
        (the driver keeps the newest: a failure loses the chunk in flight, no more). Every
        rank sends its timings (``spans``)."""
        trainer = self._trainer()
        first = trainer.step
        parts = []
        if self.fault is not None and first < self.fault.step <= first + steps:
            parts.append(trainer.run(self.fault.step - 1 - first))
            self._inject(self.fault, trainer)
            self.fault = None
        result = trainer.run(first + steps - trainer.step)
        parts.append(result)
        records = [r for part in parts for r in part.records]
        timings = np.concatenate([part.spans for part in parts if part.spans is not None])
        every = self.spec.fingerprint_every
        fingerprint = result.fingerprint
        if fingerprint is None and first // every != trainer.step // every:
            fingerprint = trainer.fingerprint()
        # Every rank takes part: a sharded optimizer state is gathered.
        state = trainer.state()
        if self.rank != 0:
            return ChunkResult(self.rank, [], trainer.step, fingerprint,
                               total_steps=trainer.total_steps, spans=timings)
        return ChunkResult(0, records, trainer.step, fingerprint, state, trainer.total_steps,
                           trainer.early_report(), timings)

    def final_params(self) -> Array:
        return self._trainer().net.params

    def close(self) -> None:
        if self.comm is not None:
            self.comm.close()
            self.comm = None

    def _trainer(self) -> Trainer:
        if self.trainer is None:
            raise RuntimeError(f"rank {self.rank}: start() was not called")
        return self.trainer

    def die(self) -> None:
        """A real crash: SIGKILL of this process."""
        os.kill(os.getpid(), signal.SIGKILL)

    def hang(self) -> None:
        """Stop answering while the peers wait in a collective."""
        time.sleep(10**6)

    def _inject(self, fault: Fault, trainer: Trainer) -> None:
        if fault.action == "kill":
            self.die()
        elif fault.action == "hang":
            self.hang()
        elif fault.action == "perturb":
            trainer.net.params[0] += 1e-3
        elif fault.action == "slow":
            trainer.slow_s = fault.seconds
        else:
            raise InjectedFaultError(f"injected fault at step {fault.step}")


_controller: ThreadpoolController | None = None


def _blas() -> ThreadpoolController:
    """This process's BLAS libraries, scanned once (a scan takes a good part of a second in
    a process with Ray's libraries loaded)."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller
