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


@router.post("/verify", responses={
    409: {"description": "the CPUs it needs are taken by jobs now; retry later"},
    422: {"description": "the spec cannot run here (named)"}})
async def verify(request: VerifyRequest, settings: SettingsDep,
                 scheduler: SchedulerDep) -> VerifyReport:
    """Train ``spec`` for ``steps`` steps with 1 worker and with ``workers`` workers, and
    compare the final weights: bit for bit (``deterministic: true`` promises it), or the
    largest difference. Runs now, outside the queue, on the cluster's free CPUs: when
    running jobs hold them, 409 at once rather than a request that waits for them."""
    spec = request.spec.model_copy(update={"workers": request.workers})
    try:
        scheduler.check(spec)
    except (SubmissionError, DataMismatchError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"type": "value_error", "loc": ["body", "spec", *exc.field.split(".")],
                              "msg": str(exc)}]) from exc
    need, free = spec.workers * spec.cpus_per_worker, scheduler.free_cpus()
    if need > free:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"workers: {spec.workers} x {spec.cpus_per_worker} CPU needed, "
                            f"{free:g} free now (running jobs hold the rest); retry later")
    return await run_in_threadpool(runner.verify, request, settings)
