"""The project's all-reduce of a gradient-sized buffer, against the raw libraries.

In one run: the project's ``mpi`` backend (2 Ray actors joined through MPI
ports, ``MpiAllReduce``) and ``ray`` backend (``GlooAllReduce`` over
``ray.util.collective``), raw mpi4py under ``mpiexec`` and raw
``torch.distributed`` gloo. Median seconds per all-reduce of 1, 16 and 64 MB of
float32; ratio = reference time / project time (>= 0.95 means within 5% of the
reference bandwidth).

    python -m bench.allreduce
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info, median_seconds

SIZES_MB = [1.0, 16.0, 64.0]


class AllReduceProbe:
    """A Ray actor holding one rank of a project backend, timing ``allreduce_sum``."""

    def __init__(self, rank: int, world: int):
        from threadpoolctl import threadpool_limits

        self._limit = threadpool_limits(1)
        self.rank, self.world = rank, world
        self.comm: Any = None
        self.join: Any = None

    def mpi_open(self) -> str:
        from worker.backends.mpi import MpiPortJoin

        self.join = MpiPortJoin()
        return str(self.join.open_port())

    def mpi_accept(self, port: str) -> None:
        self.join.accept(port)
        self.comm = self.join.finish()

    def mpi_connect(self, port: str) -> None:
        from worker.backends.mpi import MpiPortJoin

        self.join = MpiPortJoin()
        self.join.connect(port)
        self.comm = self.join.finish()

    def gloo(self, name: str) -> None:
        from worker.backends.ray_collective import GlooAllReduce

        self.comm = GlooAllReduce(self.world, self.rank, name)

    def time(self, mb: float) -> float:
        buf = np.ones(int(mb * 2**20) // 4, dtype=np.float32)
        self.comm.allreduce_sum(buf)
        return median_seconds(lambda: self.comm.allreduce_sum(buf), repeat=50 if mb <= 16 else 20)


def project_times(backend: str) -> dict[str, float]:
    import ray

    probe = ray.remote(num_cpus=1)(AllReduceProbe)
    actors = [probe.remote(r, 2) for r in range(2)]  # type: ignore[attr-defined]
    try:
        if backend == "mpi":
            port = ray.get(actors[0].mpi_open.remote())
            ray.get([actors[0].mpi_accept.remote(port), actors[1].mpi_connect.remote(port)],
                    timeout=60)
        else:
            ray.get([a.gloo.remote(f"bench-{backend}") for a in actors], timeout=60)
        out = {}
        for mb in SIZES_MB:
            out[str(mb)] = max(ray.get([a.time.remote(mb) for a in actors], timeout=600))
        return out
    finally:
        for actor in actors:
            ray.kill(actor)


def reference_times(command: list[str]) -> dict[str, float]:
    done = subprocess.run(command + [str(mb) for mb in SIZES_MB], capture_output=True,
                          text=True, timeout=900, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from worker import cluster

    python = sys.executable
    mpiexec = str(Path(python).with_name("mpiexec"))
    raw_mpi = reference_times([mpiexec, "-n", "2", python, "-m", "bench.raw_mpi"])
    raw_gloo = reference_times([python, "-m", "bench.raw_gloo"])
    cluster.connect(num_cpus=2)
    try:
        mpi, gloo = project_times("mpi"), project_times("ray")
    finally:
        cluster.disconnect()
    results = []
    for mb in map(str, SIZES_MB):
        results.append({"name": f"allreduce {mb} MB, mpi", "project": mpi[mb],
                        "reference": raw_mpi[mb], "unit": "s", "ratio": raw_mpi[mb] / mpi[mb],
                        "goal": 0.95, "reference_is": "raw mpi4py under mpiexec"})
        results.append({"name": f"allreduce {mb} MB, ray (gloo)", "project": gloo[mb],
                        "reference": raw_gloo[mb], "unit": "s",
                        "ratio": raw_gloo[mb] / gloo[mb], "goal": 0.95,
                        "reference_is": "raw torch.distributed gloo"})
    print(json.dumps({"benchmark": "allreduce", "machine": machine_info(), "world_size": 2,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
