"""Typed dependencies shared by the routers: the store, the scheduler, auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from common.schemas import DatasetPublic, JobPublic
from service.accounts import ADMIN, Accounts, Principal
from service.audit import AuditLog
from service.config import Settings
from service.datasets import DatasetCatalog
from service.errors import DatasetNotFoundError, JobNotFoundError
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


def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


def get_audit(request: Request) -> AuditLog:
    audit: AuditLog = request.app.state.audit
    return audit


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
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
AuditDep = Annotated[AuditLog, Depends(get_audit)]

#: Steps and offsets are SQLite INTEGERs; bounded well inside the integers a JSON number
#: (a float64) holds exactly, so that clients and validators agree on the bound.
MAX_INDEX = 10**15


def get_caller(request: Request, settings: SettingsDep, accounts: AccountsDep
               ) -> Principal | None:
    """Who makes the request (:func:`identify`). A dependency, so that FastAPI asks it
    once per request: the route's auth and the owner check of its id share the answer."""
    return identify(settings, accounts, _bearer(request))


Caller = Annotated[Principal | None, Depends(get_caller)]


def get_job(job_id: str, store: StoreDep, caller: Caller) -> JobPublic:
    """The job of the path: 404 when there is none, or when it is another user's (so that
    ids do not leak). A request without a principal is the route's auth's to refuse (an
    event stream's ticket was issued for this job to one who could read it)."""
    job = store.get(job_id)
    if caller is not None and not caller.sees(job.owner):
        raise JobNotFoundError(job_id)
    return job


def get_dataset(dataset_id: str, store: StoreDep, caller: Caller) -> DatasetPublic:
    """The dataset of the path: 404 when there is none, or when it is another user's."""
    dataset = store.get_dataset(dataset_id)
    if caller is not None and not caller.sees(dataset.owner):
        raise DatasetNotFoundError(dataset_id)
    return dataset


JobDep = Annotated[JobPublic, Depends(get_job)]
DatasetDep = Annotated[DatasetPublic, Depends(get_dataset)]


def stream_capacity(hub: HubDep) -> None:
    """A 503 before an event stream starts when every slot is taken."""
    hub.check_capacity()


WriteCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_write_bearer)]
ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]
#: For an open route that answers more with the token (``/healthz``).
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)]


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def identify(settings: Settings, accounts: Accounts, token: str | None) -> Principal | None:
    """Who ``token`` belongs to: the admin (``SYNCSGD_TOKEN``), a user, or, on a service
    without auth, the admin; None for a missing or wrong token where auth is on."""
    if token is not None:
        if settings.token is not None and secrets.compare_digest(
                token.encode(), settings.token.get_secret_value().encode()):
            return ADMIN
        if (user := accounts.authenticate(token)) is not None:
            return user
    if settings.token is None and not accounts.exist():
        return ADMIN
    return None


def reads_need_token(settings: Settings, accounts: Accounts) -> bool:
    """As the settings say; and always once there are accounts (what one sees is one's
    own)."""
    return settings.reads_need_token or accounts.exist()


def _check(caller: Principal | None) -> Principal:
    if caller is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "missing or wrong token: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return caller


# ``credentials`` below are read through ``Caller``; they are parameters for the OpenAPI
# document, whose security schemes are named by them (service.api.openapi).


def require_token(caller: Caller, credentials: WriteCredentials) -> Principal:
    """For every request that changes something: who makes it."""
    return _check(caller)


def require_read_token(settings: SettingsDep, accounts: AccountsDep, caller: Caller,
                       credentials: ReadCredentials) -> Principal:
    """For reads: the token when ``SYNCSGD_AUTH_READS`` is set, the service listens beyond
    loopback, or there are accounts. Who reads (the admin on an open service)."""
    if reads_need_token(settings, accounts):
        return _check(caller)
    return caller or ADMIN


def require_admin_read(caller: Annotated[Principal, Depends(require_read_token)]) -> None:
    """For what shows every user's jobs (``/metrics``): the admin only, once there are
    accounts (on an open service everyone reads as the admin)."""
    if not caller.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this shows every user's jobs: it "
                            "needs an admin's token (SYNCSGD_TOKEN, or a user added with "
                            "--admin)")


Writer = Annotated[Principal, Depends(require_token)]
Reader = Annotated[Principal, Depends(require_read_token)]


def require_ticket_or_read_token(job_id: str, settings: SettingsDep, accounts: AccountsDep,
                                 caller: Caller, credentials: ReadCredentials,
                                 tickets: TicketsDep,
                                 ticket: Annotated[str | None, Depends(_ticket)]) -> None:
    """For an event stream: the token, or a ticket for this job (:mod:`service.tickets`)."""
    if reads_need_token(settings, accounts) and not (ticket and tickets.admits(ticket, job_id)):
        _check(caller)
