"""The HTTP API's surface, in process (see conftest): what users send and what they get
back, every 4xx the docs list, auth, limits, the curve in JSON, CSV and SSE. The weights a
job returns are checked against the single-process trainer, an independent path."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.nn import Network
from common.schemas import JobSpec
from service.store import POINT_FIELDS
from tests.helpers import (
    assert_refused,
    collect_events,
    four_class_csv,
    npz,
    run_job,
    streamed_steps,
    wait_for,
    wait_job,
)
from tests.reference import single_process_run
from tests.service.conftest import AppFactory

SMALL: dict[str, Any] = {
    "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]},
    "optimizer": {"lr": 0.1, "momentum": 0.9}, "epochs": 2, "workers": 2, "allreduce": "mpi"}
#: Runs until cancelled (115,000 steps).
ENDLESS = {**SMALL, "epochs": 5000}


def test_a_job_runs_and_serves_its_curve_model_and_predictions(api: TestClient) -> None:
    response = api.post("/jobs", json=SMALL)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    done = wait_job(api, job_id)
    assert done["state"] == "succeeded" and done["step"] == done["total_steps"] == 46
    assert done["val_accuracy"] > 0.8 and done["finished_at"] >= done["started_at"]

    params, records = single_process_run(JobSpec.model_validate(SMALL))
    curve = api.get(f"/jobs/{job_id}/curve").json()["points"]
    assert [p["step"] for p in curve] == list(range(1, 47))
    assert [p["loss"] for p in curve] == [r.loss for r in records]
    model = Network.load(io.BytesIO(api.get(f"/jobs/{job_id}/model").content))
    assert model.params.tobytes() == params.tobytes()

    page = api.get(f"/jobs/{job_id}/curve", params={"since": 40, "limit": 3}).json()
    assert [p["step"] for p in page["points"]] == [41, 42, 43]
    table = api.get(f"/jobs/{job_id}/curve", params={"format": "csv"})
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(table.text)))
    assert tuple(rows[0]) == POINT_FIELDS and len(rows) == 47
    assert float(rows[-1][2]) == pytest.approx(curve[-1]["loss"])

    x = np.asarray([[float(v) for v in range(64)]] * 3)
    predicted = api.post(f"/jobs/{job_id}/predict", json={"inputs": x.tolist()}).json()
    assert len(predicted["classes"]) == 3 and len(predicted["outputs"][0]) == 10
    np.testing.assert_allclose(predicted["outputs"], model.predict(x), rtol=1e-6)


def test_the_event_stream_sends_points_then_the_end_and_resumes_where_asked(
        api: TestClient) -> None:
    job_id = run_job(api, SMALL)["id"]
    events = collect_events(api, job_id)
    assert streamed_steps(events) == list(range(1, 47))
    states = [data["state"] for _, event, data in events if event == "state"]
    assert states == ["succeeded"]
    late = collect_events(api, job_id, headers={"Last-Event-ID": "40"})
    assert streamed_steps(late) == list(range(41, 47))
    assert streamed_steps(collect_events(api, job_id, params={"since": 44})) == [45, 46]
    # An EventSource reconnects to the URL it opened (``?since=0``) with Last-Event-ID:
    # the header wins, so the page gets no point twice.
    reconnect = collect_events(api, job_id, headers={"Last-Event-ID": "40"},
                               params={"since": 0})
    assert streamed_steps(reconnect) == list(range(41, 47))


def test_jobs_list_newest_first_in_pages_and_by_state(api: TestClient) -> None:
    ids = [run_job(api, {**SMALL, "epochs": 1, "name": f"n{i}"})["id"] for i in range(3)]
    api.post(f"/jobs/{ids[0]}/cancel")  # already ended: a 409, nothing changes
    page = api.get("/jobs", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 3 and [j["id"] for j in page["items"]] == [ids[1], ids[0]]
    assert api.get("/jobs", params={"state": "succeeded"}).json()["total"] == 3
    assert api.get("/jobs", params={"state": "queued"}).json()["total"] == 0
    assert api.get("/jobs/defaults").json() == JobSpec().model_dump(mode="json")


NOT_FOUND = [("GET", "/jobs/job_nope"), ("GET", "/jobs/job_nope/curve"),
             ("GET", "/jobs/job_nope/events"), ("POST", "/jobs/job_nope/cancel"),
             ("DELETE", "/jobs/job_nope"), ("GET", "/jobs/job_nope/model"),
             ("POST", "/jobs/job_nope/predict"), ("POST", "/jobs/job_nope/faults")]


def test_every_unknown_id_is_a_404_naming_it(make_app: AppFactory) -> None:
    api = make_app(fault_injection=True)
    bodies = {"/jobs/job_nope/predict": {"inputs": [[0.0] * 64]},
              "/jobs/job_nope/faults": {"rank": 0, "step": 1}}
    for method, path in NOT_FOUND:
        response = api.request(method, path, json=bodies.get(path))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": "Job job_nope not found"}
    missing = api.get("/datasets/ds_0000000000000000")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Dataset ds_0000000000000000 not found"}


BAD_FIELDS = [
    ({"optimizer": {"lr": -1}}, ["body", "optimizer", "lr"], "greater than 0"),
    ({"model": {"input_dim": 64, "layers": [{"units": 0}]}},
     ["body", "model", "layers", 0, "units"], "greater than or equal to 1"),
    ({"model": {"input_dim": 32, "layers": [{"units": 10, "activation": "softmax"}]}},
     ["body", "model", "input_dim"], "is 32 but dataset 'digits' has 64 features"),
    ({"epochz": 3}, ["body", "epochz"], "Extra inputs are not permitted"),
    ({"allreduce": "nccl"}, ["body", "allreduce"], "'mpi', 'ray' or 'local'"),
    ({"workers": 100}, ["body", "workers"], "over the limit of 16 (SYNCSGD_MAX_WORKERS_PER_JOB)"),
    ({"workers": 3}, ["body", "workers"], "3 x 1 CPU asked, the cluster has 2 CPUs"),
    ({"model": {"input_dim": 64, "layers": [{"units": 65536}, {"units": 65536},
                                            {"units": 10, "activation": "softmax"}]}},
     ["body", "model"], "(SYNCSGD_MAX_PARAMETERS)"),
    ({"epochs": 10000, "data": {"dataset": "synthetic", "synthetic": {
        "samples": 1_000_000, "features": 64, "outputs": 10}}}, ["body", "epochs"],
     "(SYNCSGD_MAX_EPOCH_SAMPLES)"),
    ({"model": {"input_dim": 1, "layers": [{"units": 65536, "activation": "softmax"}]},
      "data": {"dataset": "synthetic", "synthetic": {"samples": 300_000, "features": 1,
                                                     "outputs": 65536}}},
     ["body", "data", "synthetic"], "samples x outputs: 300000 x 65536 is over the limit"),
    ({"data": {"dataset": "ds_0000000000000000"}}, ["body", "data", "dataset"],
     "no dataset 'ds_0000000000000000' has been uploaded"),
    ({"workers": 2, "deterministic": True, "micro_shards": 1}, ["body", "micro_shards"],
     "deterministic mode needs at least one per worker"),
]


def test_a_refused_spec_is_a_422_naming_the_field_and_stores_nothing(api: TestClient) -> None:
    assert_refused(api, SMALL, BAD_FIELDS)
    broken = api.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    overflow = api.get("/jobs", params={"offset": 2**70})
    assert overflow.status_code == 422
    assert overflow.json()["detail"][0]["loc"] == ["query", "offset"]
    assert api.get("/jobs").json()["total"] == 0


BAD_UPLOADS = [  # every kind of refusal; tests/service/test_ingest.py has them all
    ("csv", b"1,2,0\n3,nan,1\n", ["body", "x"], "NaN, inf or a missing value in row 2"),
    ("csv", b"1,2,0\n3,4\n", ["body", "file"], "a row has 2 values, expected 3 (ragged rows)"),
    ("csv", b"a,b,c\n1,x,0\n3,abc,1\n", ["body", "file"], "column 'b' is not numeric"),
    ("csv", b"\xff\xfe\x00", ["body", "file"], "file: not UTF-8 text"),
    ("csv", b"a,b\n1,2\n", ["body", "file"], "needs at least 2 data rows, found 1"),
    ("npz", npz(x=np.ones((3, 2))), ["body", "npz"], "needs arrays 'x' and 'y'; missing ['y']"),
    ("npz", npz(x=np.ones((3, 2)), y=np.array([0, 1])), ["body", "y"], "y: has 2 rows, x has 3"),
    ("npz", b"PK\x03\x04 not really a zip", ["body", "file"], "file: not a valid .npz archive"),
]


def test_a_refused_upload_is_a_4xx_naming_the_problem_and_stores_nothing(
        make_app: AppFactory) -> None:
    api = make_app(datasets_quota_bytes=200_000)
    for fmt, body, loc, message in BAD_UPLOADS:
        response = api.post("/datasets", content=body,
                            params={"name": "t", "format": fmt, "wait": True})
        assert response.status_code == 422, (message, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"] == loc and message in error["msg"], (message, error)
    missing_label = api.post("/datasets", content=b"a,b\n1,2\n", params={
        "name": "t", "label": "kind"})  # refused before any ingest, with or without wait
    assert missing_label.status_code == 422 and "no column 'kind'" in missing_label.text
    # An object array, which .npy stores as a pickle (savez's default): never loaded.
    pickled = npz(x=np.array([{"evil": 1}] * 2, dtype=object), y=np.array([0, 1]))
    refused = api.post("/datasets", content=pickled, params={"name": "t", "format": "npz"})
    assert refused.status_code == 422 and "got object" in refused.text
    too_big = api.post("/datasets", content=b"1,2,0\n" * 40_000, params={"name": "t"})
    assert too_big.status_code == 413 and "SYNCSGD_DATASETS_QUOTA_BYTES" in too_big.text
    assert api.get("/datasets").json() == []
    directory = api.app.state.settings.datasets_path  # type: ignore[attr-defined]
    assert [p.name for p in directory.iterdir() if p.name != "builtin"] == []


def test_an_upload_refused_while_ingesting_shows_as_failed_with_the_reason(
        api: TestClient) -> None:
    accepted = api.post("/datasets", content=b"a,b,c\n1,2,0\n3,nan,1\n", params={"name": "t"})
    assert accepted.status_code == 202 and accepted.json()["state"] == "ingesting"
    dataset_id = accepted.json()["id"]
    failed = wait_for(lambda: (d := api.get(f"/datasets/{dataset_id}").json())["state"]
                      != "ingesting" and d, 10, "the ingest to end")
    assert failed["state"] == "failed" and "row 2, column 'b'" in failed["error"]
    refused = api.post("/jobs", json={**SMALL, "data": {"dataset": dataset_id}})
    assert refused.status_code == 422 and "is failed" in refused.text
    assert not (api.app.state.settings.datasets_path / dataset_id).exists()  # type: ignore[attr-defined]
    assert api.delete(f"/datasets/{dataset_id}").status_code == 204


def test_an_upload_is_a_dataset_jobs_can_name(api: TestClient) -> None:
    created = api.post("/datasets", content=four_class_csv(),
                       params={"name": "four", "wait": True})
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert (dataset["rows"], dataset["features"], dataset["classes"]) == (300, 5, 4)
    assert api.get(f"/datasets/{dataset['id']}").json() == dataset
    spec = {**SMALL, "model": {"input_dim": 5, "layers": [
        {"units": 16, "activation": "tanh"}, {"units": 4, "activation": "softmax"}]},
        "data": {"dataset": dataset["id"]}, "epochs": 20, "batch_size": 32}
    job = run_job(api, spec)
    assert job["val_accuracy"] > 0.85
    wrong = api.post("/jobs", json={**spec, "model": {**spec["model"], "input_dim": 6}})
    assert wrong.status_code == 422 and "has 5 features" in wrong.json()["detail"][0]["msg"]
    in_use = api.post("/jobs", json={**spec, "epochs": 5000}).json()["id"]
    busy = api.delete(f"/datasets/{dataset['id']}")
    assert busy.status_code == 409 and in_use in busy.json()["detail"]
    api.post(f"/jobs/{in_use}/cancel")
    wait_job(api, in_use)
    assert api.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert api.get("/datasets").json() == []


def test_conflicts_with_a_job_s_state_are_409s(make_app: AppFactory) -> None:
    api = make_app(fault_injection=True)
    running = api.post("/jobs", json=ENDLESS).json()["id"]
    wait_job(api, running, {"running"})
    for method, path, body, message in [
            ("DELETE", f"/jobs/{running}", None, "is running; cancel it first"),
            ("GET", f"/jobs/{running}/model", None, "weights exist once it succeeded"),
            ("POST", f"/jobs/{running}/predict", {"inputs": [[0.0] * 64]},
             "it predicts once it succeeded"),
            ("POST", "/verify", {"spec": SMALL, "workers": 2, "steps": 2},
             "workers: 2 x 1 CPU needed, 0 free now (running jobs hold the rest)")]:
        response = api.request(method, path, json=body)
        assert response.status_code == 409, (path, response.text)
        assert message in response.json()["detail"]
    assert api.post(f"/jobs/{running}/cancel").status_code == 200
    assert wait_job(api, running)["state"] == "cancelled"
    again = api.post(f"/jobs/{running}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    late = api.post(f"/jobs/{running}/faults", json={"rank": 0, "step": 1})
    assert late.status_code == 409 and "faults go to queued or running jobs" in late.text
    assert api.delete(f"/jobs/{running}").status_code == 204
    assert api.get(f"/jobs/{running}").status_code == 404


def test_other_refusals_name_the_field_or_the_setting(make_app: AppFactory) -> None:
    api = make_app(max_request_bytes=4096, datasets_quota_bytes=1_000_000)
    job_id = run_job(api, SMALL)["id"]
    generated = api.post("/jobs", json={**SMALL, "model": {"input_dim": 100, "layers": [
        {"units": 2, "activation": "softmax"}]}, "data": {"dataset": "synthetic", "synthetic": {
            "samples": 20_000, "features": 100, "outputs": 2}}})
    assert generated.status_code == 422
    (error,) = generated.json()["detail"]
    assert error["loc"] == ["body", "data", "synthetic"]
    assert "SYNCSGD_DATASETS_QUOTA_BYTES" in error["msg"]
    huge = api.post("/jobs", content=b"{" + b" " * 8192 + b"}",
                    headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "SYNCSGD_MAX_REQUEST_BYTES" in huge.json()["detail"]
    ragged = api.post(f"/jobs/{job_id}/predict", json={"inputs": [[0.0] * 64, [0.0] * 3]})
    assert ragged.status_code == 422 and ragged.json()["detail"][0]["loc"] == ["body", "inputs"]
    narrow = api.post(f"/jobs/{job_id}/predict", json={"inputs": [[0.0] * 3]})
    assert narrow.status_code == 422 and "expected shape (n, 64)" in narrow.text
    drill = api.post(f"/jobs/{job_id}/faults", json={"rank": 0, "step": 1})
    assert drill.status_code == 403 and "SYNCSGD_FAULT_INJECTION" in drill.text
    bad_id = api.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "C7+MA}2G"})
    assert bad_id.status_code == 400 and "Last-Event-ID" in bad_id.json()["detail"]
    verify = api.post("/verify", json={"spec": SMALL, "workers": 3, "steps": 2})
    assert verify.status_code == 422
    assert verify.json()["detail"][0]["loc"] == ["body", "spec", "workers"]
    # Found by fuzzing: both were 500s.
    too_few = api.post("/verify", json={"spec": {**SMALL, "deterministic": True,
                                                 "micro_shards": 1}, "workers": 2, "steps": 2})
    assert too_few.status_code == 422 and "at least one per worker" in too_few.text
    diverging = api.post("/verify", json={"spec": {
        "model": {"input_dim": 8, "layers": [{"units": 1, "activation": "identity"}]},
        "loss": "mse", "optimizer": {"lr": 10, "momentum": 0.9}, "data": {
            "dataset": "synthetic", "synthetic": {"samples": 500, "features": 8, "outputs": 1,
                                                  "task": "regression"}}},
        "workers": 2, "steps": 50})
    assert diverging.status_code == 422, diverging.text
    assert "training failed" in diverging.text and "diverged at step" in diverging.text
    named = api.post("/jobs", json={**SMALL, "name": "a\nFAKE log line"})
    assert named.status_code == 422 and named.json()["detail"][0]["loc"] == ["body", "name"]


def test_event_streams_past_the_cap_get_a_503(make_app: AppFactory) -> None:
    api = make_app(max_event_streams=1)
    job_id = api.post("/jobs", json=ENDLESS).json()["id"]
    wait_job(api, job_id, {"running"})
    with api.stream("GET", f"/jobs/{job_id}/events") as first:
        assert next(first.iter_lines()).startswith(("event:", "id:", "data:", ":"))
        refused = api.get(f"/jobs/{job_id}/events")
        assert refused.status_code == 503 and "SYNCSGD_MAX_EVENT_STREAMS" in refused.text
        api.post(f"/jobs/{job_id}/cancel")
    wait_job(api, job_id)
    assert streamed_steps(collect_events(api, job_id))  # the slot is free again


def test_a_drill_kill_restarts_the_job_which_ends_with_every_step_once(
        make_app: AppFactory) -> None:
    """In process, a ``kill`` is reported as the rank's death (the real SIGKILL is in
    tests/e2e/test_fault_tolerance.py); the driver restores the state at the last chunk's
    end (step 25): only the chunk in flight (26..30) is computed again."""
    api = make_app(cpus=1, fault_injection=True)
    blocker = api.post("/jobs", json={**ENDLESS, "workers": 1}).json()["id"]
    spec = {**SMALL, "workers": 1, "epochs": 4, "checkpoint_every": 20, "steps_per_chunk": 5}
    job_id = api.post("/jobs", json=spec).json()["id"]
    assert api.get(f"/jobs/{job_id}").json()["state"] == "queued"  # armed before it starts
    wrong_rank = api.post(f"/jobs/{job_id}/faults", json={"rank": 1, "step": 30})
    assert wrong_rank.status_code == 422 and "has ranks 0..0" in wrong_rank.text
    assert api.post(f"/jobs/{job_id}/faults", json={"rank": 0, "step": 30}).status_code == 202
    api.post(f"/jobs/{blocker}/cancel")
    done = wait_job(api, job_id)
    assert done["state"] == "succeeded" and done["restarts"] == 1
    assert done["restart_log"][0]["from_step"] == 25
    assert done["restart_log"][0]["lost_steps"] == 5
    assert "worker process died" in done["restart_log"][0]["cause"]
    curve = api.get(f"/jobs/{job_id}/curve").json()["points"]
    assert [p["step"] for p in curve] == list(range(1, 93))
    params, _ = single_process_run(JobSpec.model_validate(spec))
    model = Network.load(io.BytesIO(api.get(f"/jobs/{job_id}/model").content))
    assert model.params.tobytes() == params.tobytes()  # the restart changed nothing


def test_an_event_stream_opens_with_a_short_lived_ticket_for_its_job(
        make_app: AppFactory) -> None:
    """Where reads need the token, a browser's EventSource (which cannot send it) opens a
    job's stream with a ticket asked for with the token: for that job only, for a while."""
    api = make_app(token="s3cret", auth_reads=True)
    good = {"Authorization": "Bearer s3cret"}
    api.headers.update(good)
    job_id, other_id = (run_job(api, SMALL)["id"] for _ in range(2))
    del api.headers["Authorization"]
    assert api.post(f"/jobs/{job_id}/events/ticket").status_code == 401  # needs the token
    issued = api.post(f"/jobs/{job_id}/events/ticket", headers=good).json()
    assert issued["expires_in_s"] == 60

    def stream(target: str, ticket: str) -> Any:
        return api.get(f"/jobs/{target}/events", params={"ticket": ticket})

    assert api.get(f"/jobs/{job_id}/events").status_code == 401
    opened = stream(job_id, issued["ticket"])
    assert opened.status_code == 200 and "event: points" in opened.text
    assert "event: state" in opened.text
    assert stream(other_id, issued["ticket"]).status_code == 401  # another job's
    assert stream(job_id, issued["ticket"][:-2] + "xx").status_code == 401  # forged
    assert api.get(f"/jobs/{job_id}", params={"ticket": issued["ticket"]}).status_code == 401
    app: Any = api.app
    app.state.tickets.ttl_s = -1  # (as if the clock moved past its expiry)
    assert stream(job_id, issued["ticket"]).status_code == 401
    document = api.get("/openapi.json", headers=good).json()
    assert document["paths"]["/jobs/{job_id}/events"]["get"]["security"] == [
        {"bearerToken": []}, {"eventTicket": []}]


def test_the_document_states_security_and_operations_as_configured(
        make_app: AppFactory) -> None:
    """No token: no security anywhere. A token: changes need it, reads only where reads
    need it, /healthz optional. Fault injection and registration appear only when on."""
    def document(**settings: Any) -> dict[str, Any]:
        api = make_app(**settings)
        headers = {"Authorization": "Bearer s3cret"} if "token" in settings else {}
        doc: dict[str, Any] = api.get("/openapi.json", headers=headers).json()
        return doc

    def security(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
        return {(method, path): op.get("security") for path, ops in doc["paths"].items()
                for method, op in ops.items()}

    plain = document()
    assert "securitySchemes" not in plain["components"]
    assert set(security(plain).values()) == {None}
    assert "/jobs/{job_id}/faults" not in plain["paths"]
    assert "/datasets/register" not in plain["paths"]
    writes = security(document(token="s3cret"))
    assert writes[("post", "/jobs")] == [{"bearerToken": []}]
    assert writes[("get", "/jobs")] is None and writes[("get", "/healthz")] is None
    reads = security(document(token="s3cret", auth_reads=True))
    assert reads[("get", "/jobs")] == [{"bearerToken": []}]
    assert reads[("get", "/healthz")] == [{}, {"bearerToken": []}]
    drills = document(fault_injection=True, datasets_root=str(Path.cwd()))
    assert {"/jobs/{job_id}/faults", "/datasets/register"} <= set(drills["paths"])
    job = drills["paths"]["/jobs/{job_id}"]["get"]["responses"]
    assert job["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}


def test_a_method_a_path_lacks_answers_405_naming_every_method_it_has(api: Any) -> None:
    answer = api.request("PUT", "/datasets/ds_0")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET"


def test_a_token_guards_every_operation_but_liveness(make_app: AppFactory) -> None:
    api = make_app(token="s3cret", auth_reads=True)
    good = {"Authorization": "Bearer s3cret"}
    job_id = api.post("/jobs", json=SMALL, headers=good).json()["id"]
    paths = api.get("/openapi.json").json()["paths"]
    open_ops = []
    for path, operations in paths.items():
        for method in operations:
            url = path.replace("{job_id}", job_id).replace("{dataset_id}", "ds_0")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                response = api.request(method.upper(), url, headers=headers, json={})
                if response.status_code != 401:
                    open_ops.append((method.upper(), path))
                    break
                assert response.headers["www-authenticate"] == "Bearer"
    assert sorted(open_ops) == [("GET", "/healthz")]
    assert len(paths) >= 12
    assert api.get(f"/jobs/{job_id}", headers=good).status_code == 200
    anonymous = api.get("/healthz").json()  # liveness, without job ids or counts
    assert anonymous["status"] == "ok" and anonymous["running"] is None
    assert sum(api.get("/healthz", headers=good).json()["jobs"].values()) == 1
    assert api.get("/metrics", headers=good).status_code == 200
