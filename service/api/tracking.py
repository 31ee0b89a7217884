"""What a job's training leaves for other tools: every rank's step timings as a Chrome
trace (``/jobs/{id}/timeline``), and its TensorBoard event files (``/tensorboard``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from common.errors import FieldError
from service.api.deps import MAX_INDEX, JobDep, SettingsDep, StoreDep, require_read_token
from service.timeline import chrome_trace
from service.tracking.follower import Follower
from service.tracking.tensorboard_files import TensorBoardSink

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(require_read_token)])


@router.get("/{job_id}/timeline",
            responses={422: {"description": "a range over SYNCSGD_TIMELINE_MAX_STEPS"}})
def read_timeline(job: JobDep, store: StoreDep, settings: SettingsDep,
                  from_step: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None,
                  to_step: Annotated[int | None, Query(ge=1, le=MAX_INDEX)] = None
                  ) -> dict[str, Any]:
    """Chrome Trace Event JSON of steps ``from_step..to_step`` (default: the newest kept),
    one track per rank under its node: each step's compute, wait, all-reduce and update.
    Open it in https://ui.perfetto.dev or ``chrome://tracing``. A request covers at most
    ``SYNCSGD_TIMELINE_MAX_STEPS`` steps; a job keeps its last
    ``SYNCSGD_TIMELINE_KEEP_STEPS``."""
    most = settings.timeline_max_steps
    kept = store.span_steps(job.id)
    if from_step is None:
        last = to_step or (kept[1] if kept else 0)
        from_step = max(1, last - most + 1)
    if to_step is None:
        to_step = from_step + most - 1
    if to_step < from_step:
        raise FieldError("to_step", f"{to_step} is before from_step ({from_step})", "query")
    if to_step - from_step + 1 > most:
        raise FieldError("to_step", f"{to_step - from_step + 1} steps asked; a request "
                         f"covers at most {most} (SYNCSGD_TIMELINE_MAX_STEPS): page with "
                         "from_step", "query")
    return chrome_trace(store.spans(job.id, from_step, to_step), job.id)


@router.get("/{job_id}/tensorboard", response_class=Response,
            responses={200: {"content": {"application/gzip": {}}}})
def download_tensorboard(job: JobDep, request: Request) -> Response:
    """The job's TensorBoard event files as a .tar.gz (scalars per step: loss, lr,
    grad_norm; per epoch: val/loss, val/accuracy), caught up with the curve first. Or
    point ``tensorboard --logdir`` at ``<data dir>/tensorboard``."""
    follower: Follower = request.app.state.tensorboard
    follower.sync_now(job.id)
    sink: TensorBoardSink = follower.sink  # type: ignore[assignment]
    return Response(sink.tar(job.id), media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{job.id}-tensorboard.tar.gz"'})
