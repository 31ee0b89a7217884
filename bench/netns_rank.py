"""One rank of the cost model's two-node run (``bench.model --nodes``), started by it in
a network namespace of its own: the ranks join through an MPI port over the namespaces'
veth link (UCX over TCP), time raw all-reduces of several sizes, then train the scaling
job with the sharded update. Rank 0 prints JSON.

    python -m bench.netns_rank RANK PORT_FILE STEPS
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.machine import median_seconds
from bench.scaling import spec_for
from common.data import load_dataset
from worker.backends.mpi import MpiAllReduce, MpiPortJoin
from worker.trainer import Trainer

SIZES_MB = (0.004, 0.06, 1.0, 7.5, 30.0)


def join(rank: int, port_file: Path) -> MpiAllReduce:
    joining = MpiPortJoin()
    if rank == 0:
        port = joining.open_port()
        port_file.write_text(port)
        joining.accept(port)
    else:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise TimeoutError("no port from rank 0")
            time.sleep(0.05)
        joining.connect(port_file.read_text())
    return joining.finish()


def main() -> None:
    rank, port_file, steps = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    threadpool_limits(limits=1, user_api="blas")
    comm = join(rank, port_file)
    seconds = {}
    for mb in SIZES_MB:
        buf = np.ones(int(mb * 2**20) // 4, dtype=np.float32)
        comm.allreduce_sum(buf)
        seconds[str(mb)] = median_seconds(lambda buf=buf: comm.allreduce_sum(buf), repeat=20)
    spec = spec_for(2, 1, "mpi", steps, sharded=True)
    trainer = Trainer(spec, load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype), comm)
    trainer.run(5)  # warm
    began = time.perf_counter()
    records = trainer.run(steps - 5).records
    rate = len(records) / (time.perf_counter() - began)
    if rank == 0:
        split = {part: statistics.median(getattr(r, part) for r in records) * 1e3
                 for part in ("compute", "allreduce", "wait", "update")}
        print(json.dumps({"allreduce_s": seconds, "steps_per_s": rate, "step_split_ms": split}))


if __name__ == "__main__":
    main()
