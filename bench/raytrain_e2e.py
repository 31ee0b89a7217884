"""Reference: Ray Train's TorchTrainer, 2 gloo workers with one CPU each, the end-to-end
workload, from ``fit()`` to its return, on its own embedded Ray. Prints JSON.

    python -m bench.raytrain_e2e X.npy Y.npy
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from bench.torch_train import build_model, train
from bench.workload import WORKERS


def train_loop(config: dict[str, Any]) -> float:
    import torch

    torch.manual_seed(0)
    context = ray.train.get_context()
    model = ray.train.torch.prepare_model(build_model())
    loss = train(model, Path(config["x"]), Path(config["y"]), context.get_world_rank(),
                 context.get_world_size())
    return loss  # Ray Train (v2) hands rank 0's return value to fit()'s caller


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("x", type=Path)
    parser.add_argument("y", type=Path)
    args = parser.parse_args()
    ray.init(address="local", num_cpus=WORKERS, include_dashboard=False,
             log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="raytrain-") as storage:
            trainer = TorchTrainer(
                train_loop, train_loop_config={"x": str(args.x), "y": str(args.y)},
                scaling_config=ScalingConfig(num_workers=WORKERS, use_gpu=False,
                                             resources_per_worker={"CPU": 1}),
                run_config=RunConfig(storage_path=storage, name="e2e"))
            began = time.perf_counter()
            result = trainer.fit()
            seconds = time.perf_counter() - began
    finally:
        ray.shutdown()
    if result.error is not None:
        raise result.error
    print(json.dumps({"seconds": seconds, "final_loss": result.return_value}))


if __name__ == "__main__":
    main()
