"""One training step of the engine (forward, backward, SGD update), and numpy's GEMM floor.

Prints JSON: per (net, batch, BLAS threads) the median ms per step, the step's
GFLOP/s, and that rate as a share of numpy's own matmul rate on the SAME GEMM
shapes (the step's 3 forward, 3 weight-gradient and 2 error GEMMs for a 3-layer
net), measured in the same run.

    python -m bench.engine [--repeat 30]
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.machine import machine_info, median_seconds
from common.nn import Network, make_optimizer
from common.schemas import ModelSpec, OptimizerSpec

CASES = [("784-1024-1024-10", [784, 1024, 1024, 10], 512),
         ("64-128-10", [64, 128, 10], 64)]


def model(sizes: list[int]) -> ModelSpec:
    layers = [{"units": u, "activation": "relu"} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    return ModelSpec.model_validate({"input_dim": sizes[0], "layers": layers})


def step_gemms(sizes: list[int], batch: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (A shape, B shape) of every GEMM in one training step."""
    gemms = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        gemms.append(((batch, fan_in), (fan_in, fan_out)))  # forward: x W
        gemms.append(((fan_in, batch), (batch, fan_out)))  # dW = x^T delta
        if i > 0:
            gemms.append(((batch, fan_out), (fan_out, fan_in)))  # delta W^T
    return gemms


def measure(name: str, sizes: list[int], batch: int, threads: int, repeat: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    net = Network.from_spec(model(sizes), dtype="float32")
    opt = make_optimizer(OptimizerSpec(lr=0.01, momentum=0.9), net.num_parameters, net.dtype)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)

    def step() -> None:
        net.compute_gradients(x, y)
        opt.step(net.params, net.grads, 0.01)

    gemms = step_gemms(sizes, batch)
    operands = [(rng.standard_normal(a, dtype=np.float32), rng.standard_normal(b, dtype=np.float32),
                 np.empty((a[0], b[1]), dtype=np.float32)) for a, b in gemms]

    def gemms_only() -> None:
        for a, b, out in operands:
            np.matmul(a, b, out=out)

    flops = sum(2 * a[0] * a[1] * b[1] for a, b in gemms)
    with threadpool_limits(limits=threads, user_api="blas"):
        step_s = median_seconds(step, repeat=repeat)
        gemm_s = median_seconds(gemms_only, repeat=repeat)
    return {"net": name, "batch": batch, "threads": threads, "step_ms": step_s * 1e3,
            "gemm_floor_ms": gemm_s * 1e3, "step_gflops": flops / step_s / 1e9,
            "matmul_gflops": flops / gemm_s / 1e9, "share_of_matmul_rate": gemm_s / step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    results = [measure(name, sizes, batch, threads, args.repeat)
               for name, sizes, batch in CASES for threads in (1, 2)]
    print(json.dumps({"benchmark": "engine", "machine": machine_info(), "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
