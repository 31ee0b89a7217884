"""``/jobs``: submit, list, inspect, cancel and delete training jobs; their curves,
models and predictions. Following a job live is :mod:`service.api.events`."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import FileResponse
from pydantic import Field

from common.errors import FieldError
from common.schemas import (
    MAX_INPUT_DIM,
    Curve,
    JobList,
    JobPublic,
    JobSpec,
    JobState,
    Prediction,
    StrictModel,
)
from service import quotas
from service.api.deps import (
    MAX_INDEX,
    AccountsDep,
    AuditDep,
    JobDep,
    ModelsDep,
    Reader,
    SchedulerDep,
    SettingsDep,
    StoreDep,
    Writer,
    require_read_token,
    require_token,
)
from service.errors import StateConflictError
from service.exports import curve_csv
from service.runner import Fault

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_read_token)])




@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(require_token)],
             responses={422: {"description": "an invalid field, or over a limit (named)"},
                        413: {"description": "the request body is over the size limit"},
                        429: {"description": "over one of the user's quotas (named)"}})
def submit_job(spec: JobSpec, scheduler: SchedulerDep, store: StoreDep, caller: Writer,
               accounts: AccountsDep, audit: AuditDep, response: Response) -> JobPublic:
    """Queue a training job; it runs when the cluster has the CPUs its workers need. Over
    one of the user's quotas: a 429 naming it."""
    user = accounts.get(caller.name)
    quotas.check_priority(caller, user, spec)
    job = scheduler.submit(spec, caller, functools.partial(quotas.check_job, user, store, spec))
    audit.record(caller.name, "submit", job.id)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job


@router.get("/defaults")
def job_defaults() -> JobSpec:
    """The job spec with every field at its default: a template for new jobs."""
    return JobSpec()


@router.get("")
def list_jobs(store: StoreDep, caller: Reader, state: JobState | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=MAX_INDEX)] = 0) -> JobList:
    """Jobs, newest first (a user's own; an admin's all); filter by ``state``, page with
    ``limit`` and ``offset``."""
    items, total = store.list_jobs(state, limit, offset,
                                   owner=None if caller.admin else caller.name)
    return JobList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{job_id}")
def read_job(job: JobDep) -> JobPublic:
    """State, spec, progress, latest losses, timing split, error and timestamps."""
    return job


@router.get("/{job_id}/curve", response_model=Curve,
            responses={200: {"content": {"text/csv": {}}}})
def read_curve(job: JobDep, store: StoreDep, settings: SettingsDep,
               since: Annotated[int, Query(ge=0, le=MAX_INDEX,
                                         description="only steps after this one")] = 0,
               limit: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
               format: Literal["json", "csv"] = "json") -> Curve | Response:
    """Every step's point (``?since=STEP`` for the increment); ``?format=csv`` for a table."""
    limit = min(limit or settings.max_curve_page, settings.max_curve_page)
    points = store.curve(job.id, since, limit)
    if format == "json":
        return Curve(job_id=job.id, points=points)
    return Response(curve_csv(points), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.csv"'})


class FaultRequest(StrictModel):
    """A drill: ``rank`` does ``action`` just before its step ``step``."""

    rank: int = Field(ge=0, le=1023)
    step: int = Field(ge=1, le=MAX_INDEX)
    action: Literal["kill", "raise", "hang", "slow"] = Field(
        default="kill", description="kill: SIGKILL of the rank's worker process; slow: from "
        "that step on, each of its steps computes `seconds` longer (a straggler)")
    seconds: float = Field(default=0.05, gt=0, le=60,
                           description="slow: the seconds added to each step's compute")


@router.post("/{job_id}/faults", status_code=status.HTTP_202_ACCEPTED,
             dependencies=[Depends(require_token)],
             responses={403: {"description": "fault injection is disabled"},
                        409: {"description": "the job has ended"}})
def inject_fault(job: JobDep, fault: FaultRequest, scheduler: SchedulerDep,
                 settings: SettingsDep) -> FaultRequest:
    """For operators' drills and tests, only with ``SYNCSGD_FAULT_INJECTION=true``: a real
    crash (SIGKILL) of one worker at a given step; the job should recover from it."""
    if not settings.fault_injection:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "fault injection is disabled "
                            "(set SYNCSGD_FAULT_INJECTION=true to allow drills)")
    seconds = fault.seconds if fault.action == "slow" else 0.0
    scheduler.inject_fault(job.id, Fault(fault.rank, fault.step, fault.action, seconds))
    return fault


@router.post("/{job_id}/cancel", dependencies=[Depends(require_token)],
             responses={409: {"description": "the job has already ended"}})
def cancel_job(job: JobDep, scheduler: SchedulerDep, caller: Writer, audit: AuditDep
               ) -> JobPublic:
    """Stop a job: its workers stop between chunks and free their CPUs (state ``cancelled``)."""
    cancelled = scheduler.cancel(job.id)
    audit.record(caller.name, "cancel", job.id)
    return cancelled


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[Depends(require_token)],
               responses={409: {"description": "the job is still queued or running"}})
def delete_job(job: JobDep, scheduler: SchedulerDep, models: ModelsDep, caller: Writer,
               audit: AuditDep) -> Response:
    """Forget a finished job: its record, curve and weights."""
    scheduler.delete(job.id)
    models.forget(job.id)
    audit.record(caller.name, "delete", job.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class PredictRequest(StrictModel):
    inputs: list[Annotated[list[float], Field(min_length=1, max_length=MAX_INPUT_DIM)]] = Field(
        min_length=1, max_length=10_000, description="rows of the job's input_dim numbers")


@router.post("/{job_id}/predict", dependencies=[Depends(require_read_token)],
             responses={409: {"description": "the job has not succeeded"},
                        422: {"description": "inputs of the wrong shape (named)"}})
def predict(job: JobDep, request: PredictRequest, models: ModelsDep) -> Prediction:
    """Run the trained model of a succeeded job on ``inputs``."""
    if job.state != JobState.succeeded:
        raise StateConflictError(f"job {job.id} is {job.state.value}: it predicts once it "
                                 "succeeded")
    widths = {len(row) for row in request.inputs}
    if len(widths) != 1:
        raise FieldError("inputs", f"rows must all have {job.spec.model.input_dim} "
                         f"numbers; got rows of {sorted(widths)}")
    try:
        outputs, net = models.predict(job.id, np.asarray(request.inputs))
    except ValueError as exc:
        raise FieldError("inputs", str(exc).replace("x: ", "", 1)) from exc
    if not np.isfinite(outputs).all():  # JSON has no inf: say so rather than send nulls
        raise FieldError("inputs", "the model's outputs overflow for these inputs; are they "
                         "in the units the model was trained on?")
    classes = net.class_names(outputs) if net.classifies else None
    return Prediction(outputs=outputs.tolist(), classes=classes)


@router.get("/{job_id}/model", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}},
                       409: {"description": "the job has not succeeded"}})
def download_model(job: JobDep, settings: SettingsDep, models: ModelsDep,
                   format: Annotated[Literal["npz", "onnx"], Query(description=(
                       "npz: for common.nn.Network.load; onnx: for standard runtimes"))]
                   = "npz") -> Response:
    """The trained model with its preprocessing: an .npz loadable with
    ``common.nn.Network.load``, or an ONNX graph that takes raw rows."""
    path = settings.model_path(job.id)
    if job.state != JobState.succeeded or not path.exists():
        raise StateConflictError(f"job {job.id} is {job.state.value}: weights exist once it "
                                 "succeeded")
    if format == "npz":
        return FileResponse(path, media_type="application/octet-stream",
                            filename=f"{job.name}-{job.id}.npz")
    onnx_bytes = models.onnx(job.id, job.name)
    return Response(onnx_bytes, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{job.id}.onnx"'})
