"""MLflow and TensorBoard against the real things: a real ``mlflow server`` (SQLite backend,
artifacts it serves, on loopback) started here, and the event files read back with
TensorBoard's own ``EventAccumulator``. The reference is always the job's curve."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from common.nn import Network
from service.local import free_port
from tests.e2e.helpers import Server, start_server
from tests.helpers import model_params, wait_for, wait_job

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
# This process's MLflow client: a refused connection fails at once (the polls retry).
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
# 24 steps an epoch (1,437 training digits / 60), 96 in all.
SPEC: dict[str, Any] = {
    "name": "tracked", "workers": 2, "allreduce": "mpi", "batch_size": 60, "epochs": 4,
    "steps_per_chunk": 9, "seed": 11, "optimizer": {"lr": 0.05, "momentum": 0.9},
    "model": {"input_dim": 64, "layers": [{"units": 32, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "tracking": {"mlflow": {"experiment": "e2e", "run_name": "digits"}}}


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen[bytes]

    def client(self) -> MlflowClient:
        return MlflowClient(self.url)

    def stop(self) -> None:
        """Its whole process group: the server starts uvicorn and a job runner."""
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_mlflow(directory: Path, port: int) -> MlflowServer:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "server.log", "ab") as log:
        process = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
             "--artifacts-destination", str(directory / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", process)

    def up() -> bool:
        assert process.poll() is None, (directory / "server.log").read_text()[-3000:]
        try:
            server.client().search_experiments(max_results=1)
            return True
        except Exception:
            return False

    try:
        wait_for(up, 120, "the MLflow server", interval=0.5)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow(tmp_path_factory.mktemp("mlflow"), free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
            ) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("tracked") / "data", fault_injection="true",
                          mlflow_tracking_uri=mlflow_server.url, tracking_interval_s=0.5)
    yield server
    server.stop_cleanly()


def finished_run(server: Server, job_id: str) -> dict[str, Any]:
    job = wait_job(server.http, job_id, timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    return wait_for(lambda: (j := server.http.get(f"/jobs/{job_id}").json())["mlflow"][
        "finished"] and j, 60, "the MLflow run to be complete")


def runs_of(client: MlflowClient, job_id: str) -> list[Any]:
    experiment = client.get_experiment_by_name("e2e")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id],
                                   f"tags.`syncsgd.job_id` = '{job_id}'"))


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def curve(server: Server, job_id: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = server.http.get(f"/jobs/{job_id}/curve").json()["points"]
    return points


def test_a_job_is_one_mlflow_run_with_its_curve_params_and_model(
        tracked: Server, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    job_id = tracked.http.post("/jobs", json=SPEC).json()["id"]
    job = finished_run(tracked, job_id)
    assert job["mlflow"]["failures"] == 0 and job["mlflow"]["last_error"] is None
    client = mlflow_server.client()
    (run,) = runs_of(client, job_id)
    assert run.info.run_id == job["mlflow"]["run_id"] and run.info.run_name == "digits"
    assert run.info.status == "FINISHED"
    assert run.data.tags["syncsgd.world_size"] == "2"
    assert run.data.tags["syncsgd.backend"] == "mpi"
    assert run.data.tags["syncsgd.deterministic"] == "False"
    params = run.data.params
    assert params["batch_size"] == "60" and params["model.layers.0.units"] == "32"
    assert params["optimizer.momentum"] == "0.9"

    points = curve(tracked, job_id)
    assert len(points) == 96
    assert metric_steps(client, run.info.run_id, "loss") == [(p["step"], p["loss"])
                                                             for p in points]
    assert metric_steps(client, run.info.run_id, "val_accuracy") == [
        (p["step"], p["val_accuracy"]) for p in points if p["val_accuracy"] is not None]
    assert len(metric_steps(client, run.info.run_id, "steps_per_s")) == 96

    files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert files == {"model/tracked.npz", "model/tracked.onnx"}
    local = Path(client.download_artifacts(run.info.run_id, "model/tracked.npz", str(tmp_path)))
    net = Network.load(local)  # loads (no pickle) and holds the job's weights
    assert net.params.tobytes() == model_params(tracked.http, job_id)
    csv_path = client.download_artifacts(run.info.run_id, f"{job_id}-curve.csv", str(tmp_path))
    assert Path(csv_path).read_bytes() == tracked.http.get(
        f"/jobs/{job_id}/curve", params={"format": "csv"}).content


def test_tensorboard_files_hold_the_curve(tracked: Server, tmp_path: Path) -> None:
    job_id = tracked.http.post("/jobs", json={**SPEC, "tracking": {}}).json()["id"]
    assert wait_job(tracked.http, job_id)["state"] == "succeeded"
    response = tracked.http.get(f"/jobs/{job_id}/tensorboard")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path, filter="data")
    events = EventAccumulator(str(tmp_path / job_id))
    events.Reload()
    points = curve(tracked, job_id)
    # TensorBoard keeps scalars as float32.
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (p["step"], float(np.float32(p["loss"]))) for p in points]
    assert [(e.step, e.value) for e in events.Scalars("lr")] == [
        (p["step"], float(np.float32(p["lr"]))) for p in points]
    assert [(e.step, e.value) for e in events.Scalars("val/loss")] == [
        (p["step"], float(np.float32(p["val_loss"]))) for p in points
        if p["val_loss"] is not None]
    assert len(events.Scalars("val/accuracy")) == 4  # one per epoch


def test_a_job_killed_with_its_service_and_resumed_is_still_one_run_each_step_once(
        tmp_path: Path, mlflow_server: MlflowServer) -> None:
    """SIGKILL of the service mid-run; a new one resumes the job from its checkpoint and
    computes steps again that the run already has."""
    settings = {"mlflow_tracking_uri": mlflow_server.url, "tracking_interval_s": 0.5}
    long = {**SPEC, "name": "resumed", "epochs": 30, "checkpoint_every": 100}
    first = start_server(tmp_path / "data", **settings)
    try:
        job_id = first.http.post("/jobs", json=long).json()["id"]
        wait_for(lambda: (first.http.get(f"/jobs/{job_id}").json()["mlflow"]["logged_step"]
                          > 150), 120, "the run to have its first steps")
    finally:
        first.kill_hard()
    second = start_server(tmp_path / "data", **settings)
    try:
        finished_run(second, job_id)
        client = mlflow_server.client()
        (run,) = runs_of(client, job_id)
        points = curve(second, job_id)
        assert [p["step"] for p in points] == list(range(1, 24 * 30 + 1))
        assert metric_steps(client, run.info.run_id, "loss") == [(p["step"], p["loss"])
                                                                 for p in points]
    finally:
        second.stop_cleanly()
        first.stop()


def test_a_job_trains_while_mlflow_is_down_and_its_run_catches_up(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    server = start_server(tmp_path / "data", mlflow_tracking_uri=f"http://127.0.0.1:{port}",
                          tracking_interval_s=0.5)
    mlflow: MlflowServer | None = None
    try:
        job_id = server.http.post("/jobs", json=SPEC).json()["id"]
        job = wait_job(server.http, job_id)
        assert job["state"] == "succeeded", job["error"]
        failing = wait_for(lambda: (j := server.http.get(f"/jobs/{job_id}").json())[
            "mlflow"]["failures"] >= 2 and j, 60, "failures to be counted")
        assert failing["mlflow"]["run_id"] is None and not failing["mlflow"]["finished"]
        assert "Connection refused" in failing["mlflow"]["last_error"] or "onnect" in failing[
            "mlflow"]["last_error"]

        mlflow = start_mlflow(tmp_path / "mlflow", port)  # back: retried until it lands
        done = wait_for(lambda: (j := server.http.get(f"/jobs/{job_id}").json())["mlflow"][
            "finished"] and j, 120, "the run to catch up")
        (run,) = runs_of(mlflow.client(), job_id)
        assert run.info.run_id == done["mlflow"]["run_id"]
        assert metric_steps(mlflow.client(), run.info.run_id, "loss") == [
            (p["step"], p["loss"]) for p in curve(server, job_id)]
    finally:
        server.stop_cleanly()
        if mlflow is not None:
            mlflow.stop()
