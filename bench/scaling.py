"""Steps per second with 1 and 2 workers on the 784-1024-1024-10 MLP, global batch 512,
with the optimizer update replicated on every rank or sharded (``sharded_update``).

Each configuration is a real job on the embedded Ray (synthetic data, float32,
SGD + momentum). Steps/s is measured by the driver between the end of the first
chunk and the end of the last (start-up and the first chunk excluded). Workers
get one CPU and one BLAS thread each, so ``speedup`` is the data-parallel
scaling; "1 worker x 2 threads" is the single-process alternative on these 2 cores.

    python -m bench.scaling [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.engine import model
from bench.machine import machine_info
from bench.workload import SIZES
from common.data import load_dataset
from common.records import StepRecord
from common.schemas import JobSpec
from worker import cluster
from worker.driver import TrainingHooks, train
from worker.group import GroupOptions


def spec_for(workers: int, cpus: int, allreduce: str, steps: int, sharded: bool = False
             ) -> JobSpec:
    return JobSpec.model_validate({
        "model": model(list(SIZES)).model_dump(),
        "data": {"dataset": "synthetic", "validation_fraction": 0.0,
                 "synthetic": {"samples": 512 * steps, "features": 784, "outputs": 10}},
        "optimizer": {"lr": 0.01, "momentum": 0.9}, "batch_size": 512, "epochs": 1,
        "workers": workers, "cpus_per_worker": cpus, "allreduce": allreduce,
        "steps_per_chunk": 10, "sharded_update": sharded})


def steps_per_second(spec: JobSpec) -> float:
    return measure(spec)[0]


def measure(spec: JobSpec) -> tuple[float, dict[str, float]]:
    """Steps/s, and the median step's split in ms as rank 0 timed it (compute, the
    all-reduce's transfer, waiting for the slower rank, the update; the rest of the
    step is the driver's and Ray's share)."""
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    marks: list[tuple[float, int]] = []
    steps: list[StepRecord] = []

    class Timed(TrainingHooks):
        def records(self, records: list[StepRecord]) -> None:
            marks.append((time.perf_counter(), records[-1].step))
            steps.extend(records)

    train(spec, data, GroupOptions(), Timed())
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    split = {part: statistics.median(getattr(r, part) for r in steps[s0:]) * 1e3
             for part in ("compute", "allreduce", "wait", "update")}
    return (s1 - s0) / (t1 - t0), split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    cluster.connect(num_cpus=2)
    try:
        runs: dict[str, tuple[float, dict[str, float]]] = {
            "1 worker x 1 thread": measure(spec_for(1, 1, "local", args.steps)),
            "2 workers x 1 thread, mpi": measure(spec_for(2, 1, "mpi", args.steps)),
            "2 workers x 1 thread, ray": measure(spec_for(2, 1, "ray", args.steps)),
            "2 workers x 1 thread, mpi, sharded update": measure(
                spec_for(2, 1, "mpi", args.steps, sharded=True)),
            "2 workers x 1 thread, ray, sharded update": measure(
                spec_for(2, 1, "ray", args.steps, sharded=True)),
            "1 worker x 2 threads": measure(spec_for(1, 2, "local", args.steps)),
        }
    finally:
        cluster.disconnect()
    one = runs["1 worker x 1 thread"][0]
    results = [{"name": f"scaling {name}", "project": value, "reference": one,
                "unit": "steps/s", "ratio": value / one,
                "goal": _goal(name),
                "step_split_ms": split}
               for name, (value, split) in runs.items()]
    print(json.dumps({"benchmark": "scaling", "machine": machine_info(), "results": results},
                     indent=2))


def _goal(name: str) -> float | None:
    """At least 1.8x with MPI and 1.5x with gloo (which has no reduce-scatter)."""
    if not name.startswith("2 workers"):
        return None
    return 1.8 if ", mpi" in name else 1.5


if __name__ == "__main__":
    main()
