"""``/healthz``: is the service up, and what does it have to work with."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.deps import RunnerDep, SchedulerDep, StoreDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    cluster_cpus: float  # in the Ray cluster
    free_cpus: float  # not reserved by any placement group or actor, as Ray counts them
    running: list[str]  # job ids
    jobs: dict[str, int]  # count by state


@router.get("/healthz")
def healthz(store: StoreDep, scheduler: SchedulerDep, jobs_runner: RunnerDep) -> Health:
    """Liveness, and the CPUs and jobs the service has."""
    total, free = jobs_runner.cluster_cpus()
    return Health(status="ok", cluster_cpus=total, free_cpus=free,
                  running=scheduler.running_ids(), jobs=store.count_by_state())
