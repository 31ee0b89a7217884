"""Which queued job starts next, and what a job of higher priority takes from running ones.

**Order.** The highest priority first. Among the jobs of one priority, fair share: the
next is the oldest job of the owner who holds the fewest CPUs per unit of share (a
user's ``share``, 1 unless ``syncsgd users add --share`` says otherwise); ties go to the
older job. Within one owner, submission order always holds. With one owner (a service
without accounts) this is first in, first out within each priority.

**Preemption.** When the next job does not fit, running jobs of lower priority give CPUs
back at their next chunk's end: elastic ones shrink to their ``min`` first; when that is
not enough, whole jobs stop, the lowest priority and, among equals, the latest started
first. A stopped job goes back to the queue with its state at that chunk, and resumes
from it exactly (no step is lost or run twice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.accounts import ADMIN
from service.store import QueuedJob


def owner_of(owner: str | None) -> str:
    """A job's owner for fair share (jobs from before accounts are the admin's)."""
    return owner or ADMIN.name


def next_job(queued: Sequence[QueuedJob], held: Mapping[str, float],
             shares: Mapping[str, float]) -> QueuedJob | None:
    """The job to start next of ``queued`` (in submission order), given the CPUs each
    owner's running jobs ``held`` and the owners' ``shares`` (1 when not named)."""
    if not queued:
        return None
    top = max(job.priority for job in queued)
    heads: dict[str, QueuedJob] = {}
    for job in queued:  # each owner's oldest job at the top priority
        if job.priority == top:
            heads.setdefault(owner_of(job.owner), job)

    def usage(owner: str) -> float:
        return held.get(owner, 0.0) / max(shares.get(owner, 1.0), 1e-9)

    # ``heads`` keeps submission order, and min() takes the first of equals: the older job.
    return min(heads.values(), key=lambda job: usage(owner_of(job.owner)))


@dataclass(frozen=True)
class Holder:
    """A running job that preemption may take CPUs from."""

    id: str
    priority: int  # common.schemas.PRIORITY_RANK
    cpus: float  # what it will hold (after a shrink already asked of it)
    shrinkable: float  # what shrinking it to its min gives back (0: fixed size, or at min)
    started: int  # the order the jobs started in


@dataclass(frozen=True)
class Preemption:
    """Jobs to shrink to their min, and jobs to stop, at their next chunk's end."""

    shrink: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()


def plan_preemption(priority: int, deficit: float, need_slot: bool,
                    holders: Sequence[Holder]) -> Preemption | None:
    """What to take from ``holders`` of lower priority than ``priority`` so that
    ``deficit`` more CPUs come free (and, ``need_slot``, one job's place among the
    ``max_concurrent_jobs``); None when all of them together cannot give that."""
    victims = sorted((h for h in holders if h.priority < priority),
                     key=lambda h: (h.priority, -h.started))
    left = deficit - _freed(victims, [])  # after shrinking every one
    stop: list[Holder] = []
    for holder in victims:
        if left <= 0 and (stop or not need_slot):
            break
        stop.append(holder)
        left -= holder.cpus - holder.shrinkable
    if left > 0 or (need_slot and not stop):
        return None
    for holder in reversed(stop[:]):  # one that may shrink instead, when the rest will do
        if len(stop) > 1 or not need_slot:
            rest = [h for h in stop if h is not holder]
            if _freed(victims, rest) >= deficit:
                stop = rest
    # Of the rest, shrink only as many as the CPUs still missing need.
    left = deficit - sum(h.cpus for h in stop)
    shrink: list[Holder] = []
    for holder in victims:
        if left <= 0:
            break
        if holder not in stop and holder.shrinkable > 0:
            shrink.append(holder)
            left -= holder.shrinkable
    return Preemption(tuple(h.id for h in shrink), tuple(h.id for h in stop))


def _freed(victims: Sequence[Holder], stop: Sequence[Holder]) -> float:
    """The CPUs that stopping ``stop`` and shrinking every other victim give back."""
    return sum(h.cpus if h in stop else h.shrinkable for h in victims)
