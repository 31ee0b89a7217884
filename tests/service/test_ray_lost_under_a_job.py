"""A job whose driver fails because Ray died under it is interrupted, not failed, even
when its error comes before the supervisor has looked: it goes back to the queue, waits
for Ray to be started again, and ends as an undisturbed run does.

The lost Ray is pretend (an in-process runner whose ``problem`` reports it and whose
driver raises the socket error a dead raylet causes): that race is what a real SIGKILLed
raylet produces only some of the time. tests/e2e/test_supervision.py kills a real one."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from common.checkpoint import TrainingState
from common.schemas import JobSpec
from service.config import Settings
from service.runner import InProcessRunner, TrainingHooks, TrainingResult
from tests.helpers import curve_steps, model_params, wait_job
from tests.service.conftest import AppFactory

SPEC: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "batch_size": 64, "epochs": 2, "seed": 4, "dtype": "float64", "steps_per_chunk": 2}


class RayDiesOnce(InProcessRunner):
    """The first job's driver finds Ray gone (``ray_dies``) or Ray well (``not ray_dies``)
    and raises the same socket error; the supervisor's restart brings Ray back."""

    def __init__(self, settings: Settings, ray_dies: bool, passing: bool = False):
        super().__init__(settings, cpus=2)
        self.ray_dies, self.lost, self.calls, self.recovered = ray_dies, None, 0, 0
        self.passing = passing  # the problem is seen once only: it passed by itself

    def problem(self) -> str | None:
        lost = self.lost
        if self.passing:
            self.lost = None
        return lost

    def recover(self) -> None:
        self.lost = None
        self.recovered += 1

    def run_job(self, spec: JobSpec, hooks: TrainingHooks,
                resume: TrainingState | None = None) -> TrainingResult:
        self.calls += 1
        if self.calls == 1:
            if self.ray_dies:
                self.lost = "the embedded Ray lost its raylet process (killed or crashed)"
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().run_job(spec, hooks, resume)


def app_with(make_app: AppFactory, ray_dies: bool, passing: bool = False
             ) -> tuple[TestClient, RayDiesOnce]:
    runners: list[RayDiesOnce] = []
    api = make_app(supervise_interval_s=0.2, runner=lambda s: runners.append(
        RayDiesOnce(s, ray_dies, passing)) or runners[-1])
    return api, runners[0]


def test_a_job_whose_driver_fails_as_ray_dies_is_requeued_and_resumes(
        make_app: AppFactory) -> None:
    api, runner = app_with(make_app, ray_dies=True)
    job_id = api.post("/jobs", json=SPEC).json()["id"]
    job = wait_job(api, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert runner.calls == 2 and runner.recovered == 1  # requeued, run again after the restart
    assert job["restarts"] == 0 and job["error"] is None
    assert curve_steps(api, job_id) == list(range(1, job["total_steps"] + 1))
    twin = api.post("/jobs", json=SPEC).json()["id"]
    assert wait_job(api, twin)["state"] == "succeeded"
    assert model_params(api, job_id) == model_params(api, twin)


def test_the_same_error_with_ray_well_fails_the_job(make_app: AppFactory) -> None:
    api, runner = app_with(make_app, ray_dies=False)
    job_id = api.post("/jobs", json=SPEC).json()["id"]
    job = wait_job(api, job_id)
    assert job["state"] == "failed" and "Connection reset by peer" in job["error"]
    assert runner.calls == 1 and runner.recovered == 0


def test_a_problem_that_passes_before_the_supervisor_looks_holds_the_queue_no_longer(
        make_app: AppFactory) -> None:
    """The job saw Ray fail and nothing started while it was out; the supervisor then
    finds Ray well, without a restart, and the queue goes on."""
    api, runner = app_with(make_app, ray_dies=True, passing=True)
    job_id = api.post("/jobs", json=SPEC).json()["id"]
    job = wait_job(api, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert runner.calls == 2 and runner.recovered == 0
