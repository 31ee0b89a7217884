"""Bad input and load against a real service: dataset uploads, schema-driven fuzzing of
the project's own OpenAPI with schemathesis, and 50 jobs from 10 concurrent clients."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import Server, start_server, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """4 CPUs and small limits: fuzzed job specs that pass validation stay tiny."""
    srv = start_server(tmp_path_factory.mktemp("fuzz") / "data", ray_num_cpus=4,
                       max_concurrent_jobs=4, max_upload_bytes=200_000,
                       max_epoch_samples=20_000, max_parameters=50_000, max_workers_per_job=2,
                       max_dataset_values=2_000_000)
    yield srv
    srv.stop()


def upload(server: Server, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{server.url}/datasets", content=body,
                      params={"name": "test", **params}, timeout=30)


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def snapshot(server: Server) -> tuple[Any, ...]:
    """What is stored: datasets, jobs, and the files under the data dir."""
    files = sorted(str(p.relative_to(server.data_dir)) for p in
                   (server.data_dir / "datasets").glob("*") if p.is_file())
    return (httpx.get(f"{server.url}/datasets").json(),
            httpx.get(f"{server.url}/jobs", params={"limit": 500}).json(), files)


def test_an_uploaded_csv_trains_like_any_dataset(server: Server) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)  # 4 classes
    text = "a,b,c,d,e,label\n" + "\n".join(
        ",".join(f"{v:.6f}" for v in row) + f",{label}" for row, label in zip(x, y, strict=True))
    created = upload(server, text.encode(), format="csv")
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert dataset["id"].startswith("ds_") and (dataset["rows"], dataset["features"],
                                                dataset["classes"]) == (300, 5, 4)
    assert dataset in httpx.get(f"{server.url}/datasets").json()
    assert (server.data_dir / "datasets" / f"{dataset['id']}.npz").is_file()

    spec = {"model": {"input_dim": 5, "layers": [{"units": 16, "activation": "tanh"},
                                                 {"units": 4, "activation": "softmax"}]},
            "data": {"dataset": dataset["id"]}, "optimizer": {"lr": 0.2, "momentum": 0.9},
            "epochs": 30, "batch_size": 32, "workers": 2, "allreduce": "mpi"}
    job_id = httpx.post(f"{server.url}/jobs", json=spec).json()["id"]
    job = wait_for(lambda: (j := httpx.get(f"{server.url}/jobs/{job_id}").json())["state"] in (
        "succeeded", "failed") and j, 120, "the job to end", 0.2)
    assert job["state"] == "succeeded", job["error"]
    assert job["val_accuracy"] > 0.85
    wrong = httpx.post(f"{server.url}/jobs", json={**spec, "model": {**spec["model"],
                                                                      "input_dim": 6}})
    assert wrong.status_code == 422 and "has 5 features" in wrong.text
    unknown = httpx.post(f"{server.url}/jobs",
                         json={**spec, "data": {"dataset": "ds_0000000000000000"}})
    assert unknown.status_code == 422 and "has been uploaded" in unknown.text

    regression = npz(x=rng.standard_normal((50, 3)), y=rng.standard_normal((50, 2)))
    created = upload(server, regression, format="npz", task="regression")
    assert created.status_code == 201 and created.json()["classes"] is None
    assert created.json()["outputs"] == 2


BAD_UPLOADS = [
    ("csv", b"1,2,0\n3,nan,1\n", "x: contains NaN or inf (first in row 2)"),
    ("csv", b"1,2,0\n3,inf,1\n", "x: contains NaN or inf (first in row 2)"),
    ("csv", b"1,2,0\n3,4\n", "row 2: has 2 values, expected 3 (ragged rows)"),
    ("csv", b"1,2,0\n3,4,-1\n", "y: class labels must be integers in [0, 65536), found"),
    ("csv", b"1,2,0\n3,4,1.5\n", "y: class labels must be integers"),
    ("csv", b"1,2,0\n3,abc,1\n", "row 2, column 2: 'abc' is not a number"),
    ("csv", b"\xff\xfe\x00", "file: not UTF-8 text"),
    ("csv", b"", "file: no data rows"),
    ("npz", npz(x=np.array([[1, None], [2, 3]], dtype=object), y=np.array([0, 1])),
     "npz: object arrays (pickle) are not accepted"),
    ("npz", npz(x=np.ones((3, 2))), "npz: needs arrays 'x' and 'y'; missing ['y']"),
    ("npz", npz(x=np.ones((3, 2)), y=np.array(["a", "b", "c"])), "y: must be numbers"),
    ("npz", npz(x=np.ones((3, 2)), y=np.array([0, 1])), "y: has 2 rows, x has 3"),
    ("npz", b"PK\x03\x04 not really a zip", "file: not a valid .npz archive"),
]


def test_every_bad_upload_gets_its_4xx_and_nothing_stored_changes(server: Server) -> None:
    before = snapshot(server)
    for fmt, body, message in BAD_UPLOADS:
        response = upload(server, body, format=fmt)
        assert response.status_code == 422, (message, response.text)
        assert message in response.json()["detail"], (message, response.text)
    # The classic attack: an object array, which the .npy format stores as a pickle
    # (write_array pickles it by default). The service must refuse it, never load it.
    pickled = io.BytesIO()
    np.lib.format.write_array(pickled, np.array([{"evil": 1}], dtype=object))
    assert upload(server, pickled.getvalue(), format="npz").status_code == 422
    too_big = upload(server, b"1,2,0\n" * 40_000, format="csv")
    assert too_big.status_code == 413 and "SYNCSGD_MAX_UPLOAD_BYTES" in too_big.text
    path_trick = upload(server, b"1,2,0\n3,4,1\n", format="csv", name="../../../etc/passwd")
    assert path_trick.status_code == 201  # a name is only a label: the file gets an id
    after = snapshot(server)
    assert after[1:] == (before[1], sorted([*before[2], f"datasets/{path_trick.json()['id']}"
                                                         ".npz"]))
    assert not (server.data_dir.parent / "etc").exists()


def test_schemathesis_fuzzing_finds_no_server_error(server: Server) -> None:
    """Positive and negative cases for every operation of the live OpenAPI document.

    Derandomized, so that CI replays the same cases every run; explore other cases with
    a different ``max_examples`` locally. ``/verify`` trains twice, so it gets longer."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    keep_id = httpx.post(f"{server.url}/jobs", json={"epochs": 1, "allreduce": "local",
                                                     "model": {"input_dim": 64, "layers": [
                                                         {"units": 8}, {"units": 10,
                                                                        "activation": "softmax"}]}}
                         ).json()["id"]
    wait_for(lambda: httpx.get(f"{server.url}/jobs/{keep_id}").json()["state"] == "succeeded",
             60, "the job to keep")
    kept = (httpx.get(f"{server.url}/jobs/{keep_id}").json(),
            httpx.get(f"{server.url}/jobs/{keep_id}/curve").content)

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    calls: list[tuple[str, str, int]] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(base_url=server.url,
                                     timeout=120 if case.path == "/verify" else 15)
                calls.append((case.method, case.path, response.status_code))
                assert response.status_code < 500, (case.method, case.formatted_path,
                                                    case.body, response.text[:300])
            try:
                call()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): positive covers it.
                assert mode is GenerationMode.NEGATIVE

    assert len(calls) >= 500, len(calls)
    assert all(status < 500 for _, _, status in calls)
    assert (httpx.get(f"{server.url}/jobs/{keep_id}").json(),
            httpx.get(f"{server.url}/jobs/{keep_id}/curve").content) == kept
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_fifty_jobs_from_ten_concurrent_clients_all_succeed(server: Server) -> None:
    spec = {"model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                                  {"units": 10, "activation": "softmax"}]},
            "epochs": 2, "workers": 1, "allreduce": "local"}
    submitted: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(5):
                response = http.post("/jobs", json={**spec, "name": f"load-{number}-{i}",
                                                     "seed": number * 5 + i})
                with lock:
                    if response.status_code == 201:
                        submitted.append(response.json()["id"])
                    else:
                        errors.append(response.text)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and len(submitted) == len(set(submitted)) == 50

    def states() -> list[str]:
        return [httpx.get(f"{server.url}/jobs/{job_id}").json()["state"] for job_id in submitted]

    wait_for(lambda: all(s in ("succeeded", "failed", "cancelled") for s in states()), 300,
             "all 50 jobs to end", 1.0)
    assert states() == ["succeeded"] * 50
    listed = httpx.get(f"{server.url}/jobs", params={"limit": 500}).json()["items"]
    load_jobs = [j for j in listed if j["name"].startswith("load-")]
    assert sorted(j["id"] for j in load_jobs) == sorted(submitted)  # none lost, none doubled
    assert {j["name"] for j in load_jobs} == {f"load-{n}-{i}" for n in range(10)
                                               for i in range(5)}
    assert all(j["step"] == j["total_steps"] == 46 for j in load_jobs)
    json.dumps(load_jobs)  # every record serialises
