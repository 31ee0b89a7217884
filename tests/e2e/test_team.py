"""A service for a team, on a real service with real Ray: accounts made with the
operator's CLI against the data dir, each user seeing and changing only its own jobs
and datasets (another's id is a 404, everywhere an id is taken), the admin seeing all,
tokens kept as hashes and rotated at once, a CPU quota, and the audit log."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import SYNCSGD, Server, start_server
from tests.e2e.test_dashboard import open_page
from tests.helpers import four_class_csv, wait_for, wait_job

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "team-admin-t0ken"
SMALL = {"name": "mine", "workers": 1, "epochs": 1, "seed": 1,
         "model": {"input_dim": 64, "layers": [{"units": 16, "activation": "relu"},
                                               {"units": 10, "activation": "softmax"}]}}
#: A body each id-taking operation accepts, so that only the id can refuse it.
BODIES: dict[str, Any] = {"/jobs/{job_id}/predict": {"inputs": [[0.0] * 64]},
                          "/jobs/{job_id}/faults": {"rank": 0, "step": 1}}


def users(data_dir: Path, *args: str) -> str:
    done = subprocess.run([SYNCSGD, "users", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("team") / "data"
    data_dir.mkdir()
    tokens = {"a": users(data_dir, "add", "a", "--max-cpus", "1"), "b": users(data_dir, "add", "b")}
    server = start_server(data_dir, token=ADMIN_TOKEN)
    yield server, tokens
    server.stop_cleanly()


def as_(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})


def test_another_user_s_ids_are_404_everywhere_and_the_admin_sees_all(
        team: tuple[Server, dict[str, str]]) -> None:
    server, tokens = team
    a, b, admin = as_(server, tokens["a"]), as_(server, tokens["b"]), as_(server, ADMIN_TOKEN)
    job = b.post("/jobs", json=SMALL).json()
    assert job["owner"] == "b"
    assert wait_job(b, job["id"])["state"] == "succeeded"
    dataset = b.post("/datasets", content=four_class_csv(), params={
        "name": "b-data", "label": "label", "wait": True}).json()
    assert dataset["owner"] == "b" and dataset["state"] == "ready"

    operations = [(method.upper(), path) for path, item in
                  server.http.get("/openapi.json").json()["paths"].items()
                  if "{job_id}" in path or "{dataset_id}" in path for method in item]
    assert {("GET", "/jobs/{job_id}/events"), ("GET", "/jobs/{job_id}/timeline"),
            ("DELETE", "/datasets/{dataset_id}")} <= set(operations) and len(operations) == 12
    for method, path in operations:
        url = path.replace("{job_id}", job["id"]).replace("{dataset_id}", dataset["id"])
        refused = a.request(method, url, json=BODIES.get(path))
        assert refused.status_code == 404, (method, path, refused.text)
        assert job["id"] in refused.text or dataset["id"] in refused.text
    # B's dataset in A's spec is as one that does not exist.
    spec = {**SMALL, "model": {"input_dim": 5, "layers": [{"units": 4, "activation": "softmax"}]},
            "data": {"dataset": dataset["id"]}}
    unknown = a.post("/jobs", json=spec)
    assert unknown.status_code == 422 and "has been uploaded" in unknown.text
    assert b.post("/jobs", json={**spec, "epochs": 1}).status_code == 201  # B may

    assert a.get("/jobs").json()["total"] == 0 and a.get("/datasets").json() == []
    assert {j["owner"] for j in b.get("/jobs").json()["items"]} == {"b"}
    assert {j["owner"] for j in admin.get("/jobs").json()["items"]} == {"b"}
    for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/curve", f"/jobs/{job['id']}/model",
                 f"/jobs/{job['id']}/timeline", f"/datasets/{dataset['id']}"):
        assert admin.get(path).status_code == 200, path
    assert admin.delete(f"/jobs/{job['id']}").status_code == 204
    assert server.http.get("/jobs").status_code == 401  # with accounts, reads need a token
    # /metrics names every job: an admin's, and free of user names (the operator's default).
    assert a.get("/metrics").status_code == 403
    metrics = admin.get("/metrics")
    assert metrics.status_code == 200 and "syncsgd_jobs{" in metrics.text
    assert "user=" not in metrics.text and 'b"' not in metrics.text


def test_tokens_are_stored_hashed_and_a_rotated_one_stops_at_once(
        team: tuple[Server, dict[str, str]]) -> None:
    server, tokens = team
    stored = b"".join(p.read_bytes() for p in server.data_dir.glob("syncsgd.sqlite3*"))
    for token in tokens.values():
        assert token.startswith("sgd_") and token.encode() not in stored
        assert token.split("_", 2)[2].encode() not in stored  # the secret (may hold "_")
    new = users(server.data_dir, "token", "b", "--rotate")
    assert as_(server, tokens["b"]).get("/jobs").status_code == 401
    assert as_(server, new).get("/jobs").status_code == 200
    tokens["b"] = new
    listed = users(server.data_dir, "list")
    assert "a" in listed and "b" in listed and new not in listed


def test_a_cpu_quota_refuses_a_second_concurrent_job_naming_it(
        team: tuple[Server, dict[str, str]]) -> None:
    server, tokens = team
    a = as_(server, tokens["a"])
    first = a.post("/jobs", json={**SMALL, "epochs": 5000}).json()
    second = a.post("/jobs", json=SMALL)
    assert second.status_code == 429
    assert "quota max_cpus of user a" in second.text and "over 1" in second.text
    assert a.post(f"/jobs/{first['id']}/cancel").status_code == 200
    wait_for(lambda: a.get(f"/jobs/{first['id']}").json()["state"] == "cancelled", 60,
             "the cancel")
    assert a.post("/jobs", json=SMALL).status_code == 201  # under the quota again


def test_the_audit_log_names_who_did_what(team: tuple[Server, dict[str, str]]) -> None:
    server, _ = team
    lines = [json.loads(line) for line in
             (server.data_dir / "audit.log").read_text().splitlines()]
    actions = {(line["user"], line["action"]) for line in lines}
    assert {("b", "submit"), ("b", "upload"), ("admin", "delete"), ("a", "submit"),
            ("a", "cancel")} <= actions
    assert {action for _, action in actions} >= {"user-add", "token-rotate"}
    assert all(line["time"] and line["target"] for line in lines)


def test_the_page_shows_whose_jobs_they_are(team: tuple[Server, dict[str, str]]) -> None:
    server, tokens = team
    with open_page(server.url, token=ADMIN_TOKEN) as page:
        page.wait_for_selector("tr[data-job]")
        owners = page.eval_on_selector_all(
            "tr[data-job]", "rows => rows.map((r) => r.children[2].textContent)")
        assert set(owners) == {"a", "b"}
    with open_page(server.url, token=tokens["a"]) as page:
        page.wait_for_selector("tr[data-job]")
        owners = page.eval_on_selector_all(
            "tr[data-job]", "rows => rows.map((r) => r.children[2].textContent)")
        assert set(owners) == {"a"}  # a user's page lists its own jobs
