"""The cost of deterministic mode on the 784-1024-1024-10 MLP, global batch 512, float32.

In one run: one training step with the normal float all-reduce and with fixed-point
micro-shards (``micro_shards`` 8 and 2), 1 worker in-process (median of steps, one
BLAS thread) and 2 workers as real jobs on the embedded Ray over MPI (steps/s between
the first chunk's end and the last's). Goal: deterministic at most 1.10x normal.

    python -m bench.deterministic [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from threadpoolctl import threadpool_limits

from bench.machine import machine_info
from bench.scaling import spec_for, steps_per_second
from common.collective import LocalAllReduce
from common.data import load_dataset
from common.schemas import JobSpec
from worker import cluster
from worker.trainer import Trainer


def in_process_step_ms(spec: JobSpec, steps: int) -> float:
    trainer = Trainer(spec, load_dataset(spec.data, seed=spec.seed), LocalAllReduce())
    trainer.run(3)  # warm up
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        trainer.run(1)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    base = spec_for(1, 1, "local", args.steps + 5)
    results: list[dict[str, Any]] = []
    with threadpool_limits(limits=1, user_api="blas"):
        normal = in_process_step_ms(base, args.steps)
        for micro in (8, 2):
            exact = in_process_step_ms(base.model_copy(update={
                "deterministic": True, "micro_shards": micro}), args.steps)
            results.append({"name": f"deterministic step, 1 worker, micro_shards={micro}",
                            "project": exact, "reference": normal, "unit": "ms",
                            "ratio": exact / normal, "goal": 1.10,
                            "reference_is": "normal mode, same process"})
    cluster.connect(num_cpus=2)
    try:
        two = spec_for(2, 1, "mpi", args.steps * 2)
        normal_rate = steps_per_second(two)
        exact_rate = steps_per_second(two.model_copy(update={"deterministic": True}))
    finally:
        cluster.disconnect()
    results.append({"name": "deterministic steps/s, 2 workers over MPI, micro_shards=8",
                    "project": exact_rate, "reference": normal_rate, "unit": "steps/s",
                    "ratio": normal_rate / exact_rate, "goal": 1.10,
                    "reference_is": "normal mode (ratio = normal/deterministic speed)"})
    print(json.dumps({"benchmark": "deterministic", "machine": machine_info(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
