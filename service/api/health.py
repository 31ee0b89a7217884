"""``/healthz``: is the service up, and what does it have to work with."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from common.schemas import Health
from service.api.deps import (
    AccountsDep,
    Caller,
    Credentials,
    HubDep,
    SchedulerDep,
    SettingsDep,
    StoreDep,
    SupervisorDep,
    reads_need_token,
)

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {
    "model": Health, "description": "degraded: Ray was lost and is being brought back (the "
    "running jobs are requeued), or the queue cannot start jobs"}})
def healthz(store: StoreDep, scheduler: SchedulerDep, supervisor: SupervisorDep, hub: HubDep,
            settings: SettingsDep, accounts: AccountsDep, caller: Caller,
            credentials: Credentials, response: Response) -> Health:
    """Liveness, and the CPUs the service has (as its Ray supervisor last saw them, so this
    never waits on a Ray that does not answer); public, so that a load balancer or compose
    can ask it. Job ids and counts only with the token where reads need one; a user's
    own."""
    total, free = supervisor.cpus
    health = Health(status="ok", cluster_cpus=total, free_cpus=free)
    if (problem := supervisor.outage or scheduler.problem) is not None:
        health.status, health.problem = "degraded", problem
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    if caller is None and reads_need_token(settings, accounts):
        return health
    owner = None if caller is None or caller.admin else caller.name
    health.running = [j for j in scheduler.running_ids()
                      if owner is None or store.get(j).owner == owner]
    health.jobs = store.count_by_state(owner)
    if owner is None:
        health.event_streams = hub.streams
    return health
