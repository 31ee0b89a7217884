"""One training step of the engine (forward, backward, SGD update), and numpy's GEMM floor.

Prints JSON: per (net, batch, BLAS threads) the median ms per step, the step's
GFLOP/s, and that rate as a share of numpy's own matmul rate on the SAME GEMM
shapes (the step's 3 forward, 3 weight-gradient and 2 error GEMMs for a 3-layer
net), measured in the same run. For each GEMM of the step: its time inside the step
(each ``np.matmul`` call timed as the step makes it) beside the same call on fresh
operands of the same shapes and layouts alone, and the step's share outside GEMMs.

    python -m bench.engine [--repeat 30]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics
import time
from collections.abc import Callable
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
        in_step, timed_step_s = gemms_in_step(step, repeat)
    return {"net": name, "batch": batch, "threads": threads, "step_ms": step_s * 1e3,
            "gemm_floor_ms": gemm_s * 1e3, "step_gflops": flops / step_s / 1e9,
            "matmul_gflops": flops / gemm_s / 1e9, "share_of_matmul_rate": gemm_s / step_s,
            "gemms": in_step,
            "non_gemm_share": 1 - sum(g["in_step_ms"] for g in in_step) / (timed_step_s * 1e3)}


Layout = tuple[tuple[int, ...], tuple[int, ...], bool, bool]


def gemms_in_step(step: Callable[[], None], repeat: int) -> tuple[list[dict[str, Any]], float]:
    """Every ``np.matmul`` of ``step`` timed where the step makes it, beside the same
    shapes and layouts (C-ordered or transposed views) called alone on fresh operands;
    and the median seconds of those same steps."""
    times: dict[Layout, list[float]] = collections.defaultdict(list)
    matmul = np.matmul

    def timed(a: Any, b: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        result = matmul(a, b, *args, **kwargs)
        times[(a.shape, b.shape, a.flags.c_contiguous, b.flags.c_contiguous)].append(
            time.perf_counter() - began)
        return result

    steps = []
    np.matmul = timed  # the engine calls np.matmul by attribute: the step's own calls
    try:
        for _ in range(repeat):
            began = time.perf_counter()
            step()
            steps.append(time.perf_counter() - began)
    finally:
        np.matmul = matmul
    rng = np.random.default_rng(1)
    rows = []
    for (a_shape, b_shape, a_c, b_c), samples in times.items():
        a = _operand(rng, a_shape, a_c)
        b = _operand(rng, b_shape, b_c)
        out = np.empty((a_shape[0], b_shape[1]), dtype=np.float32)
        alone = median_seconds(lambda a=a, b=b, out=out: matmul(a, b, out=out), repeat=repeat)
        inside = statistics.median(samples)
        flops = 2 * a_shape[0] * a_shape[1] * b_shape[1]
        rows.append({"a": list(a_shape), "b": list(b_shape),
                     "layout": ("N" if a_c else "T") + ("N" if b_c else "T"),
                     "calls_per_step": len(samples) // repeat,
                     "in_step_ms": inside * 1e3 * (len(samples) // repeat),
                     "in_step_gflops": flops / inside / 1e9,
                     "alone_gflops": flops / alone / 1e9})
    return rows, statistics.median(steps)


def _operand(rng: np.random.Generator, shape: tuple[int, ...], c_order: bool) -> Any:
    """A float32 array of ``shape``, C-ordered, or the transpose of a C-ordered one."""
    if c_order:
        return rng.standard_normal(shape, dtype=np.float32)
    return rng.standard_normal(shape[::-1], dtype=np.float32).T


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
