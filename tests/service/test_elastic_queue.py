"""An elastic job whose ``min`` ranks cannot be placed goes back to the queue with the
reason on its record, waits there as a queued job does, and resumes from the state of
its last chunk when they can: each step once, the weights of an undisturbed run.

The cluster is pretend (an in-process runner whose group factory refuses groups as Ray's
placement would); the real placement waits are tested on Ray in tests/e2e and
tests/cluster."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from common.schemas import JobSpec
from service.config import Settings
from service.runner import InProcessRunner
from tests.helpers import curve_steps, model_params, wait_for, wait_job
from tests.reference import single_process_run
from tests.service.conftest import AppFactory
from worker.errors import PlacementError
from worker.local_group import LocalGroup

SPEC: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "batch_size": 64, "epochs": 2, "seed": 4, "dtype": "float64", "steps_per_chunk": 2,
    "workers": {"min": 2, "max": 2}}


#: Holds a CPU until cancelled.
BLOCKER: dict[str, Any] = {**SPEC, "workers": 1, "epochs": 5000, "name": "blocker"}


class LosingCluster(InProcessRunner):
    """After the job's first group, none of its groups is placed until ``back`` is set
    (the blocker's always are)."""

    def __init__(self, settings: Settings):
        super().__init__(settings, cpus=2)
        self.back = threading.Event()
        self.groups = 0
        self.make_group = self.place  # type: ignore[assignment]

    def place(self, spec: JobSpec, data: Any, options: Any, state: Any) -> Any:
        if spec.name == BLOCKER["name"]:
            return LocalGroup.create(spec, data, options, state)
        self.groups += 1
        if self.groups > 1 and not self.back.is_set():
            raise PlacementError(f"workers: {spec.max_workers} x 1 CPU asked, none free")
        return LocalGroup.create(spec, data, options, state)


def test_an_elastic_job_below_its_min_waits_in_the_queue_and_resumes(
        make_app: AppFactory) -> None:
    runners: list[LosingCluster] = []
    api: TestClient = make_app(fault_injection=True,
                               runner=lambda s: runners.append(LosingCluster(s)) or runners[-1])
    blocker = api.post("/jobs", json=BLOCKER).json()["id"]
    wait_job(api, blocker, {"running"})
    job_id = api.post("/jobs", json=SPEC).json()["id"]
    # Armed while the job is queued behind the blocker, so it cannot pass step 7 first.
    assert api.get(f"/jobs/{job_id}").json()["state"] == "queued"
    assert api.post(f"/jobs/{job_id}/faults", json={"rank": 0, "step": 7}).status_code == 202
    assert api.post(f"/jobs/{blocker}/cancel").status_code == 200

    def waiting() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        return job if job["waiting"] else None

    # It goes back to the queue, is picked again, finds no CPUs again...: waiting, with
    # the reason, until they come back; never failed.
    queued = wait_for(waiting, 30, "the job to wait for its workers")
    assert "waiting for workers.min = 2" in queued["waiting"]
    assert "none free" in queued["waiting"]
    assert queued["state"] in ("queued", "running") and queued["error"] is None
    assert queued["restarts"] == 1 and queued["restart_log"][0]["from_step"] == 6
    wait_for(lambda: runners[0].groups > 4, 30, "more tries to place it")
    assert api.get(f"/jobs/{job_id}").json()["waiting"] == queued["waiting"]

    runners[0].back.set()
    job = wait_job(api, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["waiting"] is None
    params, records = single_process_run(JobSpec.model_validate(SPEC))
    assert curve_steps(api, job_id) == [r.step for r in records]  # none lost or repeated
    assert model_params(api, job_id) == np.asarray(params).tobytes()
