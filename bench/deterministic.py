"""The cost of deterministic mode on the 784-1024-1024-10 MLP, global batch 512, float32.

In one run: one training step with the normal float all-reduce and with fixed-point
micro-shards (``micro_shards`` 2, 4 (the default) and 8), 1 worker in-process (one
BLAS thread), and 2 workers as real jobs on the embedded Ray over MPI (steps/s
between the first chunk's end and the last's). The configurations take turns,
``--rounds`` times, so a slow spell of this shared machine hits them all alike;
the figures are medians. Goal: deterministic at most 1.10x normal.

    python -m bench.deterministic [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from threadpoolctl import threadpool_limits

from bench.machine import machine_info
from bench.scaling import measure, spec_for
from common.collective import LocalAllReduce
from common.data import load_dataset
from common.schemas import JobSpec
from worker import cluster
from worker.trainer import Trainer

MICRO_SHARDS = (2, 4, 8)


def step_times_ms(trainer: Trainer, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        trainer.run(1)
        times.append((time.perf_counter() - began) * 1e3)
    return times


def in_process(base: JobSpec, steps: int, rounds: int) -> dict[str, float]:
    """Median step time (ms) of each configuration, measured in turns."""
    specs = {"normal": base} | {
        f"micro_shards={m}": base.model_copy(update={"deterministic": True, "micro_shards": m})
        for m in MICRO_SHARDS}
    data = load_dataset(base.data, seed=base.seed)
    trainers = {name: Trainer(spec, data, LocalAllReduce()) for name, spec in specs.items()}
    times: dict[str, list[float]] = {name: [] for name in specs}
    for trainer in trainers.values():
        trainer.run(2)  # warm up
    for _ in range(rounds):
        for name, trainer in trainers.items():
            times[name] += step_times_ms(trainer, steps)
    return {name: statistics.median(t) for name, t in times.items()}


def two_workers(steps: int, rounds: int) -> dict[str, tuple[float, dict[str, float]]]:
    """2 workers over MPI, normal and deterministic in turns: the median steps/s, and
    the step split (ms) of the last run of each."""
    normal = spec_for(2, 1, "mpi", steps)
    specs = {"normal": normal, "deterministic": normal.model_copy(update={"deterministic": True})}
    runs: dict[str, list[tuple[float, dict[str, float]]]] = {name: [] for name in specs}
    for _ in range(max(1, rounds // 2)):
        for name, spec in specs.items():
            runs[name].append(measure(spec))
    return {name: (statistics.median(rate for rate, _ in r), r[-1][1])
            for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = spec_for(1, 1, "local", args.steps * args.rounds + 5)
    results: list[dict[str, Any]] = []
    with threadpool_limits(limits=1, user_api="blas"):
        ms = in_process(base, args.steps, args.rounds)
    for m in MICRO_SHARDS:
        exact = ms[f"micro_shards={m}"]
        results.append({"name": f"deterministic step, 1 worker, micro_shards={m}",
                        "project": exact, "reference": ms["normal"], "unit": "ms",
                        "ratio": exact / ms["normal"], "goal": 1.10,
                        "reference_is": "normal mode, same process, in turns"})
    cluster.connect(num_cpus=2)
    try:
        two = two_workers(args.steps * 2, args.rounds)
    finally:
        cluster.disconnect()
    (normal_rate, normal_split), (exact_rate, exact_split) = two["normal"], two["deterministic"]
    results.append({"name": "deterministic steps/s, 2 workers over MPI, micro_shards=4",
                    "project": exact_rate, "reference": normal_rate, "unit": "steps/s",
                    "ratio": normal_rate / exact_rate, "goal": 1.10,
                    "reference_is": "normal mode (ratio = normal/deterministic speed)",
                    "split_ms": {"deterministic": exact_split, "normal": normal_split}})
    print(json.dumps({"benchmark": "deterministic", "machine": machine_info(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
