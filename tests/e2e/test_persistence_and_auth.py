"""What survives a restart, who may change things, and the demo users start with."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import SYNCSGD, start_server
from tests.helpers import wait_for
from tests.processes import processes_with_env

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
    import tempfile

    marker = f"SYNCSGD_RAY_TEMP_DIR={tempfile.gettempdir()}/syncsgd-demo-"
    wait_for(lambda: not processes_with_env(marker), 30, "the demo's processes to exit")


def test_an_idle_service_keeps_its_embedded_ray(tmp_path: Path) -> None:
    """Regression: Ray was started on a server worker thread, and Ray's processes die with
    the thread that started them (PR_SET_PDEATHSIG); ~10 s of quiet retired the thread."""
    import time

    server = start_server(tmp_path / "data")
    try:
        time.sleep(20)  # no request at all
        ray_head = [p for p in server.ray_processes()
                    if b"gcs_server" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert ray_head, "the embedded Ray's GCS is gone"
        job_id = httpx.post(f"{server.url}/jobs", json={**JOB, "epochs": 1}).json()["id"]
        wait_for(lambda: httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] == "succeeded",
                 60, "a job on the idle service")
    finally:
        server.stop()
