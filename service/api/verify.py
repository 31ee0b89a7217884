"""``POST /verify``: are 1 and N workers bit-identical for this spec?"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from common.errors import FieldError
from common.schemas import VerifyReport, VerifyRequest
from service.api.deps import RunnerDep, SchedulerDep, require_token
from service.errors import StateConflictError

router = APIRouter(tags=["verify"], dependencies=[Depends(require_token)])


@router.post("/verify", responses={
    409: {"description": "the CPUs it needs are taken by jobs now; retry later"},
    422: {"description": "the spec cannot run here (named)"}})
def verify(request: VerifyRequest, scheduler: SchedulerDep,
           jobs_runner: RunnerDep) -> VerifyReport:
    """Train ``spec`` for ``steps`` steps with 1 worker and with ``workers`` workers, and
    compare the final weights: bit for bit (``deterministic: true`` promises it), or the
    largest difference. Runs now, outside the queue, on the cluster's free CPUs: when
    running jobs hold them, 409 at once rather than a request that waits for them."""
    spec = request.spec.model_copy(update={"workers": request.workers})
    try:
        scheduler.check(spec)
    except FieldError as exc:
        raise exc.within("spec") from exc
    need, free = spec.workers * spec.cpus_per_worker, scheduler.free_cpus()
    if need > free:
        raise StateConflictError(f"workers: {spec.workers} x {spec.cpus_per_worker} CPU needed, "
                                 f"{free:g} free now (running jobs hold the rest); retry later")
    return jobs_runner.verify(request)
