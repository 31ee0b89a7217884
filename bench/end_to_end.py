"""End to end: the workload of ``bench/workload.py`` as a job submitted over HTTP to a
service (embedded Ray, 2 CPUs), timed from the POST to the end of its event stream
(``succeeded``). Beside it, in the same run: Ray Train's TorchTrainer (from ``fit()`` to
its return) and torch DDP with 2 processes (from spawn to join).

Each side starts where a user's job would: the references with Ray running (Ray
Train) and the data in .npy files; the project with its service running (a fresh one
per run, given ``--gap`` seconds to start its warm worker processes) and the same rows
uploaded as a dataset before the clock starts. The job trains on exactly the
references' float32 rows (``standardize`` off: they are the already standardized
features). Goals: at most 1/3 of Ray Train's wall time, and 1/1.6 of torch DDP's.
Medians of ``--repeat`` interleaved runs. Prints JSON.

    python -m bench.end_to_end [--repeat 3] [--gap 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from bench.workload import job_spec, save_arrays
from service.local import local_service


def project_run(arrays: Path, gap: float) -> dict[str, Any]:
    """One job on a fresh service, the data uploaded (``arrays``: an .npz of x and y) and
    ``gap`` seconds given to the warm pool before the clock starts."""
    with local_service("bench", cpus=2) as client:
        dataset = client.upload_dataset(arrays, name="end-to-end", format="npz", wait=True)
        time.sleep(gap)
        spec = job_spec()
        spec["data"] = {"dataset": dataset.id, "validation_fraction": 0.0,
                        "standardize": False}
        began = time.perf_counter()
        job = client.submit(spec)
        for _ in client.follow(job.id):
            pass  # the stream ends when the job does
        seconds = time.perf_counter() - began
        done = client.job(job.id)
    assert done.state == "succeeded" and done.timing is not None, done.error
    return {"seconds": seconds, "final_loss": done.loss, "steps": done.step,
            "timing_per_step": done.timing.model_dump(), "startup": done.startup}


def reference_run(module: str, x: Path, y: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", module, str(x), str(y)], capture_output=True,
                          text=True, timeout=3600, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: float(run["seconds"]))[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians")
    parser.add_argument("--gap", type=float, default=3.0,
                        help="seconds between the service's start and the job")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"project": [], "ray_train": [], "ddp": []}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        x, y = save_arrays(Path(tmp))
        arrays = Path(tmp) / "arrays.npz"
        np.savez(arrays, x=np.load(x), y=np.load(y))
        for _ in range(args.repeat):  # interleaved: a noisy spell hits all three alike
            runs["project"].append(project_run(arrays, args.gap))
            runs["ray_train"].append(reference_run("bench.raytrain_e2e", x, y))
            runs["ddp"].append(reference_run("bench.ddp_e2e", x, y))
    project, ray_train, ddp = (median_run(runs[k]) for k in ("project", "ray_train", "ddp"))
    name = "end to end: 2 workers, 3 epochs of 60,000 x 784, batch 512"
    # where the job's time went: its steps (the per-step split's sum) and its start
    job = {"steps": project["steps"], "step_ms": 1e3 * sum(project["timing_per_step"].values()),
           "startup_s": sum(project["startup"].values())}
    results = [
        {"name": f"{name}, vs Ray Train", "project": project["seconds"],
         "reference": ray_train["seconds"], "unit": "s",
         "ratio": ray_train["seconds"] / project["seconds"], "goal": 3.0,
         "reference_is": "Ray Train TorchTrainer, fit() to return", "job": job},
        {"name": f"{name}, vs torch DDP", "project": project["seconds"],
         "reference": ddp["seconds"], "unit": "s", "ratio": ddp["seconds"] / project["seconds"],
         "goal": 1.6, "reference_is": "torch DDP, 2 processes, spawn to join", "job": job},
    ]
    print(json.dumps({"benchmark": "end_to_end", "machine": machine_info(), "results": results,
                      "final_loss": {"project": project["final_loss"],
                                     "ray_train": ray_train["final_loss"],
                                     "ddp": ddp["final_loss"]},
                      "seconds": {k: [run["seconds"] for run in v] for k, v in runs.items()},
                      "project_timing_per_step": project["timing_per_step"],
                      "project_startup_s": project["startup"]}, indent=2))


if __name__ == "__main__":
    main()
