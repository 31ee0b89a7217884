"""Every rank's step timings on a real service with 2 MPI workers: the timeline is a
valid Chrome trace with one track per rank whose spans add up to the split the curve
reports, a request is bounded, and a rank slowed by a drill is reported as a straggler
(an undisturbed run reports none)."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.helpers import collect_events, wait_for, wait_job

pytestmark = pytest.mark.slow

server = service_fixture("timeline", fault_injection="true", timeline_max_steps=500,
                         straggler_factor=2.0, straggler_chunks=3)

SPEC: dict[str, Any] = {
    "name": "timed", "workers": 2, "allreduce": "mpi", "batch_size": 64, "epochs": 100,
    "max_steps": 300, "steps_per_chunk": 10, "seed": 5,
    "model": {"input_dim": 64, "layers": [{"units": 64, "activation": "relu"},
                                          {"units": 10, "activation": "softmax"}]}}
PHASES = ("compute", "wait", "allreduce", "update")


def check_trace_event(event: dict[str, Any]) -> None:
    """The Trace Event format's required fields of the event types the timeline uses."""
    assert isinstance(event["name"], str) and event["ph"] in ("X", "M"), event
    assert isinstance(event["pid"], int) and isinstance(event["tid"], int), event
    assert isinstance(event["ts"], int | float), event
    if event["ph"] == "X":
        assert isinstance(event["dur"], int | float) and event["dur"] >= 0, event
    else:
        assert event["name"] in ("process_name", "thread_name") and "name" in event["args"]


def test_the_timeline_has_a_track_per_rank_adding_up_to_the_curve_s_split(
        server: Server) -> None:
    job_id = server.http.post("/jobs", json=SPEC).json()["id"]
    job = wait_job(server.http, job_id, timeout_s=180)
    assert job["state"] == "succeeded", job["error"]
    assert job["stragglers"] == []  # an undisturbed run: no false report

    trace = server.http.get(f"/jobs/{job_id}/timeline",
                            params={"from_step": 1, "to_step": 300}).json()
    events = trace["traceEvents"]
    for event in events:
        check_trace_event(event)
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e["name"] == "thread_name"}
    assert sorted(threads.values()) == ["rank 0", "rank 1"]
    nodes = [e["args"]["name"] for e in events if e["name"] == "process_name"]
    assert nodes == [f"node {job['ranks'][0]['node']}"]  # both ranks on this machine
    spans = [e for e in events if e["ph"] == "X"]
    assert {(e["pid"], e["tid"]) for e in spans} == set(threads)
    assert len(spans) == 2 * 300 * len(PHASES)

    # Rank 0's spans are the split its curve reports, step by step.
    curve = server.http.get(f"/jobs/{job_id}/curve").json()["points"]
    assert [p["step"] for p in curve] == list(range(1, 301))
    rank0 = {(e["args"]["step"], e["name"]): e for e in spans if e["tid"] == 0}
    for point in curve:
        step = point["step"]
        for phase in PHASES:
            assert math.isclose(rank0[(step, phase)]["dur"] / 1e6, point[phase],
                                rel_tol=1e-9, abs_tol=1e-12), (step, phase)
        # The phases follow each other: compute, wait, all-reduce, update.
        for before, after in itertools.pairwise(PHASES):
            first, then = rank0[(step, before)], rank0[(step, after)]
            assert math.isclose(first["ts"] + first["dur"], then["ts"], abs_tol=1e-3)
        if step > 1:  # each step starts after the previous one's update
            last = rank0[(step - 1, "update")]
            assert rank0[(step, "compute")]["ts"] >= last["ts"] + last["dur"] - 1000  # 1 ms

    # Bounded: a million steps is refused, naming the limit; a page is at most the limit.
    huge = server.http.get(f"/jobs/{job_id}/timeline", params={"from_step": 1,
                                                                "to_step": 10**6})
    assert huge.status_code == 422 and "SYNCSGD_TIMELINE_MAX_STEPS" in huge.text
    assert huge.json()["detail"][0]["loc"] == ["query", "to_step"]
    newest = server.http.get(f"/jobs/{job_id}/timeline").json()
    assert newest["otherData"]["steps"] == [1, 300]
    page = server.http.get(f"/jobs/{job_id}/timeline", params={"from_step": 250}).json()
    assert page["otherData"]["steps"] == [250, 300]


def compute_gauges(server: Server, job_id: str) -> dict[int, float]:
    text = server.http.get("/metrics").text
    found = re.findall(rf'^syncsgd_rank_compute_seconds{{job="{job_id}",rank="(\d+)"}} (\S+)$',
                       text, re.MULTILINE)
    return {int(rank): float(value) for rank, value in found}


def test_a_slow_rank_is_reported_as_a_straggler_within_a_few_chunks(server: Server) -> None:
    slow = {**SPEC, "name": "slowed", "max_steps": 2000}
    job_id = server.http.post("/jobs", json=slow).json()["id"]
    refused = server.http.post(f"/jobs/{job_id}/faults", json={"rank": 1, "step": 20,
                                                                "action": "slow", "seconds": 0})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == [
        "body", "seconds"]
    armed = server.http.post(f"/jobs/{job_id}/faults", json={
        "rank": 1, "step": 20, "action": "slow", "seconds": 0.02})
    assert armed.status_code == 202, armed.text

    found = wait_for(lambda: server.http.get(f"/jobs/{job_id}").json()["stragglers"], 120,
                     "a straggler report")
    (straggler,) = found
    assert straggler["rank"] == 1 and straggler["factor"] >= 2.0
    assert straggler["node"] == server.http.get(f"/jobs/{job_id}").json()["ranks"][1]["node"]
    assert straggler["compute_s"] >= 0.02
    assert straggler["step"] <= 20 + 6 * SPEC["steps_per_chunk"], "not within a few chunks"
    gauges = compute_gauges(server, job_id)
    assert gauges[1] >= 0.02 > gauges[0]
    server.http.post(f"/jobs/{job_id}/cancel")
    events = collect_events(server.http, job_id)
    reported = [data for _, event, data in events if event == "straggler"]
    assert [s["rank"] for s in reported] == [1]  # once, while it stays slow
    assert wait_job(server.http, job_id)["state"] == "cancelled"
