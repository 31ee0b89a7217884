"""Reference: raw mpi4py ``Allreduce`` (in place) under mpiexec. Rank 0 prints JSON.

    mpiexec -n 2 python -m bench.raw_mpi 1 16 64
"""

from __future__ import annotations

import json
import sys

import numpy as np
from mpi4py import MPI

from bench.machine import median_seconds


def main() -> None:
    comm = MPI.COMM_WORLD
    sizes_mb = [float(a) for a in sys.argv[1:]] or [1.0, 16.0, 64.0]
    out = {}
    for mb in sizes_mb:
        buf = np.ones(int(mb * 2**20) // 4, dtype=np.float32)
        repeat = 50 if mb <= 16 else 20

        def once(buf: np.ndarray = buf) -> None:
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

        comm.Barrier()
        out[str(mb)] = median_seconds(once, repeat=repeat)
    if comm.rank == 0:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
