"""Fault tolerance end to end, with real processes and real signals: SIGKILLed workers,
a SIGKILLed service, divergence. The reference is always an undisturbed twin job of the
same spec; with the same number of workers a recovered run does exactly the same
arithmetic, so weights are compared bit for bit (stronger than the rtol 1e-12 the issue
allows before deterministic mode exists)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Server, service_fixture, start_server
from tests.helpers import collect_events, model_params, wait_for, wait_job

pytestmark = pytest.mark.slow

# 22 steps an epoch (5,000 x 95% / 216), 110 in all; checkpoints every 10 steps.
SPEC = {"model": {"input_dim": 128, "layers": [{"units": 256, "activation": "relu"},
                                               {"units": 256, "activation": "tanh"},
                                               {"units": 8, "activation": "softmax"}]},
        "data": {"dataset": "synthetic", "validation_fraction": 0.05,
                 "synthetic": {"samples": 5000, "features": 128, "outputs": 8}},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "nesterov": True}, "batch_size": 216,
        "epochs": 5, "workers": 2, "allreduce": "mpi", "checkpoint_every": 10,
        "steps_per_chunk": 5, "seed": 7}
TOTAL = 110


drills = service_fixture("drills", fault_injection="true")


@pytest.fixture(scope="module")
def reference(drills: Server) -> bytes:
    """The undisturbed run's final weights."""
    job_id = httpx.post(f"{drills.url}/jobs", json=SPEC).json()["id"]
    job = wait_job(drills.http, job_id)
    assert job["state"] == "succeeded" and job["restarts"] == 0, job
    return model_params(drills.http, job_id)


def test_a_worker_sigkilled_mid_epoch_is_replaced_and_the_job_is_unchanged(
        drills: Server, reference: bytes) -> None:
    job_id = httpx.post(f"{drills.url}/jobs", json=SPEC).json()["id"]
    armed = httpx.post(f"{drills.url}/jobs/{job_id}/faults",
                       json={"rank": 1, "step": 37, "action": "kill"})  # epoch 2, step 15 of 22
    assert armed.status_code == 202, armed.text
    events = collect_events(drills.http, job_id)
    job = wait_job(drills.http, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["restarts"] == 1
    (restart,) = job["restart_log"]
    # from the state rank 0 returned with the last chunk (steps 31..35): the chunk of
    # steps 36..40 in flight is computed again, nothing before it
    assert restart["from_step"] == 35 and restart["lost_steps"] == 5
    assert "rank 1 (node" in restart["cause"]
    assert "worker process died" in restart["cause"]
    assert [d for _, e, d in events if e == "restart"] == [restart]  # seen live, too
    curve = httpx.get(f"{drills.url}/jobs/{job_id}/curve").json()["points"]
    assert [p["step"] for p in curve] == list(range(1, TOTAL + 1))
    assert model_params(drills.http, job_id) == reference


def test_two_external_sigkills_in_one_job(drills: Server, reference: bytes) -> None:
    """The test itself SIGKILLs a worker process it finds in the job's ranks, twice."""
    job_id = httpx.post(f"{drills.url}/jobs", json=SPEC).json()["id"]
    killed: list[int] = []
    old_groups: set[int] = set()  # every pid of a group already disturbed

    def ready_for_kill(restarts_before: int, rank: int) -> dict[str, Any] | None:
        """The job, once a group that is all new has made progress."""
        j: dict[str, Any] = httpx.get(f"{drills.url}/jobs/{job_id}").json()
        pids = {r["pid"] for r in j["ranks"]}
        fresh = len(pids) == 2 and pids.isdisjoint(old_groups)
        progressed = j["step"] >= 12 * (restarts_before + 1)
        return j if j["restarts"] == restarts_before and fresh and progressed else None

    for restarts_before, rank in ((0, 0), (1, 1)):
        job = wait_for(lambda b=restarts_before, r=rank: ready_for_kill(b, r), 120,
                       f"progress before kill {restarts_before + 1}", 0.05)
        assert job["step"] < TOTAL, "the job ended before it could be disturbed"
        pid = job["ranks"][rank]["pid"]
        old_groups.update(r["pid"] for r in job["ranks"])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    job = wait_job(drills.http, job_id)
    assert job["state"] == "succeeded", job["error"]
    assert job["restarts"] == 2
    assert all(str(pid) in r["cause"] for pid, r in zip(killed, job["restart_log"], strict=True))
    curve = httpx.get(f"{drills.url}/jobs/{job_id}/curve").json()["points"]
    assert [p["step"] for p in curve] == list(range(1, TOTAL + 1))
    assert model_params(drills.http, job_id) == reference


def test_divergence_fails_the_job_naming_the_step(drills: Server) -> None:
    diverging = {"model": {"input_dim": 8, "layers": [{"units": 16, "activation": "relu"},
                                                      {"units": 2, "activation": "identity"}]},
                 "loss": "mse", "optimizer": {"lr": 10.0},
                 "data": {"dataset": "synthetic", "synthetic": {
                     "samples": 2000, "features": 8, "outputs": 2, "task": "regression"}},
                 "epochs": 50, "workers": 2, "allreduce": "ray"}
    job_id = httpx.post(f"{drills.url}/jobs", json=diverging).json()["id"]
    job = wait_job(drills.http, job_id)
    assert job["state"] == "failed" and job["restarts"] == 0
    assert "ranks 0, 1" in job["error"] and "DivergedError: diverged at step" in job["error"]
    step = int(job["error"].split("diverged at step ")[1].split()[0])
    assert job["step"] < step  # no update of the diverged step was applied or recorded


def test_faults_need_the_setting_and_a_live_job(drills: Server, tmp_path: Path) -> None:
    done_id = httpx.get(f"{drills.url}/jobs", params={"state": "succeeded"}).json()[
        "items"][0]["id"]
    late = httpx.post(f"{drills.url}/jobs/{done_id}/faults", json={"rank": 0, "step": 1})
    assert late.status_code == 409
    live_id = httpx.post(f"{drills.url}/jobs", json={**SPEC, "epochs": 3000}).json()["id"]
    wrong_rank = httpx.post(f"{drills.url}/jobs/{live_id}/faults", json={"rank": 5, "step": 1})
    assert wrong_rank.status_code == 422 and "ranks 0..1" in wrong_rank.text
    assert httpx.post(f"{drills.url}/jobs/{live_id}/cancel").status_code == 200
    plain = start_server(tmp_path / "data")
    try:
        job_id = httpx.post(f"{plain.url}/jobs", json={**SPEC, "epochs": 1}).json()["id"]
        refused = httpx.post(f"{plain.url}/jobs/{job_id}/faults", json={"rank": 0, "step": 5})
        assert refused.status_code == 403 and "SYNCSGD_FAULT_INJECTION" in refused.text
    finally:
        plain.stop()


def running_job(data_dir: Path, past_step: int, **changes: Any) -> tuple[Server, str]:
    """A fresh service on ``data_dir`` and a job of ``SPEC`` with ``changes`` on it, past
    ``past_step``. A drill slows rank 0 by 50 ms a step (no bit changes), so the job is
    still running when the test stops the service, however fast the machine: at full
    speed its 110 steps take about a second."""
    server = start_server(data_dir, fault_injection="true")
    job_id = httpx.post(f"{server.url}/jobs", json={**SPEC, **changes}).json()["id"]
    slow = {"rank": 0, "step": 2, "action": "slow", "seconds": 0.05}
    assert httpx.post(f"{server.url}/jobs/{job_id}/faults", json=slow).status_code == 202
    wait_for(lambda: httpx.get(f"{server.url}/jobs/{job_id}").json()["step"] >= past_step,
             120, f"progress past step {past_step}", 0.05)
    return server, job_id


def test_a_sigkilled_service_resumes_its_job_from_the_last_checkpoint(tmp_path: Path,
                                                                      reference: bytes) -> None:
    data_dir = tmp_path / "data"
    first, job_id = running_job(data_dir, past_step=45)  # past a few checkpoints
    before = httpx.get(f"{first.url}/jobs/{job_id}/curve").json()["points"]
    first.kill_hard()
    # With the driver gone, Ray's head processes and the workers go too. Ray's two
    # per-node agents can linger after a hard kill: end those (our own) by pid.
    wait_for(lambda: not [p for p in first.ray_processes()
                          if not _is_agent(p)], 30, "the crashed service's workers to exit")
    for pid in first.ray_processes():
        os.kill(pid, signal.SIGKILL)
    assert len(before) >= 45 and before[-1]["step"] < TOTAL

    second = start_server(data_dir)
    try:
        job = wait_job(second.http, job_id)
        assert job["state"] == "succeeded", job["error"]
        after = httpx.get(f"{second.url}/jobs/{job_id}/curve").json()["points"]
        assert [p["step"] for p in after] == list(range(1, TOTAL + 1))
        # Every point written before the crash is still there, with the same loss.
        assert [p["loss"] for p in after[:len(before)]] == [p["loss"] for p in before]
        assert model_params(second.http, job_id) == reference
    finally:
        second.stop()


def _is_agent(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return False


def test_a_stopped_service_resumes_its_running_job_when_started_again(tmp_path: Path,
                                                                     reference: bytes) -> None:
    data_dir = tmp_path / "data"
    first, job_id = running_job(data_dir, past_step=25, checkpoint_every=1000)
    first.stop()
    assert not first.ray_processes()
    # The state at the last chunk it ran is on disk (it has no checkpoint step before
    # 1,000): the next process repeats no step.
    with contextlib.closing(sqlite3.connect(data_dir / "syncsgd.sqlite3")) as db:
        (stopped_at,) = db.execute("SELECT step FROM jobs WHERE id = ?", (job_id,)).fetchone()
    newest = max(int(path.stem.split("-")[1])
                 for path in (data_dir / "checkpoints" / job_id).glob("step-*.npz"))
    assert newest == stopped_at
    second = start_server(data_dir)
    try:
        job = wait_job(second.http, job_id)
        assert job["state"] == "succeeded"
        assert model_params(second.http, job_id) == reference
        assert not list((data_dir / "checkpoints").glob(f"{job_id}/*"))  # cleaned up
    finally:
        second.stop()
