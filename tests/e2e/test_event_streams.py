"""Many clients following one job, against a real service: 500 event streams at once,
while the API keeps answering within a second, and no client gets a point twice, a
reconnecting one included."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Server, service_fixture
from tests.helpers import wait_for, wait_job

pytestmark = pytest.mark.slow

server = service_fixture("streams", max_event_streams=600)
# ~25 ms a step, chunks of about a second (the default): a few hundred points reach
# every client in the test's seconds.
LONG = {"model": {"input_dim": 64, "layers": [{"units": 2048, "activation": "relu"},
                                              {"units": 2048, "activation": "relu"},
                                              {"units": 10, "activation": "softmax"}]},
        "epochs": 5000, "workers": 1, "allreduce": "local"}
CLIENTS = 500


async def follow(client: httpx.AsyncClient, job_id: str, stop_after: int | None = None,
                 last_event_id: str | None = None) -> tuple[list[int], list[str], str]:
    """``(steps, states, last event id)`` of one stream, to its end or ``stop_after``
    points."""
    steps: list[int] = []
    states: list[str] = []
    event, data, last_id = "message", "", last_event_id or ""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with client.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                last_id = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif line == "" and data:
                payload = json.loads(data)
                if event == "points":
                    steps += [p["step"] for p in payload]
                elif event == "state":
                    states.append(payload["state"])
                event, data = "message", ""
                if stop_after is not None and len(steps) >= stop_after:
                    break
    return steps, states, last_id


async def crowd(url: str, job_id: str) -> dict[str, Any]:
    """500 streams to the job's end, and one that drops after 30 points and reconnects."""
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    timeout = httpx.Timeout(30, read=300)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as many:
        streams = [asyncio.create_task(follow(many, job_id)) for _ in range(CLIENTS)]
        first, _, cut_at = await follow(many, job_id, stop_after=30)  # then it drops
        resumed = await follow(many, job_id, last_event_id=cut_at)
        results = await asyncio.gather(*streams)
    return {"results": results, "first": first, "resumed": resumed[0]}


def run_crowd(url: str, job_id: str, out: Any) -> None:
    """In a process of its own, so that parsing 500 streams does not slow the probe."""
    out.put(asyncio.run(crowd(url, job_id)))


def test_five_hundred_streams_share_one_poll_and_no_point_comes_twice(server: Server) -> None:
    job_id = server.http.post("/jobs", json=LONG).json()["id"]
    wait_job(server.http, job_id, {"running"})
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    followers = context.Process(target=run_crowd, args=(server.url, job_id, out))
    followers.start()
    wait_for(lambda: server.http.get("/healthz").json()["event_streams"] >= CLIENTS, 60,
             "the 500 streams to be open", 0.05)
    latencies = []
    for _ in range(40):  # 8 s of GET /jobs while the 500 streams run
        began = time.perf_counter()
        assert server.http.get("/jobs").status_code == 200
        latencies.append(time.perf_counter() - began)
        time.sleep(0.2)
    assert server.http.post(f"/jobs/{job_id}/cancel").status_code == 200
    outcome = out.get(timeout=300)
    followers.join(timeout=60)
    final = wait_job(server.http, job_id)
    assert final["state"] == "cancelled"
    # 115,000 steps asked: over the point budget, the curve keeps every 2nd step, each
    # epoch's last (every 23rd) and the first. Every stream has exactly what the store
    # kept, each point once, in order.
    assert final["curve_stride"] == 2
    stored = [p["step"] for p in server.http.get(f"/jobs/{job_id}/curve").json()["points"]]
    assert stored == sorted({1, *range(2, final["step"] + 1, 2),
                             *range(23, final["step"] + 1, 23)})
    for steps, states, _ in outcome["results"]:
        assert steps == stored
        assert states[-1] == "cancelled"
    print(f"\nGET /jobs among {CLIENTS} open streams: median {statistics.median(latencies):.3f}"
          f" s, slowest {max(latencies):.3f} s; {len(stored)} points streamed to each")
    # Every GET /jobs was answered meanwhile (above); how fast is printed, not asserted:
    # on a shared 2-core machine a timing bound in a test fails on the neighbours' load.
    assert outcome["first"] + outcome["resumed"] == stored  # the reconnect: no repeat
