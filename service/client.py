"""The Python client of the syncsgd API, typed with the API's own models.

    from service.client import Client

    with Client("http://127.0.0.1:8000", token=None) as client:
        job = client.submit({"workers": 2, "epochs": 5})
        for event in client.follow(job.id):
            if isinstance(event, PointsEvent):
                print(event.points[-1].step, event.points[-1].loss)
        client.model(job.id, Path("model.npz"))

Every method returns the pydantic models of :mod:`common.schemas` (a job is a
:class:`JobPublic`, a curve a list of :class:`StepRecord`), and every refusal raises
:class:`ApiError` with the HTTP status and, for a 422, the field it names. The CLI
speaks to the service through this client only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from httpx_sse import connect_sse
from pydantic import BaseModel, TypeAdapter

from common.records import StepRecord
from common.schemas import (
    Curve,
    DatasetPublic,
    DatasetRegistration,
    Health,
    JobList,
    JobPublic,
    JobSpec,
    Prediction,
    ResizeInfo,
    RestartInfo,
    StragglerInfo,
    VerifyReport,
)

if TYPE_CHECKING:
    import pandas as pd

Model = TypeVar("Model", bound=BaseModel)


class ApiError(RuntimeError):
    """The service refused a request: ``status_code``, its ``detail``, and for a 422 the
    ``field`` it names (dotted: ``workers.max``, ``tracking.mlflow``) and where it was
    (``body``, ``query``)."""

    def __init__(self, status_code: int, detail: Any):
        self.status_code, self.detail = status_code, detail
        self.field: str | None = None
        self.location: str | None = None
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = [str(part) for part in detail[0].get("loc", [])]
            self.location = loc[0] if loc else None
            self.field = ".".join(loc[1:]) or None
        super().__init__(f"HTTP {status_code}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors
        return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}"
                         for e in detail)
    return str(detail)


# ---- what follow() yields ------------------------------------------------------------------


@dataclass(frozen=True)
class PointsEvent:
    """New points of the curve (``cursor``: the last one's step)."""

    points: list[StepRecord]
    cursor: int


@dataclass(frozen=True)
class StateEvent:
    """The job, on each change of its state (the last event of a stream)."""

    job: JobPublic


@dataclass(frozen=True)
class RestartEvent:
    restart: RestartInfo


@dataclass(frozen=True)
class ResizeEvent:
    resize: ResizeInfo


@dataclass(frozen=True)
class StragglerEvent:
    straggler: StragglerInfo


JobEvent = PointsEvent | StateEvent | RestartEvent | ResizeEvent | StragglerEvent
_POINTS = TypeAdapter(list[StepRecord])


def _event(name: str, data: Any, cursor: int) -> JobEvent | None:
    if name == "points":
        return PointsEvent(_POINTS.validate_python(data), cursor)
    if name == "state":
        return StateEvent(JobPublic.model_validate(data))
    if name == "restart":
        return RestartEvent(RestartInfo.model_validate(data))
    if name == "resize":
        return ResizeEvent(ResizeInfo.model_validate(data))
    if name == "straggler":
        return StragglerEvent(StragglerInfo.model_validate(data))
    return None  # an event of a newer service: skipped


class Client:
    """A client of one service at ``url``, with ``token`` where it asks for one."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---- the service ---------------------------------------------------------------------

    def health(self) -> Health:
        """``/healthz``; a degraded service (503) raises :class:`ApiError`."""
        return self._model(Health, self.http.get("/healthz"))

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

    # ---- jobs ----------------------------------------------------------------------------

    def submit(self, spec: JobSpec | dict[str, Any]) -> JobPublic:
        """Queue a job (a dict: only its fields, the service's defaults for the rest)."""
        return self._model(JobPublic, self.http.post("/jobs", json=_body(spec)))

    def defaults(self) -> JobSpec:
        return self._model(JobSpec, self.http.get("/jobs/defaults"))

    def jobs(self, state: str | None = None, limit: int = 50, offset: int = 0) -> JobList:
        """A page of jobs, newest first (``state``: only those)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._model(JobList, self.http.get("/jobs", params=params))

    def job(self, job_id: str) -> JobPublic:
        return self._model(JobPublic, self.http.get(f"/jobs/{job_id}"))

    def wait(self, job_id: str, timeout_s: float = 3600, poll_s: float = 0.5) -> JobPublic:
        """The job once it has ended (or, after ``timeout_s``, as it is then)."""
        deadline = time.monotonic() + timeout_s
        while not (job := self.job(job_id)).state.terminal and time.monotonic() < deadline:
            time.sleep(poll_s)
        return job

    def follow(self, job_id: str, since: int = 0) -> Iterator[JobEvent]:
        """The job's events as they happen, from step ``since`` on, until it ends."""
        with connect_sse(self.http, "GET", f"/jobs/{job_id}/events", params={"since": since},
                         timeout=httpx.Timeout(30.0, read=None)) as source:
            if source.response.is_error:
                source.response.read()
                self._check(source.response)
            for sse in source.iter_sse():
                if sse.data and (event := _event(sse.event, json.loads(sse.data),
                                                 int(sse.id or 0))) is not None:
                    yield event

    def curve(self, job_id: str, since: int = 0) -> list[StepRecord]:
        """Every point after step ``since``, read page by page."""
        points: list[StepRecord] = []
        while page := self._model(Curve, self.http.get(
                f"/jobs/{job_id}/curve", params={"since": since})).points:
            points += page
            since = points[-1].step
        return points

    def curve_frame(self, job_id: str) -> pd.DataFrame:
        """The curve as a pandas DataFrame indexed by step (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("curve_frame needs pandas (pip install pandas); "
                              "curve() returns the same points as records") from exc
        frame = pd.DataFrame([p.to_dict() for p in self.curve(job_id)])
        return frame.set_index("step") if not frame.empty else frame

    def timeline(self, job_id: str, from_step: int | None = None,
                 to_step: int | None = None) -> dict[str, Any]:
        """Every rank's step timings as Chrome Trace Event JSON (save it, open it in
        Perfetto)."""
        params = {k: v for k, v in (("from_step", from_step), ("to_step", to_step))
                  if v is not None}
        trace: dict[str, Any] = self._check(self.http.get(f"/jobs/{job_id}/timeline",
                                                           params=params)).json()
        return trace

    def tensorboard(self, job_id: str, path: Path) -> Path:
        """The job's TensorBoard event files, as a .tar.gz written to ``path``."""
        path.write_bytes(self._check(self.http.get(f"/jobs/{job_id}/tensorboard")).content)
        return path

    def model(self, job_id: str, path: Path, format: Literal["npz", "onnx"] = "npz") -> Path:
        """Download a succeeded job's model (``npz`` or ``onnx``) to ``path``."""
        response = self.http.get(f"/jobs/{job_id}/model", params={"format": format})
        path.write_bytes(self._check(response).content)
        return path

    def predict(self, job_id: str, rows: list[list[float]]) -> Prediction:
        return self._model(Prediction, self.http.post(f"/jobs/{job_id}/predict",
                                                      json={"inputs": rows}))

    def cancel(self, job_id: str) -> JobPublic:
        return self._model(JobPublic, self.http.post(f"/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> None:
        """Forget an ended job: its record, curve, timings and weights."""
        self._check(self.http.delete(f"/jobs/{job_id}"))

    def verify(self, spec: JobSpec | dict[str, Any], workers: int, steps: int
               ) -> VerifyReport:
        """Train ``spec`` for ``steps`` steps with 1 and with ``workers`` workers: are the
        weights the same?"""
        request = {"spec": _body(spec), "workers": workers, "steps": steps}
        return self._model(VerifyReport, self.http.post("/verify", json=request, timeout=900))

    # ---- datasets ------------------------------------------------------------------------

    def upload_dataset(self, path: Path, **params: Any) -> DatasetPublic:
        """Upload a file as a dataset, streamed from disk; ``params``: name, format, task,
        label, header, dtype, wait (see ``POST /datasets``)."""
        with open(path, "rb") as body:
            response = self.http.post("/datasets", content=body, params=params,
                                      timeout=httpx.Timeout(30.0, write=None, read=None))
        return self._model(DatasetPublic, response)

    def register_dataset(self, registration: DatasetRegistration | dict[str, Any],
                         wait: bool = False) -> DatasetPublic:
        """A file already under the service's ``SYNCSGD_DATASETS_ROOT``, ingested in place."""
        return self._model(DatasetPublic, self.http.post(
            "/datasets/register", json=_body(registration), params={"wait": wait},
            timeout=httpx.Timeout(30.0, read=None)))

    def dataset(self, dataset_id: str) -> DatasetPublic:
        return self._model(DatasetPublic, self.http.get(f"/datasets/{dataset_id}"))

    def datasets(self) -> list[DatasetPublic]:
        return TypeAdapter(list[DatasetPublic]).validate_python(
            self._check(self.http.get("/datasets")).json())

    def delete_dataset(self, dataset_id: str) -> None:
        self._check(self.http.delete(f"/datasets/{dataset_id}"))

    # ---- answers -------------------------------------------------------------------------

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response

    def _model(self, model: type[Model], response: httpx.Response) -> Model:
        return model.model_validate_json(self._check(response).content)


def _body(value: BaseModel | dict[str, Any]) -> Any:
    """A request body: a model as the JSON it validates from, a dict as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return value
