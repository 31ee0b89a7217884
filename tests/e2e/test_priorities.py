"""Priorities, preemption and fair share on a real service with real Ray (2 CPUs) and
accounts made with the operator's CLI.

- A high job takes every CPU from a running low one within a chunk or two; the low one
  goes back to the queue, resumes from its state at that chunk, and ends with the bits
  of the same spec run alone, with one curve point per step.
- A low elastic job gives CPUs back by shrinking to its min, not by stopping.
- A user's six queued jobs do not hold back another user's one: it starts before the
  busy user's later ones.

The reference bits come from the same spec run alone on 2 workers: deterministic mode
gives the same bits at every world size, and a resume changes none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import start_server
from tests.e2e.test_dashboard import open_page
from tests.e2e.test_elastic import ELASTIC
from tests.e2e.test_team import ADMIN_TOKEN, as_, users
from tests.helpers import curve_steps, model_params, wait_for, wait_job

pytestmark = pytest.mark.slow

TRAIN = {**ELASTIC, "name": "train", "workers": 2}  # 1,500 steps, 20 a chunk
CHUNK = TRAIN["steps_per_chunk"]
SHORT = {**ELASTIC, "name": "short", "workers": 1, "max_steps": 100}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("priorities") / "data"


@pytest.fixture(scope="module")
def clients(data_dir: Path) -> Iterator[dict[str, httpx.Client]]:
    """A client per user of one service: a and b may not use priority high, c may."""
    data_dir.mkdir()
    tokens = {"a": users(data_dir, "add", "a"), "b": users(data_dir, "add", "b"),
              "c": users(data_dir, "add", "c", "--may-use-high")}
    server = start_server(data_dir, token=ADMIN_TOKEN, fault_injection="true",
                          metrics_user_labels="true")
    clients = {name: as_(server, token) for name, token in
               {**tokens, "admin": ADMIN_TOKEN}.items()}
    yield clients
    server.stop_cleanly()


@pytest.fixture(scope="module")
def reference(clients: dict[str, httpx.Client]) -> str:
    """sha256 of TRAIN's weights, run alone."""
    job_id = clients["b"].post("/jobs", json=TRAIN).json()["id"]
    job = wait_job(clients["b"], job_id, timeout_s=240)
    assert job["state"] == "succeeded", job["error"]
    return hashlib.sha256(model_params(clients["b"], job_id)).hexdigest()


def running_on(http: httpx.Client, job_id: str, size: int) -> bool:
    job = http.get(f"/jobs/{job_id}").json()
    return bool(job["world_size"] == size and job["step"] > 0)


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def succeeded(http: httpx.Client, job_id: str) -> dict[str, Any]:
    job = wait_job(http, job_id, timeout_s=240)
    assert job["state"] == "succeeded", job["error"]
    return job


def newest_checkpoint(data_dir: Path, job_id: str) -> int | None:
    steps = [int(path.stem.split("-")[1])
             for path in (data_dir / "checkpoints" / job_id).glob("step-*.npz")]
    return max(steps, default=None)


def test_a_high_job_preempts_a_low_one_which_resumes_to_the_same_bits(
        clients: dict[str, httpx.Client], reference: str, data_dir: Path) -> None:
    a, b, c = clients["a"], clients["b"], clients["c"]
    refused = a.post("/jobs", json={**SHORT, "priority": "high"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "priority"]
    assert "may not submit priority high" in refused.text

    # The low job runs at a second a chunk (a drill slows rank 0 by 50 ms a step, which
    # changes no bit), so that a chunk's end is far longer off than the requests take.
    # The drill is armed while a blocker holds the CPUs: it strikes from step 1.
    blocker = a.post("/jobs", json={**TRAIN, "name": "blocker", "max_steps": 0}).json()["id"]
    wait_for(lambda: running_on(a, blocker, 2), 60, "the blocker on every CPU")
    low = b.post("/jobs", json={**TRAIN, "priority": "low"}).json()["id"]
    slow = {"rank": 0, "step": 1, "action": "slow", "seconds": 0.05}
    assert b.post(f"/jobs/{low}/faults", json=slow).status_code == 202
    a.post(f"/jobs/{blocker}/cancel")
    wait_for(lambda: running_on(b, low, 2) and b.get(f"/jobs/{low}").json()["step"] > CHUNK,
             60, "the low job on every CPU, past its first chunk")
    submitted_at = b.get(f"/jobs/{low}").json()["step"]
    # The operator let /metrics name users: B's job holds both CPUs; A has no job left.
    metrics = clients["admin"].get("/metrics").text
    assert 'syncsgd_user_cpus{user="b"} 2.0' in metrics and 'user="a"' not in metrics
    assert a.get("/metrics").status_code == 403  # every user's jobs are in it
    high = c.post("/jobs", json={**SHORT, "workers": 2, "priority": "high"}).json()["id"]
    waiting = wait_job(b, low, {"queued"}, timeout_s=60)
    assert waiting["waiting"] == f"preempted by {high} (priority high)"
    # Its state at the preemption is on disk too (its spec checkpoints every 200 steps):
    # a service that died now would resume it from there.
    stopped_at = wait_for(lambda: b.get(f"/jobs/{low}").json()["preemptions"], 30,
                          "the preemption on the record")[0]["step"]
    assert wait_for(lambda: newest_checkpoint(data_dir, low), 30,
                    "the preemption's checkpoint") == stopped_at

    high_job = succeeded(c, high)
    job = succeeded(b, low)
    (preemption,) = job["preemptions"]
    assert preemption["by"] == high and preemption["by_priority"] == "high"
    # At the end of the chunk in flight when the high job came (the step read before the
    # submission may lag it by the chunk just recorded).
    assert preemption["step"] % CHUNK == 0
    assert submitted_at < preemption["step"] <= submitted_at + 2 * CHUNK
    assert when(preemption["at"]) <= when(high_job["started_at"])
    assert when(high_job["finished_at"]) <= when(job["finished_at"])
    assert job["waiting"] is None and job["restarts"] == 0 and job["resize_log"] == []
    assert "\nsyncsgd_preemptions 1.0\n" in clients["admin"].get("/metrics").text

    # Resumed from the chunk's state in memory: every step once, and the same bits.
    assert curve_steps(b, low) == list(range(1, TRAIN["max_steps"] + 1))
    assert hashlib.sha256(model_params(b, low)).hexdigest() == reference


def test_a_low_elastic_job_shrinks_to_its_min_instead_of_stopping(
        clients: dict[str, httpx.Client], reference: str) -> None:
    a, b = clients["a"], clients["b"]
    low = b.post("/jobs", json={**TRAIN, "workers": {"min": 1, "max": 2},
                                "priority": "low"}).json()["id"]
    wait_for(lambda: running_on(b, low, 2), 60, "the elastic job on every CPU")
    normal = a.post("/jobs", json=SHORT).json()["id"]  # priority normal
    normal_job = succeeded(a, normal)
    job = succeeded(b, low)

    assert job["preemptions"] == []
    shrink, *later = job["resize_log"]
    assert (shrink["from_workers"], shrink["to_workers"]) == (2, 1)
    assert shrink["cause"] == f"the service took CPUs back for {normal} (priority normal)"
    assert shrink["step"] % CHUNK == 0
    assert when(shrink["at"]) <= when(normal_job["started_at"])
    assert all(r["cause"] == "CPUs came free" and r["to_workers"] == 2 for r in later)
    assert curve_steps(b, low) == list(range(1, TRAIN["max_steps"] + 1))
    assert hashlib.sha256(model_params(b, low)).hexdigest() == reference

    # The page shows each job's priority, and offers it in the form.
    token = b.headers["Authorization"].removeprefix("Bearer ")
    with open_page(str(b.base_url).rstrip("/"), token=token) as page:
        page.wait_for_selector(f"tr[data-job='{low}']")
        assert page.text_content(f"tr[data-job='{low}'] td.state .priority") == "low"
        options = page.eval_on_selector_all("select[name='priority'] option",
                                            "options => options.map((o) => o.textContent)")
        assert page.input_value("select[name='priority']") == "normal"
    assert sorted(options) == ["high", "low", "normal"]


def test_a_user_s_one_job_starts_before_another_s_queued_six(
        clients: dict[str, httpx.Client]) -> None:
    a, b = clients["a"], clients["b"]
    one = {**SHORT, "allreduce": "local", "max_steps": 3000}  # a few seconds each
    mine = [a.post("/jobs", json={**one, "name": f"a{i}"}).json()["id"] for i in range(6)]
    wait_for(lambda: sum(a.get(f"/jobs/{j}").json()["step"] > 0 for j in mine) >= 2, 60,
             "two of A's jobs training on both CPUs")
    theirs = b.post("/jobs", json={**one, "name": "b"}).json()["id"]

    started = {j: when(succeeded(a, j)["started_at"]) for j in mine}
    b_started = when(succeeded(b, theirs)["started_at"])
    # Before B's job: the two of A's running when it came, and at most one more that the
    # scheduler had picked as it was submitted. Never the other three, queued before it.
    before_b = [j for j in mine if started[j] < b_started]
    assert 2 <= len(before_b) <= 3, (b_started, started)
    # A's own jobs kept their order.
    assert [started[j] for j in mine] == sorted(started.values())
