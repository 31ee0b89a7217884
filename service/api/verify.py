"""``POST /verify``: are 1 and N workers bit-identical for this spec?"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from common.data import DataMismatchError
from common.schemas import VerifyReport, VerifyRequest
from service import runner
from service.api.deps import SchedulerDep, SettingsDep, require_token
from service.scheduler import SubmissionError

router = APIRouter(tags=["verify"], dependencies=[Depends(require_token)])


@router.post("/verify", responses={422: {"description": "the spec cannot run here (named)"}})
async def verify(request: VerifyRequest, settings: SettingsDep,
                 scheduler: SchedulerDep) -> VerifyReport:
    """Train ``spec`` for ``steps`` steps with 1 worker and with ``workers`` workers, and
    compare the final weights: bit for bit (``deterministic: true`` promises it), or the
    largest difference. Runs now, outside the queue, on the cluster's free CPUs."""
    try:
        scheduler.check(request.spec.model_copy(update={"workers": request.workers}))
    except (SubmissionError, DataMismatchError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"type": "value_error", "loc": ["body", "spec", *exc.field.split(".")],
                              "msg": str(exc)}]) from exc
    return await run_in_threadpool(runner.verify, request, settings)
