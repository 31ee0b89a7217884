"""Reference: torch DDP with 2 processes (gloo), the end-to-end workload, from spawning
the processes to their end. Prints JSON.

    python -m bench.ddp_e2e X.npy Y.npy
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.torch_train import build_model, train
from bench.workload import WORKERS


def rank_main(rank: int, port: int, x_path: Path, y_path: Path, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORKERS)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build_model())
    loss = train(model, x_path, y_path, rank, WORKERS)
    if rank == 0:
        out.write_text(json.dumps({"final_loss": loss}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("x", type=Path)
    parser.add_argument("y", type=Path)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = args.x.with_name("ddp.json")
    began = time.perf_counter()
    mp.spawn(rank_main, args=(port, args.x, args.y, out), nprocs=WORKERS, join=True)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, **json.loads(out.read_text())}))


if __name__ == "__main__":
    main()
