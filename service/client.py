"""A small HTTP client of the syncsgd API (what the CLI speaks)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse


class ApiError(RuntimeError):
    """The service answered with an error; the message is its own."""

    def __init__(self, status_code: int, detail: Any):
        self.status_code, self.detail = status_code, detail
        super().__init__(f"HTTP {status_code}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}"
                         for e in detail)
    return str(detail)


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get("/healthz"))
        return result

    def wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.health()
                return
            except (httpx.TransportError, ApiError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.post("/jobs", json=spec))
        return result

    def jobs(self, state: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        result: dict[str, Any] = self._json(self.http.get("/jobs", params=params))
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get(f"/jobs/{job_id}"))
        return result

    def curve(self, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = []
        while True:
            page = self._json(self.http.get(f"/jobs/{job_id}/curve", params={"since": since}))
            if not page["points"]:
                return points
            points += page["points"]
            since = points[-1]["step"]

    def predict(self, job_id: str, inputs: list[list[float]]) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.post(f"/jobs/{job_id}/predict",
                                                           json={"inputs": inputs}))
        return result

    def upload_dataset(self, path: Path, **params: Any) -> dict[str, Any]:
        """Upload a file as a dataset, streamed from disk; ``params``: name, format, task,
        label, header, dtype, wait (see ``POST /datasets``)."""
        with open(path, "rb") as body:
            response = self.http.post("/datasets", content=body, params=params,
                                      timeout=httpx.Timeout(30.0, write=None, read=None))
        result: dict[str, Any] = self._json(response)
        return result

    def register_dataset(self, registration: dict[str, Any], wait: bool = False
                         ) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.post(
            "/datasets/register", json=registration, params={"wait": wait},
            timeout=httpx.Timeout(30.0, read=None)))
        return result

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get(f"/datasets/{dataset_id}"))
        return result

    def datasets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(self.http.get("/datasets"))
        return result

    def model(self, job_id: str, path: Path, format: str = "npz") -> Path:
        """Download a succeeded job's model (``npz`` or ``onnx``) to ``path``."""
        response = self.http.get(f"/jobs/{job_id}/model", params={"format": format})
        if response.is_error:
            self._json(response)
        path.write_bytes(response.content)
        return path

    def verify(self, spec: dict[str, Any], workers: int, steps: int) -> dict[str, Any]:
        response = self.http.post("/verify", json={"spec": spec, "workers": workers,
                                                   "steps": steps}, timeout=900)
        result: dict[str, Any] = self._json(response)
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.post(f"/jobs/{job_id}/cancel"))
        return result

    def events(self, job_id: str, since: int = 0) -> Iterator[tuple[str, Any]]:
        """``(event, data)`` pairs from the job's SSE stream, until the job ends."""
        with connect_sse(self.http, "GET", f"/jobs/{job_id}/events", params={"since": since},
                         timeout=httpx.Timeout(30.0, read=None)) as source:
            if source.response.is_error:
                source.response.read()
                self._json(source.response)
            for event in source.iter_sse():
                if event.data:
                    yield event.event, json.loads(event.data)
