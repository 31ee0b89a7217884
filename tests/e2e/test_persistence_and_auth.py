"""What survives a restart, who may change things, and the demo users start with."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SYNCSGD, start_server, wait_for

pytestmark = pytest.mark.slow

JOB = {"model": {"input_dim": 64, "layers": [{"units": 32, "activation": "tanh"},
                                             {"units": 10, "activation": "softmax"}]},
       "optimizer": {"kind": "adam", "lr": 0.01}, "epochs": 4, "workers": 2,
       "allreduce": "ray"}


def test_a_fresh_service_process_serves_the_finished_job_and_its_whole_curve(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    try:
        job_id = httpx.post(f"{first.url}/jobs", json=JOB).json()["id"]
        wait_for(lambda: httpx.get(f"{first.url}/jobs/{job_id}").json()["state"] == "succeeded",
                 120, "the job to succeed")
        before = {path: httpx.get(f"{first.url}{path}").content for path in (
            f"/jobs/{job_id}", f"/jobs/{job_id}/curve", f"/jobs/{job_id}/curve?format=csv",
            f"/jobs/{job_id}/model", "/jobs")}
    finally:
        assert first.stop() in (0, -signal.SIGTERM)
    assert not first.ray_processes()
    # What is on disk is a real SQLite database in WAL mode, with one row per step.
    with sqlite3.connect(data_dir / "syncsgd.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM points WHERE job_id = ?",
                          (job_id,)).fetchone()[0] == 4 * 23

    second = start_server(data_dir)
    try:
        after = {path: httpx.get(f"{second.url}{path}").content for path in before}
        assert after == before
        assert second.process.pid != first.process.pid
    finally:
        second.stop()


def test_a_job_running_when_the_service_stops_is_failed_with_the_reason(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir)
    try:
        job_id = httpx.post(f"{first.url}/jobs", json={**JOB, "epochs": 5000}).json()["id"]
        wait_for(lambda: httpx.get(f"{first.url}/jobs/{job_id}").json()["step"] > 0, 60,
                 "the job to make progress")
    finally:
        first.stop()
    pids = [r["pid"] for r in sqlite_job(data_dir, job_id)["ranks"]]
    assert pids and not [p for p in pids if os.path.exists(f"/proc/{p}")]
    second = start_server(data_dir)
    try:
        job = httpx.get(f"{second.url}/jobs/{job_id}").json()
        assert job["state"] == "failed" and "the service shut down" in job["error"]
        assert len(httpx.get(f"{second.url}/jobs/{job_id}/curve").json()["points"]) == job["step"]
    finally:
        second.stop()


def sqlite_job(data_dir: Path, job_id: str) -> dict[str, object]:
    import json

    with sqlite3.connect(data_dir / "syncsgd.sqlite3") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return {**dict(row), "ranks": json.loads(row["ranks"])}


def test_a_token_guards_every_change_and_reads_when_asked(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", token="s3cret", auth_reads="true")
    good = {"Authorization": "Bearer s3cret"}
    try:
        url = server.url
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            refused = httpx.post(f"{url}/jobs", json=JOB, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert httpx.get(f"{url}/jobs", headers=headers).status_code == 401
        assert httpx.get(f"{url}/jobs", headers=good).json()["total"] == 0  # nothing stored
        created = httpx.post(f"{url}/jobs", json={**JOB, "epochs": 5000}, headers=good)
        assert created.status_code == 201
        job_id = created.json()["id"]
        assert httpx.post(f"{url}/jobs/{job_id}/cancel").status_code == 401
        assert httpx.delete(f"{url}/jobs/{job_id}").status_code == 401
        assert httpx.get(f"{url}/jobs/{job_id}/events").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # liveness stays open
        assert httpx.post(f"{url}/jobs/{job_id}/cancel", headers=good).status_code == 200
        env = {**server.env, "SYNCSGD_URL": url, "SYNCSGD_TOKEN": "s3cret"}
        listed = subprocess.run([SYNCSGD, "list"], env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        assert listed.returncode == 0 and job_id in listed.stdout
    finally:
        server.stop()


def test_make_demo_runs_the_main_job_through_the_service(tmp_path: Path) -> None:
    """``syncsgd demo`` (what ``make demo`` runs): its own service, 2 MPI workers, a chart."""
    png = tmp_path / "demo.png"
    done = subprocess.run([SYNCSGD, "demo", "--epochs", "5", "--png", str(png)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workers, all-reduce mpi" in done.stdout
    assert "succeeded: 115 steps" in done.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    leftovers = subprocess.run(["pgrep", "-f", "syncsgd-demo-"], capture_output=True, text=True,
                               check=False)
    assert leftovers.stdout == "", "a process of the demo outlived it"
