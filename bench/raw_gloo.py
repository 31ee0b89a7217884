"""Reference: raw ``torch.distributed`` gloo all_reduce, 2 processes. Prints JSON.

    python -m bench.raw_gloo 1 16 64
"""

from __future__ import annotations

import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.machine import median_seconds

WORLD = 2


def worker(rank: int, port: int, sizes_mb: list[float], queue: mp.Queue[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    out = {}
    for mb in sizes_mb:
        tensor = torch.ones(int(mb * 2**20) // 4, dtype=torch.float32)
        dist.barrier()
        out[str(mb)] = median_seconds(lambda t=tensor: dist.all_reduce(t),
                                      repeat=50 if mb <= 16 else 20)
    if rank == 0:
        queue.put(json.dumps(out))
    dist.destroy_process_group()


def main() -> None:
    sizes_mb = [float(a) for a in sys.argv[1:]] or [1.0, 16.0, 64.0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, port, sizes_mb, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    result = queue.get(timeout=600)
    for p in procs:
        p.join()
    print(result)


if __name__ == "__main__":
    main()
