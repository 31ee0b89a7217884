"""The service under things that go wrong, in process: a store that fails, a service that
keeps dying under a job, a second service on the same data dir, settings that would open
it to everyone, specs that would exhaust a worker. Real SQLite files; the failing store is
a subclass that raises the errors SQLite raises (say so: a real full disk cannot be made
here without root-only loop mounts)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from common.records import StepRecord
from common.schemas import JobSpec, JobState
from service import main
from service.config import Settings
from service.data_lock import DataDirInUseError
from service.errors import JobNotFoundError
from service.job_hooks import StoreWriter
from service.store import SqliteJobStore
from tests.helpers import run_job, wait_for, wait_job
from tests.service.conftest import AppFactory

SMALL: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "epochs": 2, "steps_per_chunk": 5}


def test_settings_that_would_open_the_service_to_everyone_are_refused() -> None:
    with pytest.raises(ValidationError, match="SYNCSGD_TOKEN is set but empty"):
        Settings(_env_file=None, token="")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match=r"listen on 0\.0\.0\.0, beyond loopback"):
        Settings(_env_file=None, host="0.0.0.0")  # type: ignore[call-arg]
    beyond = Settings(_env_file=None, host="0.0.0.0", token="s3cret")  # type: ignore[call-arg]
    assert beyond.reads_need_token  # reads too, whatever AUTH_READS says
    assert not Settings(_env_file=None, token="s3cret").reads_need_token  # type: ignore[call-arg]


def test_a_second_service_on_the_same_data_dir_refuses_to_start(make_app: AppFactory,
                                                                tmp_path: Path) -> None:
    first = make_app(data_dir_name="shared")
    with pytest.raises(DataDirInUseError, match=r"\.lock is locked by syncsgd service pid"):
        make_app(data_dir_name="shared")
    assert first.get("/healthz").status_code == 200  # the first is unharmed


def test_a_spec_that_would_exhaust_a_worker_is_refused_naming_the_limit(
        make_app: AppFactory) -> None:
    api = make_app(max_worker_memory_bytes=64 * 2**20)
    spec = {"model": {"input_dim": 1, "layers": [{"units": 65536}, {"units": 1,
                                                                    "activation": "identity"}]},
            "loss": "mse", "batch_size": 65536, "data": {"dataset": "synthetic", "synthetic": {
                "samples": 1000, "features": 1, "outputs": 1, "task": "regression"}}}
    refused = api.post("/jobs", json=spec)
    assert refused.status_code == 422
    (error,) = refused.json()["detail"]
    assert error["loc"] == ["body", "batch_size"]
    assert "over the limit of 67108864 (SYNCSGD_MAX_WORKER_MEMORY_BYTES)" in error["msg"]
    assert JobSpec.model_validate(spec).worker_memory_bytes() > 65536 * 65536 * 4 * 4


class FlakyStore(SqliteJobStore):
    """A real SQLite store whose writes fail as scripted: ``failures[method]`` is a list
    of errors, raised one per call until it is empty."""

    failures: dict[str, list[Exception]] = {}  # noqa: RUF012
    lock = threading.Lock()

    def _fail(self, method: str) -> None:
        with self.lock:
            pending = self.failures.get(method)
            if pending:
                raise pending.pop(0)

    def add_points(self, *args: Any, **kwargs: Any) -> None:
        self._fail("add_points")
        super().add_points(*args, **kwargs)

    def mark_running(self, *args: Any, **kwargs: Any) -> None:
        self._fail("mark_running")
        super().mark_running(*args, **kwargs)


LOCKED = sqlite3.OperationalError("database is locked")
FULL = sqlite3.OperationalError("database or disk is full")


def test_a_failing_store_neither_stops_the_queue_nor_leaves_a_gap_or_a_running_job(
        make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "SqliteJobStore", FlakyStore)
    monkeypatch.setattr(StoreWriter.__init__, "__defaults__", ((0.01, 0.02, 0.05),))
    api = make_app()
    FlakyStore.failures = {"add_points": [LOCKED]}  # once: retried, no gap
    first = run_job(api, SMALL)
    assert first["state"] == "succeeded"
    assert [p["step"] for p in api.get(f"/jobs/{first['id']}/curve").json()["points"]] == (
        list(range(1, 47)))

    FlakyStore.failures = {"mark_running": [FULL] * 3}  # the queue cannot start, for a while
    second = api.post("/jobs", json=SMALL).json()["id"]
    degraded = wait_for(lambda: (r := api.get("/healthz")).status_code == 503 and r, 10,
                        "/healthz to say the queue is stuck")
    assert "database or disk is full" in degraded.json()["problem"]
    assert wait_job(api, second)["state"] == "succeeded"  # then it went on
    assert api.get("/healthz").status_code == 200

    FlakyStore.failures = {"add_points": [FULL] * 20}  # lost for good: the job fails
    third = run_job(api, {**SMALL, "epochs": 50})
    assert third["state"] == "failed"
    assert "could not record its progress: OperationalError: database or disk is full" in (
        third["error"])
    assert api.get("/jobs", params={"state": "running"}).json()["total"] == 0
    assert run_job(api, SMALL)["state"] == "succeeded"  # and the queue still runs


def test_a_job_the_service_keeps_dying_under_is_failed_not_started_again(
        make_app: AppFactory, tmp_path: Path) -> None:
    """Each ``make_app`` is a service start; marking the job running by hand, with no
    shutdown between, is what a service that died mid-job leaves in its database."""
    store_path = tmp_path / "crashy" / "syncsgd.sqlite3"
    store_path.parent.mkdir()
    store = SqliteJobStore(store_path)
    job = store.create("job_crashy", JobSpec.model_validate(SMALL))
    store.close()
    for start in range(1, 4):
        store = SqliteJobStore(store_path)
        store.mark_running(job.id, 0, [])  # it was running when the service died
        store.close()
        restarted = make_app(cpus=0.5, data_dir_name="crashy")  # too small to run it
        state = restarted.get(f"/jobs/{job.id}").json()
        restarted.__exit__(None, None, None)
        if start < 3:
            assert state["state"] == "queued", state  # requeued to resume
    assert state["state"] == "failed"
    assert "stopped without a shutdown 3 times" in state["error"]
    assert "SYNCSGD_MAX_START_ATTEMPTS=3" in state["error"]
    assert state["state"] == JobState.failed.value


def test_a_job_over_the_point_budget_keeps_every_kth_step_exactly(make_app: AppFactory
                                                                  ) -> None:
    """230 steps with a budget of 100 points: every 3rd step, each epoch's last, the first
    and the final one are kept, each the very point an unbudgeted run of the same job has."""
    spec = {**SMALL, "epochs": 10, "seed": 3}
    budgeted, full = (job_and_curve(make_app(**settings), spec)
                      for settings in ({"max_points_per_job": 100}, {}))
    assert budgeted["curve_stride"] == 3 and full["curve_stride"] == 1
    assert budgeted["step"] == full["step"] == budgeted["total_steps"] == 230
    points = {p["step"]: p for p in budgeted["points"]}
    every = {p["step"]: p for p in full["points"]}
    assert sorted(every) == list(range(1, 231))
    epoch_ends = {p["step"] for p in full["points"] if p["val_loss"] is not None}
    assert len(epoch_ends) == 10
    assert sorted(points) == sorted({s for s in every if s % 3 == 0} | epoch_ends | {1, 230})
    timing = ("compute", "allreduce", "wait", "update")
    for step, point in points.items():  # exact where kept (times are measured, not equal)
        assert {k: v for k, v in point.items() if k not in timing} == {
            k: v for k, v in every[step].items() if k not in timing}
    assert budgeted["loss"] == full["loss"] and budgeted["val_loss"] == full["val_loss"]


def job_and_curve(api: Any, spec: dict[str, Any]) -> dict[str, Any]:
    job = run_job(api, spec)
    assert job["state"] == "succeeded", job["error"]
    return {**job, "points": api.get(f"/jobs/{job['id']}/curve").json()["points"]}


def test_deleting_a_long_curve_lets_other_requests_in(tmp_path: Path) -> None:
    """A job with 300,000 points is deleted in batches: reads of another job complete
    while it goes on (a single transaction would hold the store to the end)."""
    store = SqliteJobStore(tmp_path / "db.sqlite3")
    big, other = store.create("job_big", JobSpec()), store.create("job_other", JobSpec())
    store.finish(big.id, JobState.succeeded)
    store.add_points(big.id, (StepRecord(step=s, epoch=0, loss=1.0, compute=0.0,
                                         allreduce=0.0, wait=0.0, update=0.0)
                              for s in range(1, 300_001)))
    reads_during: list[int] = []
    deleting = threading.Thread(target=store.delete, args=(big.id,))
    deleting.start()
    while deleting.is_alive():
        store.get(other.id)
        reads_during.append(1)
    deleting.join()
    assert len(reads_during) >= 10  # 60 batches: the reads got in between them
    assert store.curve(big.id) == [] and store.list_jobs()[0] == [store.get(other.id)]
    with pytest.raises(JobNotFoundError):
        store.get(big.id)
