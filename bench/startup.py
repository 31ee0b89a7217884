"""From ``POST /jobs`` to the job's first step, on a warm service (embedded Ray, 2 CPUs):
the digits MLP with 2 workers. The client times the POST until the first point is
readable; the service reports where the time went (``startup`` on the job record:
queue, data, placement, actors, join, data and broadcast on the ranks, first step).
The first job warms the service up and is not counted; each job is submitted after
``--gap`` seconds idle (the service makes up its warm worker processes when a job
ends). Medians of ``--repeat`` jobs for each all-reduce. Goal: at most 0.5 s with MPI.
Prints JSON.

    python -m bench.startup [--repeat 5] [--gap 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench.machine import machine_info
from service.local import LocalClient, local_service

SPEC: dict[str, Any] = {"name": "startup", "workers": 2, "epochs": 1, "max_steps": 3}
BUDGET_S = 0.5


def first_step(client: LocalClient, allreduce: str) -> tuple[float, dict[str, float]]:
    """Seconds from the POST to a readable first point, and the service's split."""
    began = time.perf_counter()
    job = client.submit({**SPEC, "allreduce": allreduce})
    while not client.curve(job.id):
        time.sleep(0.005)
    seconds = time.perf_counter() - began
    record = client.wait(job.id, poll_s=0.05)
    assert record.state == "succeeded" and record.startup is not None, record.error
    return seconds, record.startup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gap", type=float, default=3.0, help="idle seconds before a job")
    args = parser.parse_args()
    results = []
    with local_service("bench-startup", cpus=2) as client:
        first_step(client, "mpi")  # warm-up: Ray's first workers, imports, the dataset
        for allreduce in ("mpi", "ray"):
            runs = []
            for _ in range(args.repeat):
                time.sleep(args.gap)
                runs.append(first_step(client, allreduce))
            seconds = statistics.median(s for s, _ in runs)
            split = {phase: statistics.median(r[phase] for _, r in runs) for phase in runs[0][1]}
            results.append({
                "name": f"POST /jobs to the first step, digits, 2 workers, {allreduce}",
                "project": seconds, "reference": BUDGET_S, "unit": "s",
                "reference_is": "the goal's budget", "ratio": BUDGET_S / seconds,
                "goal": 1.0 if allreduce == "mpi" else None, "split_s": split,
                "runs_s": [s for s, _ in runs]})
    print(json.dumps({"benchmark": "startup", "machine": machine_info(), "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
