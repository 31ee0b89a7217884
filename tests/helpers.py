"""One helper per test chore, for every tier: waiting, following a job, reading its event
stream. They take any ``httpx.Client`` with a base URL: a real server's, or FastAPI's
``TestClient`` of an in-process app (which is one)."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import numpy as np

T = TypeVar("T")
ENDED = frozenset({"succeeded", "failed", "cancelled"})


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str,
             interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval)


def wait_job(http: httpx.Client, job_id: str, states: frozenset[str] | set[str] = ENDED,
             timeout_s: float = 120) -> dict[str, Any]:
    """The job's record once its state is one of ``states`` (default: it has ended)."""
    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/jobs/{job_id}").json()
        return job if job["state"] in states else None

    return wait_for(reached, timeout_s, f"job {job_id} to reach {sorted(states)}", 0.1)


def assert_refused(http: httpx.Client, base: dict[str, Any],
                   cases: list[tuple[dict[str, Any], list[str | int], str]]) -> None:
    """Each ``(override, loc, message)``: ``base`` with ``override`` is a 422 whose detail
    names the field at ``loc`` with ``message`` in its text."""
    for override, loc, message in cases:
        response = http.post("/jobs", json={**base, **override})
        assert response.status_code == 422, (override, response.text)
        errors = response.json()["detail"]
        assert any(e["loc"] == loc and message in e["msg"] for e in errors), (override, errors)


def run_job(http: httpx.Client, spec: dict[str, Any], timeout_s: float = 120
            ) -> dict[str, Any]:
    """Submit ``spec`` and wait for the job to end; its final record."""
    response = http.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return wait_job(http, response.json()["id"], timeout_s=timeout_s)


def collect_events(http: httpx.Client, job_id: str, headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None) -> list[tuple[float, str, Any]]:
    """Read a job's SSE stream to its end: ``[(arrival time, event, data), ...]``."""
    events: list[tuple[float, str, Any]] = []
    with http.stream("GET", f"/jobs/{job_id}/events", headers=headers, params=params,
                     timeout=httpx.Timeout(10, read=120)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data = "message", ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif line == "" and data:
                events.append((time.monotonic(), event, json.loads(data)))
                event, data = "message", ""
    return events


def streamed_steps(events: list[tuple[float, str, Any]]) -> list[int]:
    """The steps of every ``points`` event, in arrival order."""
    return [p["step"] for _, event, data in events if event == "points" for p in data]


def curve_steps(http: httpx.Client, job_id: str) -> list[int]:
    """The steps of the job's whole curve, read page by page."""
    steps: list[int] = []
    while page := http.get(f"/jobs/{job_id}/curve",
                           params={"since": steps[-1] if steps else 0}).json()["points"]:
        steps += [p["step"] for p in page]
    return steps


def model_params(http: httpx.Client, job_id: str) -> bytes:
    """The bytes of a succeeded job's downloaded flat parameters."""
    response = http.get(f"/jobs/{job_id}/model")
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content), allow_pickle=False) as archive:
        return bytes(archive["params"].tobytes())


def npz(**arrays: Any) -> bytes:
    """An .npz file's bytes, as a user (or an attacker: object arrays are pickled by
    ``np.savez``'s default) would upload it."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def four_class_csv(rows: int = 300) -> bytes:
    """A CSV with a header, 5 feature columns and a label of 4 classes a small net learns."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)
    lines = [",".join(f"{v:.6f}" for v in row) + f",{label}"
             for row, label in zip(x, y, strict=True)]
    return ("a,b,c,d,e,label\n" + "\n".join(lines)).encode()


def npz_bomb(rows: int, features: int) -> bytes:
    """An .npz of a few KB whose headers declare ``x`` (rows, features) and ``y`` (rows,)
    float64: compressed zeros, a decompression bomb (its members end early)."""
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("x", (rows, features)), ("y", (rows,))):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, {
                    "descr": "<f8", "fortran_order": False, "shape": shape})
                member.write(b"\0" * (1 << 20))
    return bomb.getvalue()
