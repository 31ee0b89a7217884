"""``/jobs/{job_id}/events``: follow a job live, as Server-Sent Events.

Its own router: the stream takes the token, or (for a browser's ``EventSource``, which
cannot send headers) a short-lived ticket the page asks for with the token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from common.schemas import JobState
from service.api.deps import (
    MAX_INDEX,
    HubDep,
    JobDep,
    TicketsDep,
    require_read_token,
    require_ticket_or_read_token,
    stream_capacity,
)

router = APIRouter(prefix="/jobs/{job_id}/events", tags=["jobs"])

KEEPALIVE_S = 15.0
EVENT_BATCH = 1000
#: What a stream's ``Last-Event-ID`` may be: a step number (the ids this stream sends).
EVENT_ID_PATTERN = r"^[0-9]{1,18}$"


class Ticket(BaseModel):
    ticket: str  # for ?ticket= of this job's event stream
    expires_in_s: int  # open the stream before then; ask again to reconnect later


@router.post("/ticket", dependencies=[Depends(require_read_token)])
def event_ticket(job: JobDep, tickets: TicketsDep) -> Ticket:
    """A signed ticket that opens this job's event stream for a short while, for clients
    that cannot send the token as a header (the dashboard's ``EventSource``)."""
    return Ticket(ticket=tickets.issue(job.id), expires_in_s=tickets.ttl_s)


def resume_cursor(
        since: Annotated[int | None, Query(ge=0, le=MAX_INDEX,
                                           description="resume after this step")] = None,
        last_event_id: Annotated[str | None, Header(
            json_schema_extra={"pattern": EVENT_ID_PATTERN})] = None) -> int:
    """The step an event stream resumes after: ``Last-Event-ID`` when a reconnecting client
    sends it (it wins over the ``?since`` the stream was opened with, or the client would
    get every point again), else ``?since``, else 0. Checked before the stream starts, so
    a malformed header is a 400, not a broken stream."""
    if last_event_id is None:
        return since or 0
    if not last_event_id.isdigit() or len(last_event_id) > 18:
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            "Last-Event-ID: expected a step number of 1 to 18 digits")
    return int(last_event_id)


#: The events that follow an entry of a job's log: event name -> the JobPublic field.
LOGGED_EVENTS = {"restart": "restart_log", "resize": "resize_log", "straggler": "stragglers"}


@router.get("", response_class=EventSourceResponse,
            responses={400: {"description": "a malformed Last-Event-ID"},
                       503: {"description": "every event stream slot is taken"}},
            dependencies=[Depends(require_ticket_or_read_token), Depends(stream_capacity)])
async def job_events(job: JobDep, hub: HubDep,
                     cursor: Annotated[int, Depends(resume_cursor)]
                     ) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: ``points`` (new curve points, id = last step), ``state``
    (the job, on every state change), ``restart`` (when its workers were replaced) and
    ``resize`` (an elastic job's world size changed) and ``straggler`` (a rank computes
    slower than the others, chunk after chunk), in order; the stream ends when the
    job ends. A late subscriber first gets what it missed (``Last-Event-ID`` or
    ``?since``). Every stream of a job shares one poll of
    the store (:mod:`service.event_hub`).
    """
    async with hub.follow(job.id) as watch:
        last_state: JobState | None = None
        sent = dict.fromkeys(LOGGED_EVENTS, 0)
        while True:
            # What the poller read together: the record, and whether every point is in.
            current, complete = watch.job, watch.complete
            while batch := await hub.points_after(watch, job.id, cursor, EVENT_BATCH):
                cursor, encoded = batch
                yield ServerSentEvent(event="points", id=str(cursor), raw_data=encoded)
            for event, field in LOGGED_EVENTS.items():
                for item in getattr(current, field)[sent[event]:]:
                    yield ServerSentEvent(event=event, id=str(cursor),
                                          data=item.model_dump(mode="json"))
                    sent[event] += 1
            if current.state != last_state:
                last_state = current.state
                yield ServerSentEvent(event="state", id=str(cursor),
                                      data=current.model_dump(mode="json"))
            if complete:
                return
            if not await watch.wait(KEEPALIVE_S, spread_s=hub.poll_s):
                yield ServerSentEvent(comment="keep-alive")
