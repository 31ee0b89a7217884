"""Each user's quotas (:class:`service.accounts.User`): the CPUs its queued and running jobs
ask at once, its queued jobs, and its datasets' bytes. Over one, a request gets a 429
that names the quota and the figures. The admin has none, and a user's jobs and
datasets are read only for the quotas it has. Priority ``high`` is for the admin and
the users allowed it (a 422 on ``priority`` for the others)."""

from __future__ import annotations

from common.errors import FieldError
from common.schemas import DatasetState, JobSpec, JobState
from service.accounts import Principal, User
from service.errors import UserQuotaError
from service.store import SqliteJobStore

#: The most of a user's jobs a check reads (a quota is far below it).
MOST_JOBS = 10_000


def cpus_of(spec: JobSpec) -> float:
    return float(spec.max_workers * spec.cpus_per_worker)


def check_job(user: User | None, store: SqliteJobStore, spec: JobSpec) -> None:
    """May ``user`` queue ``spec`` beside its queued and running jobs?"""
    if user is None or (user.max_queued_jobs is None and user.max_cpus is None):
        return
    queued = store.list_jobs(JobState.queued, MOST_JOBS, owner=user.name)[0]
    if user.max_queued_jobs is not None and len(queued) >= user.max_queued_jobs:
        raise UserQuotaError(f"quota max_queued_jobs of user {user.name}: {len(queued)} "
                             f"queued of {user.max_queued_jobs}")
    if user.max_cpus is None:
        return
    running = store.list_jobs(JobState.running, MOST_JOBS, owner=user.name)[0]
    held, need = sum(cpus_of(j.spec) for j in [*queued, *running]), cpus_of(spec)
    if held + need > user.max_cpus:
        raise UserQuotaError(f"quota max_cpus of user {user.name}: this job asks {need:g} "
                             f"CPUs and the queued and running ones {held:g}, over "
                             f"{user.max_cpus:g}")


def check_priority(caller: Principal, user: User | None, spec: JobSpec) -> None:
    """May ``caller`` submit at ``spec.priority``?"""
    if spec.priority != "high" or caller.admin or (user is not None and user.may_use_high):
        return
    raise FieldError("priority", f"user {caller.name} may not submit priority high (an "
                     "operator allows it: syncsgd users add --may-use-high); low and normal "
                     "are open to all")


def check_dataset(user: User | None, store: SqliteJobStore, more: int) -> None:
    """May ``user`` add a dataset of ``more`` bytes?"""
    if user is None or user.max_dataset_bytes is None:
        return
    used = sum(d.bytes for d in store.list_datasets()
               if d.owner == user.name and d.state != DatasetState.failed)
    left = user.max_dataset_bytes - used
    if more > left:
        raise UserQuotaError(f"quota max_dataset_bytes of user {user.name}: {more} more "
                             f"bytes, {left} left of {user.max_dataset_bytes}")
