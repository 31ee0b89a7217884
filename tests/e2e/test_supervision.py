"""The service's embedded Ray, killed under a running job as the kernel's OOM killer might
(SIGKILL of its raylet): ``/healthz`` says so, the job goes back to the queue with the
state of its last chunk, the service starts Ray again by itself, and the job ends as an
undisturbed twin does, bit for bit. A job submitted during the outage is queued, not
refused for want of CPUs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.helpers import curve_steps, model_params, wait_for, wait_job
from tests.processes import process_exists

pytestmark = pytest.mark.slow

server = service_fixture("supervised", ray_num_cpus=2)

# About 6 s on 2 MPI workers: long enough to be killed in the middle.
SPEC = {"name": "supervised", "workers": 2, "allreduce": "mpi", "batch_size": 128,
        "max_steps": 1200, "epochs": 1000, "steps_per_chunk": 10, "seed": 5,
        "model": {"input_dim": 64, "layers": [{"units": 256, "activation": "relu"},
                                              {"units": 10, "activation": "softmax"}]},
        "optimizer": {"lr": 0.05, "momentum": 0.9}}


def raylet_pid(server: Server) -> int:
    """The embedded Ray's raylet, among the service's processes."""
    for pid in server.ray_processes():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                return pid
        except OSError:
            continue
    raise AssertionError("the service's embedded Ray has no raylet")


def health(server: Server) -> tuple[int, dict[str, object]]:
    response = server.http.get("/healthz")
    return response.status_code, response.json()


def test_a_killed_raylet_is_restarted_and_the_job_resumes_bit_for_bit(server: Server) -> None:
    reference = server.http.post("/jobs", json=SPEC).json()["id"]
    assert wait_job(server.http, reference)["state"] == "succeeded"

    job_id = server.http.post("/jobs", json=SPEC).json()["id"]
    wait_for(lambda: server.http.get(f"/jobs/{job_id}").json()["step"] >= 300, 60,
             "the job to be well under way")
    old_instance = set(server.ray_processes())
    os.kill(raylet_pid(server), signal.SIGKILL)

    _, body = wait_for(lambda: (h := health(server))[0] == 503 and h, 30,
                       "/healthz to report the lost Ray")
    assert body["status"] == "degraded" and "raylet" in str(body["problem"]), body
    during = server.http.post("/jobs", json={**SPEC, "name": "during", "max_steps": 50})
    assert during.status_code == 201, during.text  # queued, not "the cluster has 0 CPUs"

    wait_for(lambda: health(server)[0] == 200, 120, "/healthz to be ok again")
    job = wait_job(server.http, job_id, timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    assert job["restarts"] == 0  # requeued and resumed, not a failed group's restart
    assert model_params(server.http, job_id) == model_params(server.http, reference)
    # each step once: none lost with the dead group, none repeated after the resume
    assert curve_steps(server.http, job_id) == list(range(1, SPEC["max_steps"] + 1))

    assert wait_job(server.http, during.json()["id"])["state"] == "succeeded"
    # Nothing of the killed instance is left: its head, its workers, its warm processes.
    time.sleep(1.0)
    left = sorted(pid for pid in old_instance if process_exists(pid))
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left]
