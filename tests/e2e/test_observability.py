"""Metrics, the trained model, predictions and logs, from a real service."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from common.data import load_dataset
from common.nn import Network
from common.schemas import JobSpec
from tests.e2e.helpers import SYNCSGD, Server, service_fixture
from tests.helpers import run_job, wait_for

pytestmark = pytest.mark.slow

DIGITS = {"name": "digits", "optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 20,
          "workers": 2, "allreduce": "mpi", "seed": 1}


server = service_fixture("observe", log_format="json")


@pytest.fixture(scope="module")
def digits_job(server: Server) -> dict[str, Any]:
    job = run_job(server.http, DIGITS)
    assert job["state"] == "succeeded", job["error"]
    return job


def scrape(server: Server) -> dict[str, list[Any]]:
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in
            text_string_to_metric_families(response.text)}


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and
               all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_parse_and_move_while_a_job_runs(server: Server) -> None:
    before = scrape(server)
    steps_before = value(before["syncsgd_steps"], "syncsgd_steps_total")
    job_id = httpx.post(f"{server.url}/jobs", json={**DIGITS, "epochs": 60, "model": {
        "input_dim": 64, "layers": [{"units": 512}, {"units": 512},
                                    {"units": 10, "activation": "softmax"}]}}).json()["id"]
    during = wait_for(lambda: (m := scrape(server)) and value(
        m["syncsgd_jobs"], "syncsgd_jobs", state="running") == 1 and value(
        m["syncsgd_job_loss"], "syncsgd_job_loss", job=job_id) > 0 and m, 60,
        "a running job in the metrics", 0.2)
    speed = value(during["syncsgd_job_steps_per_second"], "syncsgd_job_steps_per_second",
                  job=job_id)
    assert speed > 10
    steps_during = value(during["syncsgd_steps"], "syncsgd_steps_total")
    time.sleep(1.5)
    later = scrape(server)
    assert value(later["syncsgd_steps"], "syncsgd_steps_total") > steps_during > steps_before
    assert value(later["syncsgd_allreduce_seconds"], "syncsgd_allreduce_seconds_count") >= (
        steps_during)
    httpx.post(f"{server.url}/jobs/{job_id}/cancel")
    wait_for(lambda: value(scrape(server)["syncsgd_jobs"], "syncsgd_jobs",
                           state="cancelled") >= 1, 30, "the cancelled job in the metrics")
    http = later["syncsgd_http_request_duration_seconds"]
    assert value(http, "syncsgd_http_request_duration_seconds_count", method="GET",
                 route="/jobs/{job_id}", status="200") == 0  # not asked yet
    assert value(http, "syncsgd_http_request_duration_seconds_count", method="GET",
                 route="/metrics", status="200") >= 2
    assert value(http, "syncsgd_http_request_duration_seconds_count", method="POST",
                 route="/jobs", status="201") >= 1


def test_the_downloaded_model_predicts_the_reported_accuracy(server: Server,
                                                             digits_job: dict[str, Any],
                                                             tmp_path: Path) -> None:
    response = httpx.get(f"{server.url}/jobs/{digits_job['id']}/model")
    assert response.headers["content-type"] == "application/octet-stream"
    path = tmp_path / "model.npz"
    path.write_bytes(response.content)
    net = Network.load(path)
    spec = JobSpec.model_validate(digits_job["spec"])
    data = load_dataset(spec.data, seed=spec.seed, dtype=spec.dtype)
    raw = np.asarray(data.stored.x[data.val])  # the pixels as the user has them
    accuracy = float(np.mean(net.predict(raw).argmax(axis=1) == data.y_val))
    assert accuracy == pytest.approx(digits_job["val_accuracy"], abs=1e-12)
    assert accuracy > 0.95

    rows = raw[:25].tolist()
    served = httpx.post(f"{server.url}/jobs/{digits_job['id']}/predict", json={"inputs": rows})
    assert served.status_code == 200
    body = served.json()
    assert body["classes"] == net.predict(raw[:25]).argmax(axis=1).tolist()
    np.testing.assert_allclose(body["outputs"], net.predict(raw[:25]), rtol=1e-6)

    csv_file = tmp_path / "inputs.csv"
    csv_file.write_text("\n".join(",".join(repr(v) for v in row) for row in rows[:5]))
    cli = subprocess.run([SYNCSGD, "--url", server.url, "predict", digits_job["id"],
                          str(csv_file)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert cli.returncode == 0, cli.stderr
    assert [int(v) for v in cli.stdout.split()] == body["classes"][:5]

    exported = tmp_path / "model.onnx"
    cli = subprocess.run([SYNCSGD, "--url", server.url, "model", digits_job["id"], "--format",
                          "onnx", "-o", str(exported)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert cli.returncode == 0, cli.stderr
    import onnxruntime

    (probabilities,) = onnxruntime.InferenceSession(str(exported)).run(
        None, {"input": raw[:25].astype(np.float32)})
    assert probabilities.argmax(axis=1).tolist() == body["classes"]


def test_predict_refuses_the_wrong_shape_naming_the_expected_one(
        server: Server, digits_job: dict[str, Any]) -> None:
    url = f"{server.url}/jobs/{digits_job['id']}/predict"
    wrong = httpx.post(url, json={"inputs": [[0.0] * 63, [1.0] * 63]})
    assert wrong.status_code == 422
    (error,) = wrong.json()["detail"]
    assert error["loc"] == ["body", "inputs"]
    assert "expected shape (n, 64), got (2, 63)" in error["msg"]
    ragged = httpx.post(url, json={"inputs": [[0.0] * 64, [1.0] * 63]})
    assert ragged.status_code == 422 and "rows must all have 64 numbers" in ragged.text
    assert httpx.post(url, json={"inputs": []}).status_code == 422
    running = httpx.post(f"{server.url}/jobs", json={**DIGITS, "epochs": 5000}).json()["id"]
    early = httpx.post(f"{server.url}/jobs/{running}/predict", json={"inputs": [[0.0] * 64]})
    assert early.status_code == 409
    httpx.post(f"{server.url}/jobs/{running}/cancel")


def test_the_log_is_json_lines_naming_job_and_rank(server: Server,
                                                   digits_job: dict[str, Any]) -> None:
    events = [json.loads(line) for line in server.log.read_text().splitlines()
              if line.startswith("{")]
    mine = [e for e in events if e.get("job") == digits_job["id"]]
    kinds = [e["event"] for e in mine]
    assert kinds[0] == "submitted" and "succeeded" in kinds
    ranks = sorted(e["rank"] for e in mine if e["event"] == "rank-started")
    assert ranks == [0, 1]
    assert all({"time", "level", "message"} <= set(e) for e in mine)
