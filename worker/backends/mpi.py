"""The ``mpi`` backend: mpi4py buffer methods on ONE communicator of all ranks.

Under ``mpiexec`` the communicator is simply ``COMM_WORLD``. Ray actors are
started without mpiexec, each as its own 1-process MPI world; they grow one
communicator through MPI ports, one newcomer at a time (docs/architecture.md):

1. rank 0 opens a port (its name carries rank 0's address);
2. for r = 1 .. W-1: the current members ``Accept`` on that port together while
   rank r ``Connect``s from ``COMM_SELF``; each side ``Merge``s the
   intercommunicator, members low and the newcomer high, so ranks follow the
   join order.

Every step is collective and blocking, and a process stuck in it cannot be
interrupted: the driver puts a timeout on every step and kills the group when
one passes. mpich 4.3.2 is pinned: 5.0.2 gives every singleton process the same
namespace and Merge fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from common.collective import as_reducible, offsets

Array = npt.NDArray[Any]


def _mpi() -> Any:
    from mpi4py import MPI  # imported lazily: MPI_Init happens here

    return MPI


class MpiAllReduce:
    """``AllReduce`` over an mpi4py intracommunicator, in place on numpy buffers."""

    def __init__(self, comm: Any):
        self._MPI = _mpi()
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.world_size: int = comm.Get_size()

    def allreduce_sum(self, buf: Array) -> None:
        self.comm.Allreduce(self._MPI.IN_PLACE, as_reducible(buf), op=self._MPI.SUM)

    def broadcast(self, buf: Array, root: int = 0) -> None:
        self.comm.Bcast(as_reducible(buf), root=root)

    def reduce_scatter_sum(self, send: Array, recv: Array, counts: Sequence[int]) -> None:
        self.comm.Reduce_scatter(as_reducible(send), as_reducible(recv),
                                 recvcounts=list(counts), op=self._MPI.SUM)

    def allgather(self, buf: Array, counts: Sequence[int]) -> None:
        self.comm.Allgatherv(self._MPI.IN_PLACE,
                             [as_reducible(buf), (list(counts), offsets(counts))])

    def close(self) -> None:
        if self.comm != self._MPI.COMM_WORLD and self.comm != self._MPI.COMM_SELF:
            self.comm.Free()


class MpiPortJoin:
    """One process's side of growing a communicator through an MPI port."""

    def __init__(self) -> None:
        self._MPI = _mpi()
        self.comm: Any = self._MPI.COMM_SELF
        self.port: str | None = None

    def open_port(self) -> str:
        """Rank 0: open the port every newcomer connects to; returns its name."""
        self.port = self._MPI.Open_port()
        return self.port

    def accept(self, port: str) -> int:
        """A member: admit one newcomer (collective over the members). Returns my rank."""
        intercomm = self.comm.Accept(port, root=0)
        self._replace(intercomm.Merge(high=False))
        intercomm.Free()
        return int(self.comm.Get_rank())

    def connect(self, port: str) -> int:
        """The newcomer: join the members behind ``port``. Returns my rank (the last)."""
        intercomm = self._MPI.COMM_SELF.Connect(port, root=0)
        self._replace(intercomm.Merge(high=True))
        intercomm.Free()
        return int(self.comm.Get_rank())

    def finish(self) -> MpiAllReduce:
        """The grown communicator as an ``AllReduce``; rank 0 closes its port."""
        if self.port is not None:
            self._MPI.Close_port(self.port)
            self.port = None
        return MpiAllReduce(self.comm)

    def _replace(self, comm: Any) -> None:
        if self.comm != self._MPI.COMM_SELF:
            self.comm.Free()
        self.comm = comm
