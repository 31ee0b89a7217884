"""An elastic job on the embedded Ray: it starts on the one CPU another job leaves it,
grows to two workers when that job ends, and its weights are those of a fixed 2-worker
run of the same spec, bit for bit (deterministic mode: any world size computes the same
sums, so a resize changes nothing)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.e2e.test_dashboard import open_page
from tests.helpers import collect_events, curve_steps, model_params, wait_for, wait_job

pytestmark = pytest.mark.slow

server = service_fixture("elastic", ray_num_cpus=2)

# About 20 ms a step on one worker: 1,500 steps outlast the blocker's cancel and the resize.
ELASTIC = {"name": "elastic", "workers": {"min": 1, "max": 2}, "deterministic": True,
           "micro_shards": 4, "allreduce": "mpi", "batch_size": 128, "max_steps": 1500,
           "epochs": 1000, "steps_per_chunk": 20, "seed": 3,
           "model": {"input_dim": 64, "layers": [{"units": 256, "activation": "relu"},
                                                 {"units": 10, "activation": "softmax"}]},
           "optimizer": {"lr": 0.05, "momentum": 0.9}}
BLOCKER = {"name": "blocker", "workers": 1, "allreduce": "local", "epochs": 10_000}


def workers_gauge(server: Server, job_id: str) -> float | None:
    """``syncsgd_job_workers{job=...}`` in ``/metrics`` now (None: not exported)."""
    text = server.http.get("/metrics").text
    match = re.search(rf'^syncsgd_job_workers{{job="{job_id}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else None


def running_at(server: Server, job_id: str, size: int) -> dict[str, Any] | None:
    job: dict[str, Any] = server.http.get(f"/jobs/{job_id}").json()
    return job if job["world_size"] == size and job["step"] > 0 else None


def test_an_elastic_job_starts_on_what_is_free_grows_and_keeps_its_bits(server: Server) -> None:
    blocker = server.http.post("/jobs", json=BLOCKER).json()["id"]
    wait_for(lambda: running_at(server, blocker, 1), 60, "the blocker to train")
    elastic = server.http.post("/jobs", json=ELASTIC).json()["id"]

    # At once, on the one free CPU: it does not wait for two.
    wait_for(lambda: running_at(server, elastic, 1), 60, "the elastic job on 1 worker")
    assert server.http.get(f"/jobs/{blocker}").json()["state"] == "running"
    assert workers_gauge(server, elastic) == 1.0

    server.http.post(f"/jobs/{blocker}/cancel")
    grown = wait_for(lambda: running_at(server, elastic, 2), 60, "the elastic job to grow")
    assert grown["step"] < ELASTIC["max_steps"], "grew too late to show it running"
    assert workers_gauge(server, elastic) == 2.0
    assert len(grown["ranks"]) == 2

    job = wait_job(server.http, elastic, timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    (resize,) = job["resize_log"]
    assert (resize["from_workers"], resize["to_workers"]) == (1, 2)
    assert resize["cause"] == "CPUs came free"
    assert 0 < resize["step"] < ELASTIC["max_steps"] and resize["step"] % 20 == 0
    assert job["restarts"] == 0

    # Every step once, and the stream tells the resize where it happened.
    assert curve_steps(server.http, elastic) == list(range(1, ELASTIC["max_steps"] + 1))
    events = collect_events(server.http, elastic)
    resizes = [data for _, kind, data in events if kind == "resize"]
    assert resizes == job["resize_log"]

    # The reference: the same spec on a fixed 2 workers, undisturbed.
    fixed = server.http.post("/jobs", json={**ELASTIC, "workers": 2}).json()["id"]
    reference = wait_job(server.http, fixed, timeout_s=180)
    assert reference["state"] == "succeeded", reference["error"]
    assert reference["resize_log"] == [] and reference["world_size"] == 2
    assert (hashlib.sha256(model_params(server.http, elastic)).hexdigest()
            == hashlib.sha256(model_params(server.http, fixed)).hexdigest())

    # The dashboard draws the world size over the steps: 1, then 2 from the resize on.
    with open_page(server.url) as page:
        page.click(f"tr[data-job='{elastic}']")
        page.wait_for_function("document.getElementById('workers-chart').data?.[0]?.y.length >= 3")
        x = page.evaluate("document.getElementById('workers-chart').data[0].x")
        y = page.evaluate("document.getElementById('workers-chart').data[0].y")
    assert y == [1, 2, 2] and x == [0, resize["step"], ELASTIC["max_steps"]]
