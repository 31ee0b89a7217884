"""The control plane end to end: a real ``syncsgd serve`` on loopback, a real local Ray,
real MPI workers, a real SQLite file; clients speak HTTP (and SSE) as users do."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import SYNCSGD, Server
from tests.helpers import collect_events, wait_for, wait_job
from tests.processes import process_exists

pytestmark = pytest.mark.slow

SMALL = {"model": {"input_dim": 64, "layers": [{"units": 64, "activation": "relu"},
                                               {"units": 10, "activation": "softmax"}]},
         "optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 3, "workers": 2,
         "allreduce": "mpi"}
# ~4 s on 2 workers: long enough to watch the curve grow.
LIVE = {**SMALL, "model": {"input_dim": 64, "layers": [
    {"units": 512, "activation": "relu"}, {"units": 512, "activation": "relu"},
    {"units": 10, "activation": "softmax"}]}, "optimizer": {"lr": 0.05, "momentum": 0.9},
    "epochs": 30, "steps_per_chunk": 10}


def test_a_job_runs_to_success_and_its_curve_arrives_live(server: Server) -> None:
    client = server.client()
    response = httpx.post(f"{server.url}/jobs", json=LIVE)
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] in ("queued", "running")

    streamed: list[tuple[float, str, Any]] = []
    reader = threading.Thread(
        target=lambda: streamed.extend(collect_events(server.http, job["id"])))
    reader.start()
    reader.join(timeout=180)
    assert not reader.is_alive(), "the event stream did not end with the job"

    states = [data["state"] for _, event, data in streamed if event == "state"]
    assert states[-1] == "succeeded" and states.count("succeeded") == 1
    assert set(states) <= {"queued", "running", "succeeded"}
    batches = [(t, data) for t, event, data in streamed if event == "points"]
    steps = [p["step"] for _, batch in batches for p in batch]
    done = client.job(job["id"])
    assert done.total_steps is not None
    assert steps == list(range(1, done.total_steps + 1)) == list(range(1, 30 * 23 + 1))
    # Live: the points came in many batches spread over the run, not all at the end.
    assert len(batches) >= 5
    assert batches[-1][0] - batches[0][0] > 1.0
    assert batches[0][1][-1]["step"] < done.total_steps // 2

    curve = client.curve(job["id"])
    assert [p.step for p in curve] == steps  # exactly one point per step
    epoch_losses = [sum(p.loss for p in curve if p.epoch == e) for e in (0, 29)]
    assert epoch_losses[1] < epoch_losses[0] / 10
    assert done.val_accuracy is not None and done.val_accuracy > 0.95
    assert done.step == done.total_steps
    assert done.timing is not None and done.timing.compute > 0
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at >= done.started_at
    assert [r.rank for r in done.ranks] == [0, 1]
    assert len({r.pid for r in done.ranks}) == 2

    # A late subscriber gets what it missed: from Last-Event-ID, or from ?since.
    late = collect_events(server.http, job["id"], headers={"Last-Event-ID": "100"})
    late_steps = [p["step"] for _, e, d in late if e == "points" for p in d]
    assert late_steps == list(range(101, done.total_steps + 1))
    assert [d["state"] for _, e, d in late if e == "state"] == ["succeeded"]
    replay = collect_events(server.http, job["id"], params={"since": 0})
    assert [p["step"] for _, e, d in replay if e == "points" for p in d] == steps

    table = httpx.get(f"{server.url}/jobs/{job['id']}/curve", params={"format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert [int(r["step"]) for r in rows] == steps
    assert float(rows[-1]["loss"]) == pytest.approx(curve[-1].loss)
    since = httpx.get(f"{server.url}/jobs/{job['id']}/curve", params={"since": 680}).json()
    assert [p["step"] for p in since["points"]] == list(range(681, 691))
    client.close()


def test_cancel_stops_a_running_job_and_frees_its_workers(server: Server) -> None:
    client = server.client()
    job = client.submit({**LIVE, "epochs": 2000})
    running = wait_for(lambda: (j := client.job(job.id)).step > 0 and j, 60,
                       "the job to make progress")
    pids = {r.pid for r in running.ranks}
    assert len(pids) == 2 and all(map(process_exists, pids))
    # Its 2 CPUs are all the cluster has: a verification cannot run now, and says so at
    # once instead of holding the request until the job ends.
    busy = httpx.post(f"{server.url}/verify", json={"spec": SMALL, "workers": 2, "steps": 5},
                      timeout=10)
    assert busy.status_code == 409, busy.text
    assert busy.json()["detail"] == ("workers: 2 x 1 CPU needed, 0 free now (running jobs "
                                     "hold the rest); retry later")

    began = time.monotonic()
    assert httpx.post(f"{server.url}/jobs/{job.id}/cancel").status_code == 200
    cancelled = wait_job(server.http, job.id, {"cancelled", "failed", "succeeded"}, timeout_s=30)
    assert cancelled["state"] == "cancelled"
    assert time.monotonic() - began < 10
    assert cancelled["step"] < cancelled["total_steps"]

    from ray.util.state import list_actors

    dashboard = f"http://127.0.0.1:{server.env['SYNCSGD_RAY_DASHBOARD_PORT']}"
    wait_for(lambda: not pids & {a.pid for a in list_actors(
        address=dashboard, filters=[("state", "=", "ALIVE")])}, 20,
        "Ray's state API to show the job's actors gone")
    wait_for(lambda: not any(map(process_exists, pids)), 20, "the worker processes to exit")
    wait_for(lambda: client.health().free_cpus == 2, 20, "Ray to free the job's CPUs")
    again = httpx.post(f"{server.url}/jobs/{job.id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    client.close()


def test_the_queue_runs_every_job_in_submission_order(server: Server) -> None:
    """Each job takes both of the cluster's CPUs, so they must run one after another."""
    client = server.client()
    ids = [client.submit({**SMALL, "name": f"queued-{i}", "seed": i}).id for i in range(4)]
    assert client.job(ids[-1]).state == "queued"
    done = [wait_job(server.http, job_id, {"succeeded", "failed", "cancelled"}) for job_id in ids]
    assert [j["state"] for j in done] == ["succeeded"] * 4
    starts = [j["started_at"] for j in done]
    assert starts == sorted(starts)
    for earlier, later in itertools.pairwise(done):
        assert later["started_at"] >= earlier["finished_at"]
    listed = client.jobs(limit=500).items
    assert [j.id for j in listed if j.id in ids] == ids[::-1]  # newest first, none lost
    assert client.jobs(state="succeeded", limit=500).total >= 4
    client.close()


def test_the_cli_submits_follows_and_charts(server: Server, tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({**SMALL, "epochs": 1}))
    env = {**server.env, "SYNCSGD_URL": server.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYNCSGD, *args], env=env, capture_output=True, text=True,
                              timeout=180, check=False)

    submitted = cli("submit", str(spec), "--epochs", "4", "--name", "from-cli")
    assert submitted.returncode == 0, submitted.stderr
    job_id, state = submitted.stdout.split()[:2]
    assert job_id.startswith("job_") and state in ("queued", "running")
    followed = cli("follow", job_id)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert f"{job_id} succeeded: 92 steps" in followed.stdout
    assert "val accuracy 0.9" in followed.stdout

    png = tmp_path / "curve.png"
    charted = cli("curve", job_id, "--png", str(png))
    assert charted.returncode == 0, charted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert (width, height) == (800, 450)
    assert "92" in charted.stdout  # the table ends at the last step
    listed = cli("list")
    assert job_id in listed.stdout and "from-cli" in listed.stdout
    shown = cli("status", job_id)
    assert json.loads(shown.stdout)["spec"]["epochs"] == 4
    missing = cli("status", "job_nope")
    assert missing.returncode == 1 and "HTTP 404: Job job_nope not found" in missing.stdout


def test_the_cli_flags_set_the_training_controls(server: Server) -> None:
    env = {**server.env, "SYNCSGD_URL": server.url}

    def submit(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYNCSGD, "submit", *flags], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    done = submit("--name", "controls", "--epochs", "3", "--optimizer", "adamw", "--lr", "0.01",
                  "--weight-decay", "0.05", "--schedule", "kind=step,every_epochs=1,gamma=0.5",
                  "--warmup-steps", "10", "--clip-norm", "2.5", "--accumulation-steps", "2",
                  "--dropout", "0.25", "--early-stopping", "patience=2,monitor=val_accuracy",
                  "--priority", "low")
    assert done.returncode == 0, done.stdout + done.stderr
    job = wait_job(server.http, done.stdout.split()[0])
    assert job["state"] == "succeeded", job["error"]
    spec = job["spec"]
    assert spec["optimizer"] | {"schedule": None} == {
        **spec["optimizer"], "kind": "adamw", "lr": 0.01, "weight_decay": 0.05,
        "warmup_steps": 10, "clip_norm": 2.5, "schedule": None}
    assert spec["optimizer"]["schedule"] == {"kind": "step", "every_epochs": 1, "gamma": 0.5}
    assert spec["accumulation_steps"] == 2 and spec["epochs"] == 3 and spec["priority"] == "low"
    assert [layer["dropout"] for layer in spec["model"]["layers"]] == [0.25, 0.0]
    assert spec["early_stopping"] == {"monitor": "val_accuracy", "patience": 2,
                                      "min_delta": 0.0, "restore_best": True}
    rates = [p["lr"] for p in server.http.get(f"/jobs/{job['id']}/curve").json()["points"]]
    assert rates[9] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.01 * 0.25)

    refused = submit("--clip-norm", "0")
    assert refused.returncode == 1
    assert "optimizer.clip_norm" in refused.stdout and "greater than 0" in refused.stdout
    malformed = submit("--schedule", "cosine")
    assert malformed.returncode == 2 and "expected key=value" in malformed.stderr


def test_verify_reports_bitwise_identity_over_http_and_the_cli(server: Server,
                                                               tmp_path: Path) -> None:
    spec = {**SMALL, "deterministic": True, "micro_shards": 4}
    report = httpx.post(f"{server.url}/verify", json={"spec": spec, "workers": 2, "steps": 25},
                        timeout=300).json()
    assert report["identical"] and report["curves_identical"] and report["steps"] == 25
    assert report["sha256_one"] == report["sha256_many"] and report["max_abs_difference"] == 0

    normal = httpx.post(f"{server.url}/verify", json={"spec": SMALL, "workers": 2, "steps": 25},
                        timeout=300).json()
    assert normal["identical"] == (normal["max_abs_difference"] == 0)
    assert normal["max_rel_difference"] < 1e-3  # close, whether or not the same bits

    refused = httpx.post(f"{server.url}/verify", json={"spec": spec, "workers": 3, "steps": 5})
    assert refused.status_code == 422 and "the cluster has 2 CPUs" in refused.text

    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(spec))
    cli = subprocess.run([SYNCSGD, "--url", server.url, "verify", str(spec_file), "--workers",
                          "2", "--steps", "10"], capture_output=True, text=True, timeout=300,
                         check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "identical: 1 and 2 workers give the same weights bit for bit after 10 steps" in (
        cli.stdout)


def warm_processes(server: Server) -> set[int]:
    """This service's rank processes that wait for a job (Ray titles an idle actor
    process with its class alone; a busy one with the method it runs: a pool process
    still importing the engine is ``RankWorker.warm``)."""
    warm = set()
    for pid in server.ray_processes():
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            if title in (b"ray::RankWorker", b"ray::RankWorker.warm"):
                warm.add(pid)
    return warm


def two_warm_processes(server: Server) -> set[int]:
    """Wait for the pool's 2 processes; one reading of them (they may change titles)."""
    def ready() -> set[int] | None:
        return found if len(found := warm_processes(server)) >= 2 else None
    return wait_for(ready, 60, "2 warm rank processes")


def test_a_job_starts_on_warm_processes_and_reports_where_its_start_went(
        server: Server) -> None:
    """The service keeps 2 started rank processes (SYNCSGD_WARM_WORKERS, default 2): a
    job's ranks are processes that existed before it was submitted, and are made up
    again when it ends."""
    warm = two_warm_processes(server)
    began = time.monotonic()
    job_id = server.http.post("/jobs", json={**SMALL, "workers": 2, "max_steps": 3}).json()["id"]
    first = wait_for(lambda: server.http.get(f"/jobs/{job_id}/curve").json()["points"], 60,
                     "the first point")
    waited = time.monotonic() - began
    assert first[0]["step"] == 1
    job = wait_job(server.http, job_id)
    assert {rank["pid"] for rank in job["ranks"]} <= warm
    split = job["startup"]
    assert list(split) == ["queue", "data", "placement", "actors", "join",
                           "data and broadcast", "first step"]
    assert all(seconds >= 0 for seconds in split.values())
    # the phases happen one after another, within what the client waited for the point
    assert sum(split.values()) <= waited + 0.05
    again = two_warm_processes(server)
    assert not again & {rank["pid"] for rank in job["ranks"]}  # fresh ones: one job each
