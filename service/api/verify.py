"""``POST /verify``: are 1 and N workers bit-identical for this spec?"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import ValidationError

from common.errors import FieldError
from common.schemas import JobSpec, VerifyReport, VerifyRequest
from service.api.deps import RunnerDep, SchedulerDep, SettingsDep, Writer, require_token
from service.runner import GroupError

router = APIRouter(tags=["verify"], dependencies=[Depends(require_token)])


@router.post("/verify", responses={
    409: {"description": "the CPUs it needs are taken by jobs now; retry later"},
    422: {"description": "the spec cannot run here, or does not train (named)"}})
def verify(request: VerifyRequest, scheduler: SchedulerDep, jobs_runner: RunnerDep,
           settings: SettingsDep, caller: Writer) -> VerifyReport:
    """Train ``spec`` for ``steps`` steps with 1 worker and with ``workers`` workers, and
    compare the final weights: bit for bit (``deterministic: true`` promises it), or the
    largest difference. Runs now, outside the queue, on CPUs it reserves from the queue:
    when running jobs hold them, 409 at once rather than a request that waits."""
    if request.steps > settings.max_verify_steps:
        raise FieldError("steps", f"{request.steps} is over the limit of "
                         f"{settings.max_verify_steps} (SYNCSGD_MAX_VERIFY_STEPS)")
    limit = settings.max_workers_per_job
    if request.spec.max_workers > limit:  # unused here, but the spec is a job's: its limits hold
        raise FieldError("spec.workers", f"{request.spec.max_workers} is over the limit of "
                         f"{limit} (SYNCSGD_MAX_WORKERS_PER_JOB)")
    try:  # validated as a job with this many workers would be
        spec = JobSpec.model_validate({**request.spec.model_dump(), "workers": request.workers})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "workers"
        raise FieldError(f"spec.{field}", error["msg"]) from None
    try:
        # Its steps are bounded on their own (runs_epochs=False).
        scheduler.check(spec, runs_epochs=False, owner=None if caller.admin else caller.name)
    except FieldError as exc:
        raise exc.within("spec") from exc
    with scheduler.reserve(float(spec.max_workers * spec.cpus_per_worker),
                           f"workers: {spec.max_workers} x {spec.cpus_per_worker}"):
        try:
            return jobs_runner.verify(request.model_copy(update={"spec": spec}))
        except GroupError as exc:  # it diverged, or a rank failed: the spec's doing
            raise FieldError("spec", f"training failed: {exc}") from exc
