"""Uploads and load against a real service: an uploaded file read by real workers, and 50
jobs from 10 concurrent clients. Schema-driven fuzzing is tests/e2e/test_fuzzing.py."""

from __future__ import annotations

import json
import threading

import httpx
import numpy as np
import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.helpers import four_class_csv, npz, run_job, wait_for

pytestmark = pytest.mark.slow


#: 4 CPUs and small limits: fuzzed job specs that pass validation stay tiny.
server = service_fixture("fuzz", ray_num_cpus=4, max_concurrent_jobs=4,
                         datasets_quota_bytes=20_000_000, max_epoch_samples=20_000,
                         max_parameters=50_000, max_workers_per_job=2)


def upload(server: Server, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{server.url}/datasets", content=body,
                      params={"name": "test", **params}, timeout=30)


def test_an_uploaded_csv_trains_on_two_mpi_workers(server: Server) -> None:
    """The upload's file on disk, read by real worker processes (the API's checks of
    uploads run in process: tests/service/test_api.py)."""
    created = upload(server, four_class_csv(), format="csv", wait="true")
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert (server.data_dir / "datasets" / dataset["id"] / "x.npy").is_file()
    spec = {"model": {"input_dim": 5, "layers": [{"units": 16, "activation": "tanh"},
                                                 {"units": 4, "activation": "softmax"}]},
            "data": {"dataset": dataset["id"]}, "optimizer": {"lr": 0.2, "momentum": 0.9},
            "epochs": 30, "batch_size": 32, "workers": 2, "allreduce": "mpi"}
    job = run_job(server.http, spec)
    assert job["state"] == "succeeded", job["error"]
    assert job["val_accuracy"] > 0.85 and len(job["ranks"]) == 2

    rng = np.random.default_rng(0)
    regression = npz(x=rng.standard_normal((50, 3)), y=rng.standard_normal((50, 2)))
    created = upload(server, regression, format="npz", task="regression", wait="true")
    assert created.status_code == 201 and created.json()["classes"] is None
    assert created.json()["outputs"] == 2


def test_fifty_jobs_from_ten_concurrent_clients_all_succeed(server: Server) -> None:
    spec = {"model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                                  {"units": 10, "activation": "softmax"}]},
            "epochs": 2, "workers": 1, "allreduce": "local"}
    submitted: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(5):
                response = http.post("/jobs", json={**spec, "name": f"load-{number}-{i}",
                                                     "seed": number * 5 + i})
                with lock:
                    if response.status_code == 201:
                        submitted.append(response.json()["id"])
                    else:
                        errors.append(response.text)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(submitted) == len(set(submitted)) == 50

    def states() -> list[str]:
        return [httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] for job_id in submitted]

    wait_for(lambda: all(s in ("succeeded", "failed", "cancelled") for s in states()), 300,
             "all 50 jobs to end", 1.0)
    assert states() == ["succeeded"] * 50
    listed = httpx.get(f"{server.url}/jobs", params={"limit": 500}).json()["items"]
    load_jobs = [j for j in listed if j["name"].startswith("load-")]
    assert sorted(j["id"] for j in load_jobs) == sorted(submitted)  # none lost, none doubled
    assert {j["name"] for j in load_jobs} == {f"load-{n}-{i}" for n in range(10)
                                               for i in range(5)}
    assert all(j["step"] == j["total_steps"] == 46 for j in load_jobs)
    json.dumps(load_jobs)  # every record serialises
