"""Typed dependencies shared by the routers: the store, the scheduler, auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from common.schemas import JobPublic
from service.config import Settings
from service.datasets import DatasetCatalog
from service.event_hub import EventHub
from service.models import ModelCache
from service.runner import Runner
from service.scheduler import Scheduler
from service.store import SqliteJobStore
from service.supervisor import Supervisor
from service.tickets import Tickets

#: The schemes name what a route asks, so the OpenAPI document can state it as configured
#: (:mod:`service.api.openapi`): the token for a change, for a read, optionally, a ticket.
WRITE_SCHEME, READ_SCHEME, OPTIONAL_SCHEME, TICKET_SCHEME = (
    "token", "readToken", "optionalToken", "ticket")
_write_bearer = HTTPBearer(scheme_name=WRITE_SCHEME, auto_error=False)
_read_bearer = HTTPBearer(scheme_name=READ_SCHEME, auto_error=False)
_optional_bearer = HTTPBearer(scheme_name=OPTIONAL_SCHEME, auto_error=False)
_ticket = APIKeyQuery(name="ticket", scheme_name=TICKET_SCHEME, auto_error=False)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> SqliteJobStore:
    store: SqliteJobStore = request.app.state.store
    return store


def get_models(request: Request) -> ModelCache:
    models: ModelCache = request.app.state.models
    return models


def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


def get_catalog(request: Request) -> DatasetCatalog:
    catalog: DatasetCatalog = request.app.state.catalog
    return catalog


def get_hub(request: Request) -> EventHub:
    hub: EventHub = request.app.state.hub
    return hub


def get_tickets(request: Request) -> Tickets:
    tickets: Tickets = request.app.state.tickets
    return tickets


def get_runner(request: Request) -> Runner:
    jobs_runner: Runner = request.app.state.runner
    return jobs_runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[SqliteJobStore, Depends(get_store)]
SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
ModelsDep = Annotated[ModelCache, Depends(get_models)]
def get_supervisor(request: Request) -> Supervisor:
    supervisor: Supervisor = request.app.state.supervisor
    return supervisor


RunnerDep = Annotated[Runner, Depends(get_runner)]
SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]
CatalogDep = Annotated[DatasetCatalog, Depends(get_catalog)]
HubDep = Annotated[EventHub, Depends(get_hub)]
TicketsDep = Annotated[Tickets, Depends(get_tickets)]

#: Steps and offsets are SQLite INTEGERs; bounded well inside the integers a JSON number
#: (a float64) holds exactly, so that clients and validators agree on the bound.
MAX_INDEX = 10**15


def get_job(job_id: str, store: StoreDep) -> JobPublic:
    """The job of the path (404 when there is none)."""
    return store.get(job_id)


JobDep = Annotated[JobPublic, Depends(get_job)]


def stream_capacity(hub: HubDep) -> None:
    """A 503 before an event stream starts when every slot is taken."""
    hub.check_capacity()


WriteCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_write_bearer)]
ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]
#: For an open route that answers more with the token (``/healthz``).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)]


def authorized(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Does the request carry the service's token (or does the service have none)?"""
    if settings.token is None:
        return True
    expected = settings.token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials is not None else b""
    return secrets.compare_digest(given, expected)


def _check(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if not authorized(settings, credentials):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing or wrong token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})


def require_token(settings: SettingsDep, credentials: WriteCredentials) -> None:
    """For every request that changes something."""
    _check(settings, credentials)


def require_read_token(settings: SettingsDep, credentials: ReadCredentials) -> None:
    """For reads, when ``SYNCSGD_AUTH_READS`` is set or the service listens beyond loopback."""
    if settings.reads_need_token:
        _check(settings, credentials)


def require_ticket_or_read_token(job_id: str, settings: SettingsDep,
                                 credentials: ReadCredentials,
                                 tickets: TicketsDep,
                                 ticket: Annotated[str | None, Depends(_ticket)]) -> None:
    """For an event stream: the token, or a ticket for this job (:mod:`service.tickets`)."""
    if settings.reads_need_token and not (ticket and tickets.admits(ticket, job_id)):
        _check(settings, credentials)
